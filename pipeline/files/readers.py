"""Checked readers for what an earlier stage wrote: one per kind (JSON, CSV, .npy).

An intermediate can be damaged after the stage that wrote it finished: a disk filled up, a copy
was cut short, someone edited it. Each reader checks that the file is whole and shaped as
expected; a problem ends in one line naming the file and the stage that rebuilds it, never in a
traceback from json, pandas or numpy deep inside the stage that read it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import PipelineError, fail
from pipeline.files.inputs import refuse_special

NUMBER = (int, float)
# A JSON shape: a type (or tuple of types), {key: shape} for an object holding at least those
# keys, or [shape] for a list whose every item has that shape.
Shape = type | tuple[type, ...] | Mapping[str, Any] | list[Any]


def damaged(path: str | os.PathLike[str], stage: str, problem: str) -> PipelineError:
    """The error for an intermediate that is missing or not what `stage` writes."""
    return fail(str(path), f"{problem}; run `dvc repro -f -s {stage}` to rebuild it")


def _open_error(path: Path, stage: str, exc: OSError) -> PipelineError:
    if isinstance(exc, FileNotFoundError):
        return damaged(path, stage, "not found")
    return damaged(path, stage, f"cannot be read ({exc.strerror or type(exc).__name__})")


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    names.update({int: "an integer", float: "a number", type(None): "null"})
    return names.get(type(value), type(value).__name__)


def _mismatch(value: Any, shape: Shape, key: str) -> str | None:
    """Where `value` departs from `shape`, said in a few words; None when it conforms."""
    if isinstance(shape, Mapping):
        if not isinstance(value, dict):
            return f"{key + ': ' if key else ''}expected an object, found {_kind(value)}"
        for name, inner in shape.items():
            where = f"{key}.{name}" if key else name
            if name not in value:
                return f"no key {where!r}"
            problem = _mismatch(value[name], inner, where)
            if problem:
                return problem
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{key}: expected a list, found {_kind(value)}"
        found = (_mismatch(item, shape[0], f"{key}[{i}]") for i, item in enumerate(value))
        return next((problem for problem in found if problem), None)
    types = shape if isinstance(shape, tuple) else (shape,)
    if isinstance(value, types) and (bool in types or not isinstance(value, bool)):
        return None
    expected = "a number" if float in types else _kind(types[0]())
    return f"{key}: expected {expected}, found {_kind(value)}"


def read_json(path: str | os.PathLike[str], stage: str, shape: Shape = dict) -> Any:
    """The parsed file, checked against `shape`."""
    path = Path(path)
    try:
        refuse_special(path)  # a FIFO would block the read forever
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise _open_error(path, stage, exc) from None
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise damaged(path, stage, f"not valid JSON ({exc})") from None
    check_shape(path, stage, data, shape)
    return data


def check_shape(
    path: str | os.PathLike[str], stage: str, value: Any, shape: Shape, key: str = ""
) -> None:
    """`value`, read from `path` (at `key` in it), has `shape`; else a one-line error."""
    problem = _mismatch(value, shape, key)
    if problem:
        raise damaged(path, stage, problem)


def read_csv(
    path: str | os.PathLike[str], stage: str, columns: Mapping[str, type], sep: str = ","
) -> pd.DataFrame:
    """The table, which must have `columns` (name -> str, int or float); further columns are
    kept.

    Text columns stay text (a group '007' is not 7, an empty name is not NaN). `sep` is "\t"
    for dvclive's .tsv files."""
    path = Path(path)
    text = {name: str for name, kind in columns.items() if kind is str}
    try:
        refuse_special(path)
        table = pd.read_csv(path, keep_default_na=False, dtype=text, sep=sep)
    except OSError as exc:
        raise _open_error(path, stage, exc) from None
    except (ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise damaged(path, stage, f"not a readable CSV table ({reason})") from None
    for name, kind in columns.items():
        if name not in table.columns:
            raise damaged(path, stage, f"no column {name!r}")
        if kind is int and not pd.api.types.is_integer_dtype(table[name]):
            number = pd.to_numeric(table[name], errors="coerce")
            bad = np.flatnonzero(number.isna().to_numpy() | (number % 1 != 0).to_numpy())
            if len(bad):
                raise damaged(
                    path,
                    stage,
                    f"column {name!r}, row {bad[0] + 1}: expected an integer, "
                    f"found {table[name].iloc[bad[0]]!r}",
                )
            table[name] = number.astype(np.int64)  # written as 3.0: still a whole number
        if kind is float and not pd.api.types.is_float_dtype(table[name]):
            number = pd.to_numeric(table[name], errors="coerce")
            bad = np.flatnonzero(number.isna().to_numpy())
            if len(bad):
                found = table[name].iloc[bad[0]]
                raise damaged(
                    path,
                    stage,
                    f"column {name!r}, row {bad[0] + 1}: expected a number, found {found!r}",
                )
            table[name] = number.astype(np.float64)
    return table


def check_range(
    path: str | os.PathLike[str], stage: str, table: pd.DataFrame, column: str, lo: int, hi: int
) -> None:
    """Every value of an integer column of `table`, read from `path`, lies in lo..hi."""
    values = table[column].to_numpy()
    bad = np.flatnonzero((values < lo) | (values > hi))
    if len(bad):
        raise damaged(
            path,
            stage,
            f"column {column!r}, row {bad[0] + 1}: expected {lo}..{hi}, found {values[bad[0]]}",
        )


def npy_layout(
    path: str | os.PathLike[str], stage: str, dtype: str, ndim: int
) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, offset of the data) of a C-order .npy file holding all the bytes its
    header promises; a truncated or foreign file is refused before anything maps it."""
    path = Path(path)
    try:
        refuse_special(path)
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = {
                (1, 0): np.lib.format.read_array_header_1_0,
                (2, 0): np.lib.format.read_array_header_2_0,
            }.get(version)
            if read_header is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, fortran, found = read_header(handle)
            offset = handle.tell()
            size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise _open_error(path, stage, exc) from None
    except (ValueError, EOFError, SyntaxError) as exc:  # bad magic, or a header that is not one
        raise damaged(path, stage, f"not a .npy array ({' '.join(str(exc).split())})") from None
    if fortran or found != np.dtype(dtype) or len(shape) != ndim:
        raise damaged(
            path,
            stage,
            f"expected a {ndim}-d {np.dtype(dtype)} array in C order, found {len(shape)}-d {found}",
        )
    expected = offset + found.itemsize * math.prod(shape)
    if size != expected:
        raise damaged(
            path,
            stage,
            f"holds {size} bytes, its header {shape} needs {expected} (cut short or damaged)",
        )
    return shape, found, offset


def map_npy(path: str | os.PathLike[str], stage: str, dtype: str, ndim: int) -> np.ndarray:
    """A checked .npy file memory-mapped read-only (an empty array is returned in memory)."""
    shape, found, offset = npy_layout(path, stage, dtype, ndim)
    if 0 in shape:
        return np.empty(shape, found)
    return np.memmap(path, dtype=found, mode="r", offset=offset, shape=shape)
