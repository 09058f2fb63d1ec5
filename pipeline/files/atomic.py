"""Atomic outputs: every file and folder a stage writes appears whole or not at all.

DVC caches whatever sits at an output path after a stage, so a stage killed halfway must not
leave a truncated file there. Everything is written under a temporary name in the same folder
(same filesystem, so the final rename is atomic) and renamed into place when complete.

A stage calls `prepare_outputs` before its work: an output that cannot be written is reported
then, not after an hour of training, and the temporaries a killed run left are removed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.core.errors import PipelineError, fail
from pipeline.files.inputs import kind, name_fits


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


# mkstemp creates files readable by the owner only; outputs get the usual permissions instead.
_FILE_MODE = 0o666 & ~_umask()


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


# Marks the temporaries of this module's own making, so that cleaning up after a killed run
# never takes a user's file beside an output ('.results.csv.original.tmp', say) for one.
MARK = "pipeline-"
# '.' + stem + '.pipeline-' + mkstemp's 8 random characters (or 'old.<pid>') + '.tmp'
_EXTRA = len(f"..{MARK}old.4194304.tmp")
_NAME_MAX = 255  # bytes, the limit of every filesystem Linux and macOS write to


def _stem(name: str) -> str:
    """The part of a temporary's name that comes from its output's name: the name itself, or,
    where that would make the temporary's name too long for the filesystem, a shortened form
    (its start and a digest of the whole), so that every name that fits has a temporary that
    fits, and the same output always gets the same stem (for cleaning up after a kill)."""
    if len(os.fsencode(name)) + _EXTRA <= _NAME_MAX:
        return name
    digest = hashlib.sha256(os.fsencode(name)).hexdigest()[:16]
    keep = _NAME_MAX - _EXTRA - len(digest) - 1
    start = os.fsencode(name)[:keep].decode("utf-8", "ignore")  # whole characters only
    return f"{start}~{digest}"


def _tmp_name(path: Path, folder: Path | None = None, directory: bool = False) -> Path:
    """A new empty temporary file (or folder) for `path`, in its folder or in `folder`."""
    folder = path.parent if folder is None else folder
    where = {"prefix": f".{_stem(path.name)}.{MARK}", "suffix": ".tmp", "dir": folder}
    try:
        if directory:
            tmp = Path(tempfile.mkdtemp(**where))
            tmp.chmod(0o777 & ~_umask())
            return tmp
        fd, made = tempfile.mkstemp(**where)
    except OSError as exc:
        raise fail(str(folder), f"cannot write {path} in this folder ({_reason(exc)})") from None
    os.fchmod(fd, _FILE_MODE)
    os.close(fd)
    return Path(made)


def _replaceable(path: Path, folder: bool = False) -> None:
    """Only a regular file (or a symlink to one) is ever replaced by an output, or a folder by
    a folder output: a FIFO, a device or a socket at an output's path (`--out /dev/null`) is
    refused, where os.replace would put a regular file in its place."""
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return  # nothing there (or a dangling symlink, replaced as a symlink)
    except OSError as exc:
        raise fail(str(path), f"cannot check this output ({_reason(exc)})") from None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return
    wanted = "a folder" if folder else "a regular file"
    raise fail(
        str(path),
        f"expected {wanted} or nothing at this output path, found {kind(mode)}, which is never "
        "replaced; choose another path",
    )


# What a write that failed for want of room says: the OS's OSError, or torch's zip writer's
# RuntimeError (it reports the failed write in its own words).
_TORCH_WRITE_FAILED = ("PytorchStreamWriter failed", "file write failed", "inline_container")


def _write_failure(exc: BaseException, path: Path, tmp: Path) -> PipelineError | None:
    """The one-line error for a write of `path` (under the temporary `tmp`) that failed in the
    OS (a full disk, a quota, an I/O error), or None for any other failure. An OSError about
    some other file (an input read while writing) is left for errors.cli to name."""
    if isinstance(exc, OSError):
        if exc.filename is not None and not str(exc.filename).startswith(str(tmp)):
            return None
        reason = _reason(exc)
    elif isinstance(exc, RuntimeError) and any(s in str(exc) for s in _TORCH_WRITE_FAILED):
        reason = _space_left(path.parent) or "torch could not write the file"
    else:
        return None
    return fail(str(path), f"cannot write this output ({reason}); nothing was replaced")


def _space_left(folder: Path) -> str | None:
    """'No space left on device' where the folder's filesystem is full, else None."""
    try:
        info = os.statvfs(folder)
    except OSError:
        return None
    return os.strerror(errno.ENOSPC) if info.f_bavail * info.f_frsize < (1 << 20) else None


def _nearest_folder(path: Path) -> Path:
    """The folder `path` goes in, or its nearest existing ancestor; a file in the way is named."""
    for above in (path.parent, *path.parent.parents):
        if above.is_dir():
            return above
        if above.exists() or above.is_symlink():
            raise fail(str(above), f"expected a folder to hold {path}, found a file; move it away")
    raise fail(str(path), "no existing folder above it")  # only if even '/' is not a folder


def _make_parent(path: Path) -> list[Path]:
    """Create the folders missing above `path`; return them, deepest first (for _unmake)."""
    base = _nearest_folder(path)
    above = (path.parent, *path.parent.parents)
    missing = list(above[: above.index(base)])  # everything below the nearest existing folder
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(str(path.parent), f"cannot create this folder ({_reason(exc)})") from None
    return missing


def _unmake(folders: list[Path]) -> None:
    """Remove the folders _make_parent created, where still empty: a failed write leaves none."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


def _replace(src: Path, dst: Path) -> None:
    try:
        os.replace(src, dst)
    except OSError as exc:
        raise fail(str(dst), f"cannot put the new output in place ({_reason(exc)})") from None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# The temporaries _tmp_name and atomic_dir make: '.<name>.pipeline-' + mkstemp's 8 random
# characters (or 'old.<pid>', a replaced folder on its way out) + '.tmp'.
def _stale_temps(path: Path) -> list[Path]:
    stem = re.escape(_stem(path.name))
    pattern = re.compile(rf"\.{stem}\.{MARK}(?:[a-z0-9_]{{8}}|old\.\d+)\.tmp")
    if not path.parent.is_dir():
        return []
    return [p for p in path.parent.iterdir() if pattern.fullmatch(p.name)]


def prepare_outputs(
    files: Iterable[str | os.PathLike[str]] = (), folders: Iterable[str | os.PathLike[str]] = ()
) -> None:
    """Before a stage works: each of its outputs can be written, and nothing of a killed run
    of it is left beside them.

    An output's folder (while it is missing, the nearest folder above) must take new files,
    and the path must not hold a folder where a file goes (or the reverse). Temporaries of
    these outputs left by a killed run are removed (a second run of the same stage in the same
    workspace at the same time would lose its own; DVC's repository lock rules that out)."""
    wanted = [(Path(p), False) for p in files] + [(Path(p), True) for p in folders]
    for path, folder in wanted:
        name_fits(path)
        base = _nearest_folder(path)  # missing folders are created only when writing
        _replaceable(path, folder)
        if path.exists() and path.is_dir() != folder:
            found, expected = ("a file", "a folder") if folder else ("a folder", "a file")
            raise fail(
                str(path),
                f"expected {expected} (an output of this stage), found {found}; remove it",
            )
        for stale in _stale_temps(path):
            _remove(stale)
        _tmp_name(path, base).unlink()  # base takes new files (as root too, unlike os.access)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    made = _make_parent(path)
    _replaceable(path)
    tmp = _tmp_name(path)
    try:
        yield tmp
        _replaceable(path)  # a FIFO made there meanwhile is not replaced either
        _replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        _unmake(made)
        failure = _write_failure(exc, path, tmp)
        if failure is not None:
            raise failure from None
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[BinaryIO]:
    """Open a temporary file for writing; it is fsynced and renamed onto `path` on success."""
    with atomic_path(path) as tmp, open(tmp, mode) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder under a temporary name; it replaces `path` (old contents gone) on success."""
    path = Path(path)
    made = _make_parent(path)
    _replaceable(path, folder=True)
    tmp = _tmp_name(path, directory=True)
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.parent / f".{_stem(path.name)}.{MARK}old.{os.getpid()}.tmp"  # if killed
            _replace(path, old)
        _replace(tmp, path)
        if old is not None:
            _remove(old)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        _unmake(made)
        failure = _write_failure(exc, path, tmp)
        if failure is not None:
            raise failure from None
        raise
