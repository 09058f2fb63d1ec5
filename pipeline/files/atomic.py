"""Atomic outputs: every file and folder a stage writes appears whole or not at all.

DVC caches whatever sits at an output path after a stage, so a stage killed halfway must not
leave a truncated file there. Everything is written under a temporary name in the same folder
(same filesystem, so the final rename is atomic) and renamed into place when complete.

A stage calls `prepare_outputs` before its work: an output that cannot be written is reported
then, not after an hour of training, and the temporaries a killed run left are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.core.errors import fail


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


def _tmp_name(path: Path, folder: Path | None = None, directory: bool = False) -> Path:
    """A new empty temporary file (or folder) for `path`, in its folder or in `folder`."""
    folder = path.parent if folder is None else folder
    where = {"prefix": f".{path.name}.{MARK}", "suffix": ".tmp", "dir": folder}
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


def _nearest_folder(path: Path) -> Path:
    """The folder `path` goes in, or its nearest existing ancestor; a file in the way is named."""
    for above in (path.parent, *path.parent.parents):
        if above.is_dir():
            return above
        if above.exists() or above.is_symlink():
            raise fail(str(above), f"expected a folder to hold {path}, found a file; move it away")
    raise fail(str(path), "no existing folder above it")  # only if even '/' is not a folder


def _make_parent(path: Path) -> None:
    _nearest_folder(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(str(path.parent), f"cannot create this folder ({_reason(exc)})") from None


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
    pattern = re.compile(rf"\.{re.escape(path.name)}\.{MARK}(?:[a-z0-9_]{{8}}|old\.\d+)\.tmp")
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
        base = _nearest_folder(path)  # missing folders are created only when writing
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
    _make_parent(path)
    tmp = _tmp_name(path)
    try:
        yield tmp
        _replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
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
    _make_parent(path)
    tmp = _tmp_name(path, directory=True)
    try:
        yield tmp
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.{MARK}old.{os.getpid()}.tmp"  # a leftover if killed
            _replace(path, old)
        _replace(tmp, path)
        if old is not None:
            _remove(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
