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


class StopFlag:
    """Turns Ctrl-C (SIGINT) into a flag that a loop checks at clean points, between batches or
    shards, where stopping cannot corrupt anything (a KeyboardInterrupt can land anywhere, in a
    process pool's bookkeeping too)."""

    def __init__(self) -> None:
        self.raised = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopFlag]:
        def handler(signum: int, frame: object) -> None:
            self.raised = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


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
    PipelineError becomes one line on stderr and exit code 2; Ctrl-C one line and exit 130; a
    closed stdout (`| head`) no line and exit 141.

    Outputs are written atomically, so an interrupted command leaves the old ones in place.
    """

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> object:
        argv = args[0] if args and isinstance(args[0], list) else sys.argv[1:]
        try:
            if "-h" in argv or "--help" in argv:
                print(usage(func.__module__), end="")
                result = None
            else:
                result = func(*args, **kwargs)
            sys.stdout.flush()  # a reader gone away shows here, not in the interpreter's exit
            return result
        except BrokenPipeError:
            # stdout's reader stopped reading (`| head`): stop quietly, as Unix tools do
            _silence_stdout()
            raise SystemExit(EXIT_BROKEN_PIPE) from None
        except PipelineError as exc:
            text = " ".join(str(exc).split())  # one line, whatever the message held
            print(f"error: {text}", file=sys.stderr)
            raise SystemExit(EXIT_BAD_INPUT) from None
        except KeyboardInterrupt:
            name = command_name(func.__module__).rpartition(".")[2]
            print(f"interrupted: {name} stopped; its previous outputs are kept", file=sys.stderr)
            raise SystemExit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so that the interpreter's last flush finds no closed pipe."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (tests capture it)
        pass
