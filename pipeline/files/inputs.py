"""The one check before any input file is read: a regular file, and no larger than its budget.

A FIFO, a terminal or a device given where a file is expected would make a reader wait forever
(a FIFO with no writer) or read without end (`/dev/zero`); such input is refused at once, in
one line naming it. Checking is a `stat`, which never blocks, so it runs before every library
that opens the path itself (torch, pandas, numpy, the unpickler). Files read whole into memory
(JSON, YAML) are read through `read_bytes`, which also bounds how much is read.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from pipeline.core.errors import PipelineError, fail

MIB = 1 << 20


def kind(mode: int) -> str:
    """What a file of this st_mode is, in words."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "a regular file" if stat.S_ISREG(mode) else "a special file"


def size_text(count: float) -> str:
    """A byte count as people read it: 3.8 GiB, 12 MiB, 512 bytes."""
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", MIB), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.3g} {unit}"
    return f"{int(count)} bytes"


def _not_regular(path: str | os.PathLike[str], mode: int) -> PipelineError:
    return fail(
        str(path), f"expected a regular file, found {kind(mode)}; only regular files are read"
    )


def check_regular(path: str | os.PathLike[str], limit: int | None = None, what: str = "") -> int:
    """The size of `path`, which must be a regular file (a symlink to one is fine) of at most
    `limit` bytes. A folder raises IsADirectoryError and a missing file FileNotFoundError, for
    the caller's `errors.opening` to word; anything else that is not a regular file, and a
    file over the limit, is a one-line error naming it."""
    info = os.stat(path)  # follows symlinks, never blocks (opening a FIFO would)
    if stat.S_ISDIR(info.st_mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    if not stat.S_ISREG(info.st_mode):
        raise _not_regular(path, info.st_mode)
    if limit is not None and info.st_size > limit:
        raise fail(
            str(path),
            f"{what or 'the file'} is {size_text(info.st_size)}, over the limit of "
            f"{size_text(limit)} for such a file",
        )
    return info.st_size


def refuse_special(path: str | os.PathLike[str]) -> None:
    """Refuse a FIFO, device or socket at `path` (or a symlink to one) in one line; a missing,
    unreadable or folder path is left for the reader that follows to report in its own words."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise _not_regular(path, mode)


def read_bytes(path: str | os.PathLike[str], limit: int, what: str = "") -> bytes:
    """A regular file's content, refused beyond `limit` bytes (also if it grows while read)."""
    check_regular(path, limit, what)
    # O_NONBLOCK: should the path turn into a FIFO between the check and the open, the open
    # still returns at once (and the read finds nothing) instead of waiting for a writer
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise fail(
            str(path),
            f"{what or 'the file'} is over the limit of {size_text(limit)} for such a file",
        )
    return data


def name_fits(path: Path) -> None:
    """A one-line error when the last part of `path` is longer than its filesystem allows
    (an output's name, before any work; the OS would say only 'File name too long')."""
    folder = next((p for p in (path.parent, *path.parent.parents) if p.is_dir()), Path("/"))
    try:
        limit = os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    length = len(os.fsencode(path.name))
    if length > limit:
        raise fail(
            str(path)[:80] + ("..." if len(str(path)) > 80 else ""),
            f"the file name is {length} bytes long; this filesystem allows at most {limit}",
        )
