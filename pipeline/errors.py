"""One error type for bad input or params, and the wrapper that turns it into exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

EXIT_BAD_INPUT = 2


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


def cli(func: F) -> F:
    """Run a stage's main(); a PipelineError becomes one line on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> object:
        try:
            return func(*args, **kwargs)
        except PipelineError as exc:
            text = " ".join(str(exc).split())  # one line, whatever the message held
            print(f"error: {text}", file=sys.stderr)
            raise SystemExit(EXIT_BAD_INPUT) from None

    return wrapper  # type: ignore[return-value]
