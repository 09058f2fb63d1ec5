"""The restricted unpickler: plain containers and numpy arrays, within bounds set by the file.

A pickle is a program for a small stack machine, and the UCF101 file comes from the internet.
It runs here on Python's pure-Python unpickler, so that every instruction passes through code
that can refuse it, under rules no real PYSKL file comes near:

- globals: only those of `pipeline.files.pickled_arrays`, which accept only what numpy and pickle
  themselves write (plain number arrays that carry their data, latin-1 text, bytes());
- containers nest at most MAX_DEPTH deep (deeper ones crash the interpreter when hashed), at
  most OPEN_LIMIT of them may wait empty to be filled (nesting built from the top down), and
  none holds more than ELEMENTS_BASE + ELEMENTS_PER_BYTE * (file size) elements, every
  reference to a shared one counted in full (a "billion laughs" pickle is a few hundred bytes
  of such references);
- no length field may ask for more bytes than the whole file holds, so what a pickle can make
  the reader allocate is bounded by the file's size.
"""

from __future__ import annotations

import pickle
import struct
import warnings
from collections.abc import Callable, Iterable
from typing import Any, BinaryIO

from pipeline.files.pickled_arrays import Rebuilder, Refused, clip, describe

MAX_DEPTH = 100  # a PYSKL file nests 4 deep: {"annotations": [{"img_shape": (h, w)}]}
OPEN_LIMIT = 10_000  # a PYSKL file has a few containers open at once
ELEMENTS_BASE = 100_000
ELEMENTS_PER_BYTE = 4  # the real files hold about 0.002 elements per byte
ALLOWED = "only numpy arrays and plain containers are allowed"

__all__ = ["RestrictedUnpickler", "Refused", "clip"]


class _Dispatch(dict):
    def __missing__(self, code: int) -> Any:
        raise Refused(f"invalid load key, {bytes([code])!r}")


class RestrictedUnpickler(pickle._Unpickler):
    """Builds plain containers and numpy arrays from `handle`, a file of `size` bytes."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        super().__init__(handle, encoding="latin1")
        self.handle, self.size = handle, size
        self.max_elements = ELEMENTS_BASE + ELEMENTS_PER_BYTE * size
        # id(container) -> [depth, elements (shared ones in full), placed in another, open].
        # Every container is registered as it is made, so a reused id is overwritten first.
        self._nodes: dict[int, list[Any]] = {}
        self._open = 0
        self._rebuilder = Rebuilder(size)
        self._callables = {id(f) for f in self._rebuilder.globals.values() if callable(f)}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._rebuilder.globals[module, name]
        except KeyError:
            name = clip(f"{module}.{name}")
            raise Refused(f"refused to load global {name} ({ALLOWED})") from None

    def load(self) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a warning from numpy would be a second line
            try:
                data = super().load()
            except (IndexError, struct.error):  # an empty stack, or a field cut short
                if self._at_end():
                    raise EOFError from None
                raise Refused("unpickling stack underflow (a corrupt pickle)") from None
        self._rebuilder.finish()
        return data

    def _at_end(self) -> bool:
        frame = self._unframer.current_frame
        return self.handle.tell() >= self.size and not (frame and frame.read(1))

    def load_mark(self) -> None:
        if len(self.metastack) >= MAX_DEPTH:  # each open MARK is a container being built
            raise Refused(self._too_deep())
        super().load_mark()

    def pop_mark(self) -> list[Any]:
        if not self.metastack:
            raise Refused("could not find MARK")
        return super().pop_mark()

    # --- bounds on containers -------------------------------------------------------------

    def _too_deep(self) -> str:
        return (
            f"containers nested more than {MAX_DEPTH} deep (a PYSKL file nests 4 deep): "
            "refusing a pickle bomb"
        )

    def _account(self, node: list[Any], items: Iterable[Any]) -> None:
        """Add `items` to a container's node: its depth and its elements, shared ones in full."""
        nodes, depth, elements = self._nodes, node[0], node[1]
        for item in items:
            child = nodes.get(id(item))
            if child is None:  # a number, string, array: no container
                elements += 1
                continue
            if child[3]:
                child[3] = False
                self._open -= 1
            child[2] = True
            elements += child[1]
            if child[0] >= depth:
                depth = child[0] + 1
        if depth > MAX_DEPTH:
            raise Refused(self._too_deep())
        if elements > self.max_elements:
            raise Refused(
                f"a container holds more than {self.max_elements:,} elements, counting every "
                f"reference to a shared one ({ELEMENTS_BASE:,} + {ELEMENTS_PER_BYTE} per byte "
                f"of this {self.size:,}-byte file): refusing a 'billion laughs' pickle bomb"
            )
        node[0], node[1] = depth, elements

    def _made(self, container: Any, items: Iterable[Any] = ()) -> Any:
        node = [1, 1, False, False]
        self._account(node, items)
        self._nodes[id(container)] = node
        if not container and isinstance(container, list | dict | set):
            node[3] = True
            self._open += 1
            if self._open > OPEN_LIMIT:
                raise Refused(
                    f"more than {OPEN_LIMIT:,} empty containers wait to be filled (nesting built "
                    "from the top down; a PYSKL file has a few open at once): refusing a pickle "
                    "bomb"
                )
        return container

    def _fill(self, kind: type, op: str, items: Iterable[Any]) -> Any:
        """The container on top of the stack, checked before `items` go into it."""
        target = self.stack[-1]
        if not isinstance(target, kind):
            raise Refused(f"{op} adds items to {describe(target)}, not to a {kind.__name__}")
        node = self._nodes.setdefault(id(target), [1, 1, False, False])
        if node[2]:
            raise Refused(
                f"{op} changes a {type(target).__name__} already placed inside another "
                "container, which no pickler writes (a cycle or a hidden bomb)"
            )
        if node[3]:
            node[3] = False
            self._open -= 1
        self._account(node, items)
        return target

    def _load_tuple(self) -> None:
        items = self.pop_mark()
        self.append(self._made(tuple(items), items))

    def _load_tuple_n(self, n: int) -> None:
        items = self.stack[-n:]
        if len(items) < n:
            raise IndexError
        self.stack[-n:] = [self._made(tuple(items), items)]

    def _load_list(self) -> None:
        items = self.pop_mark()
        self.append(self._made(items, items))

    def _load_dict(self) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise Refused("DICT needs key-value pairs, found an odd number of items")
        self.append(self._made(dict(zip(items[::2], items[1::2], strict=True)), items))

    def _load_frozenset(self) -> None:
        items = self.pop_mark()
        self.append(self._made(frozenset(items), items))

    def _load_append(self) -> None:
        value = self.stack.pop()
        self._fill(list, "APPEND", (value,)).append(value)

    def _load_appends(self) -> None:
        items = self.pop_mark()
        self._fill(list, "APPENDS", items).extend(items)

    def _load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._fill(dict, "SETITEM", (key, value))[key] = value

    def _load_setitems(self) -> None:
        items = self.pop_mark()
        if len(items) % 2:
            raise Refused("SETITEMS needs key-value pairs, found an odd number of items")
        self._fill(dict, "SETITEMS", items).update(zip(items[::2], items[1::2], strict=True))

    def _load_additems(self) -> None:
        items = self.pop_mark()
        self._fill(set, "ADDITEMS", items).update(items)

    # --- calls and states -----------------------------------------------------------------

    def _load_class_instance(self) -> None:
        raise Refused(f"building an instance of a class (INST, OBJ, NEWOBJ): {ALLOWED}")

    def _load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if id(func) not in self._callables:
            raise Refused(f"REDUCE calls {describe(func)}, which is not an allowed function")
        if not isinstance(args, tuple):
            raise Refused(f"REDUCE needs a tuple of arguments, found {describe(args)}")
        result = func(*args)
        if isinstance(result, dict):  # OrderedDict(pairs)
            self._made(result, args)
        self.stack[-1] = result

    def _load_build(self) -> None:
        state = self.stack.pop()
        target = self.stack[-1]
        if not self._rebuilder.build(target, state):
            raise Refused(f"BUILD sets the state of {describe(target)}: {ALLOWED}")

    # --- length fields: nothing larger than the file is read or allocated -----------------

    def _length(self, op: str, n: int) -> int:
        if not 0 <= n <= self.size:
            raise Refused(
                f"{op} asks for {n:,} bytes, but the whole file holds {self.size:,}: truncated or "
                "corrupt (nothing larger than the file is allocated)"
            )
        return n

    def _load_frame(self) -> None:
        (n,) = _LENGTHS["<Q"].unpack(self.read(8))
        if self._length("FRAME", n) > self.size - self.handle.tell():
            raise EOFError
        self._unframer.load_frame(n)


_LENGTHS = {fmt: struct.Struct(fmt) for fmt in ("<i", "<I", "<Q")}


def _sized(op: str, fmt: str, make: Callable[[Any, bytes], Any]) -> Callable[[Any], None]:
    """The loader of an opcode whose data follows a length field, checked before reading."""
    length = _LENGTHS[fmt]

    def load(self: RestrictedUnpickler) -> None:
        (n,) = length.unpack(self.read(length.size))
        data = self.read(self._length(op, n))
        if len(data) < n:
            raise EOFError
        self.append(make(self, data))

    return load


def _text(self: Any, data: bytes) -> str:
    return str(data, "utf-8", "surrogatepass")


# A copy of the pure-Python unpickler's table (never that table itself), with these entries.
_dispatch = RestrictedUnpickler.dispatch = _Dispatch(RestrictedUnpickler.dispatch)
for _op, _load in {
    pickle.TUPLE: RestrictedUnpickler._load_tuple,
    pickle.TUPLE1: lambda self: self._load_tuple_n(1),
    pickle.TUPLE2: lambda self: self._load_tuple_n(2),
    pickle.TUPLE3: lambda self: self._load_tuple_n(3),
    pickle.EMPTY_LIST: lambda self: self.append(self._made([])),
    pickle.EMPTY_DICT: lambda self: self.append(self._made({})),
    pickle.EMPTY_SET: lambda self: self.append(self._made(set())),
    pickle.LIST: RestrictedUnpickler._load_list,
    pickle.DICT: RestrictedUnpickler._load_dict,
    pickle.FROZENSET: RestrictedUnpickler._load_frozenset,
    pickle.APPEND: RestrictedUnpickler._load_append,
    pickle.APPENDS: RestrictedUnpickler._load_appends,
    pickle.SETITEM: RestrictedUnpickler._load_setitem,
    pickle.SETITEMS: RestrictedUnpickler._load_setitems,
    pickle.ADDITEMS: RestrictedUnpickler._load_additems,
    pickle.MARK: RestrictedUnpickler.load_mark,
    pickle.REDUCE: RestrictedUnpickler._load_reduce,
    pickle.BUILD: RestrictedUnpickler._load_build,
    pickle.INST: RestrictedUnpickler._load_class_instance,
    pickle.OBJ: RestrictedUnpickler._load_class_instance,
    pickle.NEWOBJ: RestrictedUnpickler._load_class_instance,
    pickle.NEWOBJ_EX: RestrictedUnpickler._load_class_instance,
    pickle.FRAME: RestrictedUnpickler._load_frame,
    pickle.BINSTRING: _sized("BINSTRING", "<i", lambda self, data: self._decode_string(data)),
    pickle.BINBYTES: _sized("BINBYTES", "<I", lambda self, data: data),
    pickle.BINBYTES8: _sized("BINBYTES8", "<Q", lambda self, data: data),
    pickle.BYTEARRAY8: _sized("BYTEARRAY8", "<Q", lambda self, data: bytearray(data)),
    pickle.BINUNICODE: _sized("BINUNICODE", "<I", _text),
    pickle.BINUNICODE8: _sized("BINUNICODE8", "<Q", _text),
    pickle.LONG4: _sized("LONG4", "<i", lambda self, data: pickle.decode_long(data)),
}.items():
    _dispatch[_op[0]] = _load
del _dispatch, _op, _load
