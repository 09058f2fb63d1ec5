"""The globals a PYSKL pickle may call, each accepting only what numpy and pickle write there.

numpy pickles an array as `_reconstruct(ndarray, (0,), b"b")` followed by BUILD with (version,
shape, dtype, fortran, data); a dtype as `dtype("f2", False, True)` followed by BUILD with its
byte order; a scalar as `scalar(dtype, data)`; and, at protocol 5, an array as `_frombuffer(data,
dtype, shape, order)`. Protocol 0-2 pickles store bytes as `_codecs.encode(text, "latin1")` and
b"" as `bytes()`. `Rebuilder` offers exactly these, checked: dtypes are plain numbers (an object
array's state can crash numpy's loader), an array's data must fill its shape, an array that is
reconstructed but never given its data is refused (it would be uninitialised memory), and no
array may be larger than the file it comes from.
"""

from __future__ import annotations

import math
import pickle
from collections import OrderedDict
from typing import Any

import numpy as np

try:  # numpy 2 moved its internals from numpy.core to numpy._core; pickles name either
    from numpy._core.multiarray import _reconstruct, scalar
    from numpy._core.numeric import _frombuffer
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar
    from numpy.core.numeric import _frombuffer

Refused = pickle.UnpicklingError
PLAIN_KINDS = "biufc"  # bool, signed and unsigned integers, floats, complex


class _Name:
    """A global that may be named but not called (numpy.ndarray, as _reconstruct's argument)."""

    def __init__(self, name: str) -> None:
        self.name = name


NDARRAY = _Name("numpy.ndarray")


def clip(text: str, limit: int = 80) -> str:
    """`text`, cut to `limit` characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value: Any) -> str:
    """A short name for what a pickle put somewhere, without looking inside it."""
    if isinstance(value, _Name):
        return value.name
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _plain(dtype: Any, what: str) -> np.dtype:
    if not isinstance(dtype, np.dtype):
        raise Refused(f"{what}: expected a numpy dtype, found {describe(dtype)}")
    if dtype.kind not in PLAIN_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise Refused(
            f"{what}: dtype {clip(str(dtype), 40)} is not a plain number type (bool, int, uint, "
            "float or complex)"
        )
    return dtype


def _shape(shape: Any, what: str) -> tuple[int, ...]:
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not (
        isinstance(shape, tuple)
        and len(shape) <= 32
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise Refused(f"{what}: a shape must be a tuple of integers >= 0")
    return shape


class Rebuilder:
    """The callable globals for one pickle of `size` bytes, and BUILD on what they made."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._unbuilt: dict[int, np.ndarray] = {}  # arrays waiting for their data
        self._fresh_dtypes: dict[int, np.dtype] = {}  # dtypes waiting for their byte order
        self.globals: dict[tuple[str, str], Any] = {
            ("numpy", "ndarray"): NDARRAY,
            ("numpy", "dtype"): self._dtype,
            ("collections", "OrderedDict"): OrderedDict,
            ("_codecs", "encode"): self._encode,
            ("__builtin__", "bytes"): self._bytes,
            ("builtins", "bytes"): self._bytes,
        }
        for prefix in ("numpy.core", "numpy._core"):
            self.globals[f"{prefix}.multiarray", "_reconstruct"] = self._reconstruct
            self.globals[f"{prefix}.multiarray", "scalar"] = self._scalar
            self.globals[f"{prefix}.numeric", "_frombuffer"] = self._frombuffer

    def build(self, target: Any, state: Any) -> bool:
        """Give an array or dtype made here its state; False for anything else."""
        if self._unbuilt.pop(id(target), None) is not None:
            self._build_array(target, state)
        elif self._fresh_dtypes.pop(id(target), None) is not None:
            self._build_dtype(target, state)
        else:
            return False
        return True

    def finish(self) -> None:
        """At the end of the pickle: every reconstructed array got its data."""
        for array in self._unbuilt.values():
            raise Refused(
                f"a numpy array of shape {array.shape} and dtype {array.dtype} is reconstructed "
                f"but never given its data (no BUILD): it would be {array.nbytes:,} bytes of "
                "uninitialised memory"
            )

    def _too_big(self, nbytes: int, shape: tuple[int, ...], dtype: np.dtype) -> str:
        return (
            f"a numpy array of shape {shape} and dtype {dtype} takes {nbytes:,} bytes, more than "
            f"this {self.size:,}-byte file holds (an array must carry its data, so what a pickle "
            "allocates is bounded by its file size)"
        )

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
        if subtype is not NDARRAY:
            raise Refused(f"_reconstruct may rebuild only numpy.ndarray, not {describe(subtype)}")
        what = "a reconstructed numpy array"
        dtype = _plain(dtype if isinstance(dtype, np.dtype) else np.dtype(dtype), what)
        shape = _shape(shape, what)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > self.size:
            raise Refused(self._too_big(nbytes, shape, dtype))
        array = _reconstruct(np.ndarray, shape, dtype)
        self._unbuilt[id(array)] = array
        return array

    def _build_array(self, array: np.ndarray, state: Any) -> None:
        what = "the state of a numpy array"
        if not (isinstance(state, tuple) and len(state) in (4, 5)):
            raise Refused(f"{what} must be (version, shape, dtype, fortran, data)")
        shape, dtype, _, data = state[-4:]
        shape, dtype = _shape(shape, what), _plain(dtype, what)
        if not isinstance(data, bytes | bytearray | str):  # str: Python 2's str, as latin-1
            raise Refused(f"{what}: its data must be bytes, found {describe(data)}")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > self.size:
            raise Refused(self._too_big(nbytes, shape, dtype))
        if nbytes != len(data):
            raise Refused(
                f"a numpy array of shape {shape} and dtype {dtype} needs {nbytes:,} bytes of "
                f"data but carries {len(data):,}"
            )
        array.__setstate__(state)

    def _dtype(self, code: Any, align: Any = False, copy: Any = True) -> np.dtype:
        if not isinstance(code, str):
            raise Refused(f"numpy.dtype takes a type code such as 'f2', found {describe(code)}")
        # A fresh copy, as numpy's own pickles ask: BUILD must never reach a shared instance.
        dtype = _plain(np.dtype(code, align=bool(align), copy=True), "numpy.dtype")
        self._fresh_dtypes[id(dtype)] = dtype
        return dtype

    def _build_dtype(self, dtype: np.dtype, state: Any) -> None:
        """Only the state numpy writes for a plain dtype, which sets its byte order."""
        order = state[1] if isinstance(state, tuple) and len(state) > 1 else None
        want = dtype.newbyteorder(order).__reduce__()[2] if order in ("<", ">", "|") else ()
        if not (
            isinstance(state, tuple)
            and len(state) == len(want)
            and all(type(a) is type(b) and a == b for a, b in zip(state, want, strict=True))
        ):
            raise Refused(f"the state of numpy dtype {dtype} is not the one numpy writes for it")
        dtype.__setstate__(state)

    def _scalar(self, dtype: Any, data: Any = None) -> Any:
        dtype = _plain(dtype, "a numpy scalar")
        if not (isinstance(data, bytes | str) and len(data) == dtype.itemsize):
            raise Refused(f"a numpy scalar of dtype {dtype} needs {dtype.itemsize} bytes of data")
        return scalar(dtype, data)

    def _frombuffer(self, buf: Any, dtype: Any, shape: Any, *order: Any) -> np.ndarray:
        what = "a numpy array from a buffer"
        dtype, shape = _plain(dtype, what), _shape(shape, what)
        if not isinstance(buf, bytes | bytearray | memoryview | pickle.PickleBuffer):
            raise Refused(f"{what}: expected bytes, found {describe(buf)}")
        if math.prod(shape) * dtype.itemsize != memoryview(buf).nbytes:
            raise Refused(f"{what}: shape {shape} and dtype {dtype} do not match its data")
        return _frombuffer(buf, dtype, shape, *order)

    def _encode(self, text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        if not (isinstance(text, str) and encoding in ("latin1", "latin-1") and errors == "strict"):
            raise Refused("_codecs.encode may only turn latin-1 text into bytes")
        return text.encode("latin1")

    def _bytes(self, *args: Any) -> bytes:
        if args:
            raise Refused("bytes() may only be called without arguments (an empty bytes)")
        return b""
