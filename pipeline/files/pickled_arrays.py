"""The globals a PYSKL pickle may call, each accepting only what numpy and pickle write there.

numpy pickles an array as `_reconstruct(ndarray, (0,), b"b")` followed by BUILD with (version,
shape, dtype, fortran, data); a dtype as `dtype("f2", False, True)` followed by BUILD with its
byte order; a scalar as `scalar(dtype, data)`; and, at protocol 5, an array as `_frombuffer(data,
dtype, shape, order)`. Protocol 0-2 pickles store bytes as `_codecs.encode(text, "latin1")` and
b"" as `bytes()`; an OrderedDict is `OrderedDict()` filled by SETITEMS (Python 2: `OrderedDict(
[[key, value], ...])`). `Rebuilder` offers exactly these, checked: dtypes are plain numbers (an
object array's state can crash numpy's loader), an array's data must fill its shape, an array
that is reconstructed but never given its data is refused (it would be uninitialised memory),
no array may be larger than the file it comes from, and what the calls copy (text encoded to
bytes) adds up to at most the file's size.

The C unpickler gives BUILD straight to the target's `__setstate__`, so `_reconstruct` and
`dtype` hand out placeholders (`ArrayStub`, `DtypeStub`) whose `__setstate__` checks the state
first; `Rebuilder.resolve` then puts the real array or dtype wherever a placeholder landed.
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
ALLOWED = "only numpy arrays and plain containers are allowed"


class _Name:
    """A global that may be named but not called (numpy.ndarray, as _reconstruct's argument)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: Any) -> Any:
        raise Refused(f"REDUCE calls {self.name}, which is not an allowed function")

    def __setstate__(self, state: Any) -> None:
        raise Refused(f"BUILD sets the state of {self.name}: {ALLOWED}")


NDARRAY = _Name("numpy.ndarray")


class ArrayStub:
    """What `_reconstruct` returns: an array's shape and dtype, waiting for BUILD's data."""

    __slots__ = ("rebuilder", "shape", "dtype", "array")

    def __init__(self, rebuilder: Rebuilder, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.rebuilder, self.shape, self.dtype = rebuilder, shape, dtype
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if self.array is not None:
            raise Refused(f"BUILD sets the state of {describe(self.array)}: {ALLOWED}")
        self.array = self.rebuilder.build_array(state)


class Payload:
    """A large byte string left in the mapped file: arrays are made on its pages."""

    __slots__ = ("mapped", "offset", "length", "opcode")

    def __init__(self, mapped: Any, offset: int, length: int, opcode: int) -> None:
        self.mapped, self.offset, self.length, self.opcode = mapped, offset, length, opcode

    def array(self, dtype: np.dtype, shape: tuple[int, ...], fortran: bool = False) -> np.ndarray:
        count = self.length // dtype.itemsize
        flat = np.frombuffer(self.mapped, dtype, count, self.offset)
        return flat.reshape(shape, order="F" if fortran else "C")

    def value(self) -> bytes | bytearray:
        """The byte string itself, copied out (for one that is not an array's data)."""
        data = self.mapped[self.offset : self.offset + self.length]
        return bytearray(data) if self.opcode == 0x96 else data


class DtypeStub:
    """What `dtype` returns: a fresh dtype, waiting for BUILD to set its byte order."""

    __slots__ = ("dtype", "built")

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype, self.built = dtype, False

    def __setstate__(self, state: Any) -> None:
        if self.built:
            raise Refused(f"BUILD sets the state of a dtype: {ALLOWED}")
        _build_dtype(self.dtype, state)
        self.built = True


def clip(text: str, limit: int = 80) -> str:
    """`text`, cut to `limit` characters with an ellipsis."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(value: Any) -> str:
    """A short name for what a pickle put somewhere, without looking inside it."""
    if isinstance(value, _Name):
        return value.name
    if isinstance(value, ArrayStub):
        return f"an array of shape {value.shape if value.array is None else value.array.shape}"
    if isinstance(value, DtypeStub):
        value = value.dtype
    if isinstance(value, Payload):
        return "a bytes" if value.opcode != 0x96 else "a bytearray"
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape}"
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def key_safe(key: Any) -> bool:
    """A dict key or set item whose hash is cheap and cannot be made to collide: str and bytes
    (randomised, cached hashes), None, bools and integers within 64 bits (distinct hashes)."""
    kind = type(key)
    if kind is str or kind is bytes or key is None or kind is bool:
        return True
    return kind is int and -(2**63) <= key < 2**63


def _plain(dtype: Any, what: str) -> np.dtype:
    if type(dtype) is DtypeStub:
        dtype = dtype.dtype
    if isinstance(dtype, np.dtype) and dtype in _PLAIN_SEEN:  # the same few, again and again
        return dtype
    if not isinstance(dtype, np.dtype):
        raise Refused(f"{what}: expected a numpy dtype, found {describe(dtype)}")
    if dtype.kind not in PLAIN_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise Refused(
            f"{what}: dtype {clip(str(dtype), 40)} is not a plain number type (bool, int, uint, "
            "float or complex)"
        )
    if len(_PLAIN_SEEN) < 64:
        _PLAIN_SEEN.add(dtype)
    return dtype


_PLAIN_SEEN: set[np.dtype] = set()  # plain dtypes already checked (dtypes compare by value)


def _shape(shape: Any, what: str) -> tuple[int, ...]:
    if type(shape) is tuple and len(shape) <= 32:
        for n in shape:
            if type(n) is not int or n < 0:
                break
        else:
            return shape
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    if not (
        isinstance(shape, tuple)
        and len(shape) <= 32
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)
    ):
        raise Refused(f"{what}: a shape must be a tuple of integers >= 0")
    return shape


def _build_dtype(dtype: np.dtype, state: Any) -> None:
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


_BYTE = np.dtype("b")


class Rebuilder:
    """The callable globals for one pickle of `size` bytes, and the placeholders they made."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.copied = 0  # bytes the calls made by copying (text encoded), all calls together
        self._stubs: list[ArrayStub] = []
        self.globals: dict[tuple[str, str], Any] = {
            ("numpy", "ndarray"): NDARRAY,
            ("numpy", "dtype"): self._dtype,
            ("collections", "OrderedDict"): self._ordered_dict,
            ("_codecs", "encode"): self._encode,
            ("__builtin__", "bytes"): self._bytes,
            ("builtins", "bytes"): self._bytes,
        }
        for prefix in ("numpy.core", "numpy._core"):
            self.globals[f"{prefix}.multiarray", "_reconstruct"] = self._reconstruct
            self.globals[f"{prefix}.multiarray", "scalar"] = self._scalar
            self.globals[f"{prefix}.numeric", "_frombuffer"] = self._frombuffer

    def finish(self) -> None:
        """At the end of the pickle: every reconstructed array got its data."""
        for stub in self._stubs:
            if stub.array is None:
                nbytes = math.prod(stub.shape) * stub.dtype.itemsize
                raise Refused(
                    f"a numpy array of shape {stub.shape} and dtype {stub.dtype} is "
                    f"reconstructed but never given its data (no BUILD): it would be {nbytes:,} "
                    "bytes of uninitialised memory"
                )

    def resolve(self, data: Any, payloads: bool) -> Any:
        """`data` with every placeholder replaced by its array, dtype or bytes (containers
        changed in place, tuples rebuilt); each container is visited once, however often it is
        shared."""
        if not self._stubs and not payloads and not isinstance(data, DtypeStub):
            return data  # no array anywhere: nothing to replace (a dtype stub needs one too)
        done: dict[int, Any] = {}
        return _resolve(data, done)

    def _too_big(self, nbytes: int, shape: tuple[int, ...], dtype: np.dtype) -> str:
        return (
            f"a numpy array of shape {shape} and dtype {dtype} takes {nbytes:,} bytes, more than "
            f"this {self.size:,}-byte file holds (an array must carry its data, so what a pickle "
            "allocates is bounded by its file size)"
        )

    def _copy(self, nbytes: int, what: str) -> None:
        self.copied += nbytes
        if self.copied > self.size:
            raise Refused(
                f"{what} would copy more than {self.size:,} bytes in all, more than this file "
                "holds (one piece of text used again and again): refusing a memory bomb"
            )

    def _reconstruct(self, subtype: Any, shape: Any, dtype: Any) -> ArrayStub:
        if subtype is not NDARRAY:
            raise Refused(f"_reconstruct may rebuild only numpy.ndarray, not {describe(subtype)}")
        if shape == (0,) and dtype == b"b":  # what numpy writes: the real shape comes by BUILD
            stub = ArrayStub(self, (0,), _BYTE)
            self._stubs.append(stub)
            return stub
        what = "a reconstructed numpy array"
        if not isinstance(dtype, np.dtype | DtypeStub):
            if not isinstance(dtype, str | bytes):
                raise Refused(f"{what}: expected a numpy dtype, found {describe(dtype)}")
            dtype = np.dtype(dtype)
        dtype = _plain(dtype, what)
        shape = _shape(shape, what)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > self.size:
            raise Refused(self._too_big(nbytes, shape, dtype))
        stub = ArrayStub(self, shape, dtype)
        self._stubs.append(stub)
        return stub

    def build_array(self, state: Any) -> np.ndarray:
        what = "the state of a numpy array"
        if not (isinstance(state, tuple) and len(state) in (4, 5)):
            raise Refused(f"{what} must be (version, shape, dtype, fortran, data)")
        shape, dtype, fortran, data = state[-4:]
        shape, dtype = _shape(shape, what), _plain(dtype, what)
        if not isinstance(data, bytes | bytearray | str | Payload):  # str: Python 2's, latin-1
            raise Refused(f"{what}: its data must be bytes, found {describe(data)}")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > self.size:
            raise Refused(self._too_big(nbytes, shape, dtype))
        carried = data.length if isinstance(data, Payload) else len(data)
        if nbytes != carried:
            raise Refused(
                f"a numpy array of shape {shape} and dtype {dtype} needs {nbytes:,} bytes of "
                f"data but carries {carried:,}"
            )
        if isinstance(data, Payload):
            return data.array(dtype, shape, bool(fortran))
        if isinstance(data, str):
            self._copy(nbytes, "array data given as text")  # numpy encodes it: a copy
        array = _reconstruct(np.ndarray, (0,), b"b")
        array.__setstate__((*state[:-4], shape, dtype, fortran, data))
        return array

    def _dtype(self, code: Any, align: Any = False, copy: Any = True) -> DtypeStub:
        if not isinstance(code, str):
            raise Refused(f"numpy.dtype takes a type code such as 'f2', found {describe(code)}")
        # A fresh copy, as numpy's own pickles ask: BUILD must never reach a shared instance.
        return DtypeStub(_plain(np.dtype(code, align=bool(align), copy=True), "numpy.dtype"))

    def _scalar(self, dtype: Any, data: Any = None) -> Any:
        dtype = _plain(dtype, "a numpy scalar")
        if not (isinstance(data, bytes | str) and len(data) == dtype.itemsize):
            raise Refused(f"a numpy scalar of dtype {dtype} needs {dtype.itemsize} bytes of data")
        return scalar(dtype, data)

    def _frombuffer(self, buf: Any, dtype: Any, shape: Any, *order: Any) -> np.ndarray:
        what = "a numpy array from a buffer"
        dtype, shape = _plain(dtype, what), _shape(shape, what)
        if isinstance(buf, Payload):
            if math.prod(shape) * dtype.itemsize != buf.length:
                raise Refused(f"{what}: shape {shape} and dtype {dtype} do not match its data")
            return buf.array(dtype, shape, order == ("F",))
        if not isinstance(buf, bytes | bytearray | memoryview | pickle.PickleBuffer):
            raise Refused(f"{what}: expected bytes, found {describe(buf)}")
        if math.prod(shape) * dtype.itemsize != memoryview(buf).nbytes:
            raise Refused(f"{what}: shape {shape} and dtype {dtype} do not match its data")
        return _frombuffer(buf, dtype, shape, *order)

    def _encode(self, text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
        if not (isinstance(text, str) and encoding in ("latin1", "latin-1") and errors == "strict"):
            raise Refused("_codecs.encode may only turn latin-1 text into bytes")
        self._copy(len(text), "_codecs.encode")
        return text.encode("latin1")

    def _bytes(self, *args: Any) -> bytes:
        if args:
            raise Refused("bytes() may only be called without arguments (an empty bytes)")
        return b""

    def _ordered_dict(self, *args: Any) -> OrderedDict:
        """OrderedDict(), or Python 2's OrderedDict([[key, value], ...]) with plain keys."""
        if not args:
            return OrderedDict()
        pairs = args[0]
        if not (
            len(args) == 1
            and isinstance(pairs, list | tuple)
            and all(isinstance(p, list | tuple) and len(p) == 2 for p in pairs)
        ):
            raise Refused("OrderedDict takes only a list of (key, value) pairs")
        for key, _ in pairs:
            if not key_safe(key):
                raise Refused(_unsafe_key("an OrderedDict", describe(key)))
        return OrderedDict(pairs)


def _unsafe_key(where: str, found: str) -> str:
    return (
        f"{where} key must be a string, bytes, None, a bool or an integer within 64 bits (a "
        f"PYSKL file's keys are strings), found {found}: refusing a hash-collision bomb"
    )


def _resolve(value: Any, done: dict[int, Any]) -> Any:
    kind = type(value)
    if kind is ArrayStub:
        return value.array
    if kind is DtypeStub:
        return value.dtype
    if kind is Payload:  # copied out once, however often it is referenced
        key = id(value)
        if key not in done:
            done[key] = value.value()
        return done[key]
    if kind is not list and kind is not dict and kind is not tuple and kind is not OrderedDict:
        return value  # scalars, strings, arrays; sets hold only plain keys
    key = id(value)
    if key in done:
        return done[key]
    done[key] = value  # a container reached again while inside it (a cycle) stays as it is
    if kind is tuple:
        items = [_resolve(v, done) for v in value]
        if any(a is not b for a, b in zip(items, value, strict=True)):
            value = done[key] = tuple(items)
    elif kind is list:
        last = last_resolved = None  # one value referenced again and again: resolved once
        for i, v in enumerate(value):
            if v is last:
                value[i] = last_resolved
            elif type(v) in _CONTAINERS_OR_STUBS:
                last, last_resolved = v, _resolve(v, done)
                value[i] = last_resolved
    else:
        for k, v in value.items():
            if type(v) in _CONTAINERS_OR_STUBS:
                value[k] = _resolve(v, done)
    return value


_CONTAINERS_OR_STUBS = frozenset({list, dict, tuple, OrderedDict, ArrayStub, DtypeStub, Payload})
