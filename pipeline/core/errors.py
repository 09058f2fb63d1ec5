"""One error type for bad input or params, and the wrapper every command's main() runs under."""

from __future__ import annotations

import argparse
import contextlib
import functools
import inspect
import os
import signal
import sys
from collections.abc import Callable, Iterator
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # the shell's code for a process ended by SIGINT
EXIT_BROKEN_PIPE = 141  # the shell's code for a process ended by SIGPIPE, as `yes | head` gives
EXIT_TERMINATED = 143  # the shell's code for a process ended by SIGTERM


class PipelineError(Exception):
    """Bad input, bad params or an unusable environment: the message is shown to the user as is.

    Messages are one line and name the file (or params key), the clip or field, and what was
    expected versus found, so a user can fix the input without reading a traceback.
    """


def fail(where: str, message: str) -> PipelineError:
    """Build a PipelineError whose text starts with the place it concerns (a file, key or clip).

    Line breaks (from a library's exception text, say) become spaces: messages are one line.
    """
    return PipelineError(" ".join(f"{where}: {message}".splitlines()))


@contextlib.contextmanager
def opening(path: object, missing: str, folder: str, unreadable: str) -> Iterator[None]:
    """Opening a file a user put in place: a missing file, a folder in its place or any other
    failure to read it ends in one line naming the file, with these messages."""
    try:
        yield
    except FileNotFoundError:
        raise fail(str(path), missing) from None
    except IsADirectoryError:
        raise fail(str(path), folder) from None
    except OSError as exc:
        raise fail(str(path), f"{unreadable} ({exc.strerror or exc})") from None


class Terminated(KeyboardInterrupt):
    """SIGTERM (what `kill`, `timeout`, CI runners and schedulers send), handled as Ctrl-C is:
    every `except KeyboardInterrupt` cleanup runs; the exit code is 143, not 130."""


# The stop signal last received in this process (SIGINT or SIGTERM): a loop that stopped at a
# clean point reports with the matching exit code.
_received: list[int] = [signal.SIGINT]


def interrupt_code() -> int:
    """The exit code for the stop signal this process last received: 130 or 143."""
    return EXIT_TERMINATED if _received[-1] == signal.SIGTERM else EXIT_INTERRUPTED


def interruption() -> KeyboardInterrupt:
    """The exception for the stop signal last received: Terminated or KeyboardInterrupt."""
    return Terminated() if _received[-1] == signal.SIGTERM else KeyboardInterrupt()


class StopFlag:
    """Turns Ctrl-C (SIGINT) and SIGTERM into a flag that a loop checks at clean points, between
    batches or shards, where stopping cannot corrupt anything (a KeyboardInterrupt can land
    anywhere, in a process pool's bookkeeping too)."""

    def __init__(self) -> None:
        self.raised = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopFlag]:
        def handler(signum: int, frame: object) -> None:
            note_signal(signum)
            self.raised = True

        previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def note_signal(signum: int) -> None:
    """Record a stop signal a handler of its own caught (see interrupt_code)."""
    _received.append(signum)


def _raise_stop(signum: int, frame: object) -> None:
    note_signal(signum)
    raise interruption()


def _exit_while_starting(signum: int, frame: object) -> None:
    """A stop signal while a command imports its modules: nothing is written yet, so it ends at
    once with its one line (a KeyboardInterrupt raised inside an import prints a traceback)."""
    args = sys.orig_argv[sys.orig_argv.index("-m") + 1 :] if "-m" in sys.orig_argv else []
    name = (args[0] if args else "pipeline").rpartition(".")[2]
    word = "terminated" if signum == signal.SIGTERM else "interrupted"
    with contextlib.suppress(OSError):  # no stderr: the exit code alone tells
        os.write(2, f"{word}: {name} stopped while starting; nothing was written\n".encode())
    os._exit(EXIT_TERMINATED if signum == signal.SIGTERM else EXIT_INTERRUPTED)


def install_starting_handlers() -> None:
    """Ctrl-C and SIGTERM from the first moment of `python -m pipeline.<command>` (called by
    the package's __init__, before any heavy import): one line and 130 or 143. `cli` replaces
    these handlers with ones that raise, once the command's main() runs."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, _exit_while_starting)


@contextlib.contextmanager
def _stop_signals_raise() -> Iterator[None]:
    """SIGINT raises KeyboardInterrupt and SIGTERM Terminated while a command runs."""
    try:
        previous = {sig: signal.signal(sig, _raise_stop) for sig in STOP_SIGNALS}
    except ValueError:  # not the main thread (a test calling main() from one): leave them
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class ArgumentParser(argparse.ArgumentParser):
    """argparse for a command's options, its errors one line and exit code 2 like any bad
    input; `--help` is the module docstring, printed by `cli`."""

    def __init__(self, module: str) -> None:
        super().__init__(prog=f"python -m {module}", add_help=False)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise fail("usage", f"{message} ({self.prog} --help)")


def usage(module: str) -> str:
    """`python -m <module>` and the module's docstring: the text `--help` prints."""
    doc = inspect.cleandoc(sys.modules[module].__doc__ or "")
    return f"usage: python -m {command_name(module)}\n\n{doc}".rstrip() + "\n"


def command_name(module: str) -> str:
    """`pipeline.train` for the module run as `python -m pipeline.train` (named __main__)."""
    spec = getattr(sys.modules.get(module), "__spec__", None)
    return spec.name if spec else module


def cli(func: F) -> F:
    """Run a command's main(): `-h`/`--help` prints its docstring and does nothing else; a
    PipelineError becomes one line on stderr and exit code 2, and so does an OSError that got
    this far (a full disk, say: the line names the file and the system's reason) or running out
    of memory; Ctrl-C one line and exit 130, SIGTERM the same with exit 143; a stdout whose
    reader went away (`| head`) no line and exit 141, a stdout closed from the start one line
    and exit 2.

    Outputs are written atomically, so an interrupted command leaves the old ones in place.
    """

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> object:
        argv = args[0] if args and isinstance(args[0], list) else sys.argv[1:]
        try:
            with _stop_signals_raise():
                if sys.stdout is None:  # started with fd 1 closed (`>&-`): Python has no stdout
                    raise PipelineError(
                        "stdout: closed, so the command's output would be lost; run it with "
                        "stdout open (or redirected to a file or /dev/null)"
                    )
                if "-h" in argv or "--help" in argv:
                    print(usage(func.__module__), end="")
                    result = None
                else:
                    result = func(*args, **kwargs)
                sys.stdout.flush()  # a reader gone away shows here, not at the interpreter's exit
                return result
        except BrokenPipeError:
            # stdout's reader stopped reading (`| head`): stop quietly, as Unix tools do
            _silence_stdout()
            raise SystemExit(EXIT_BROKEN_PIPE) from None
        except PipelineError as exc:
            _error_line(str(exc))
        except OSError as exc:  # an OS failure no reader or writer turned into its own line
            where = exc.filename if exc.filename is not None else command_name(func.__module__)
            _error_line(f"{where}: {exc.strerror or type(exc).__name__}")
        except MemoryError:
            _error_line(f"{command_name(func.__module__)}: out of memory")
        except KeyboardInterrupt as exc:
            name = command_name(func.__module__).rpartition(".")[2]
            word = "terminated" if isinstance(exc, Terminated) else "interrupted"
            print(f"{word}: {name} stopped; its previous outputs are kept", file=sys.stderr)
            code = EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
            raise SystemExit(code) from None
        return None  # not reached: each handler above exits

    return wrapper  # type: ignore[return-value]


def _error_line(text: str) -> None:
    """Print `error: <text>` as one line and exit with code 2."""
    print(f"error: {' '.join(text.split())}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT) from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush finds no closed pipe."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (tests capture it)
        pass
