"""The restricted unpickler: plain containers and numpy arrays, within bounds set by the file.

A pickle is a program for a small stack machine, and the UCF101 file comes from the internet.
It is read in two passes. First a scan walks the instructions without building anything (the
large byte strings that hold the arrays are skipped, not read) and refuses, under rules no real
PYSKL file comes near:

- more than OPS_BASE + one per OPS_BYTES bytes of instructions (what the scan and the load cost
  is bounded by the file's size), or a memo index beyond that same number;
- globals other than those of `pipeline.files.pickled_arrays`, calls (REDUCE) of anything else,
  and BUILD on anything but the arrays and dtypes those made; building instances of classes;
- containers nested more than MAX_DEPTH deep (deeper ones crash the interpreter when hashed),
  more than OPEN_LIMIT empty ones waiting to be filled (nesting built from the top down), and
  any holding more than ELEMENTS_BASE + ELEMENTS_PER_BYTE * (file size) elements, every
  reference to a shared one counted in full (a "billion laughs" pickle is a few hundred bytes
  of such references);
- dict keys and set items other than strings, bytes, None, bools and 64-bit integers (tuples,
  floats and large integers hash slowly or can be made to share one hash: quadratic inserts);
- a length field asking for more bytes than the file holds.

Then C's unpickler (`_pickle`) loads the file at full speed, its `find_class` giving the same
checked callables, which refuse at once anything numpy itself would not write and bound what
they copy by the file's size (see `pickled_arrays`). The scan models exactly what C's unpickler
will do (the memo's numbering, POP of a MARK), so that what it proved holds for the load.

When large byte strings (LAZY_MIN or more: the arrays' data) make up most of the file, C's
unpickler is given only the instructions, each such string replaced by a reference to where it
lies in the file, mapped copy-on-write: arrays are made on those pages, so a clip that is never
looked at is never read, and the load costs about what the instructions cost.
"""

from __future__ import annotations

import io
import mmap
import pickle
import struct
import warnings
from typing import Any, BinaryIO

from pipeline.files.pickled_arrays import (
    ALLOWED,
    Payload,
    Rebuilder,
    Refused,
    _unsafe_key,
    clip,
)

MAX_DEPTH = 100  # a PYSKL file nests 4 deep: {"annotations": [{"img_shape": (h, w)}]}
OPEN_LIMIT = 10_000  # a PYSKL file has a few containers open at once
ELEMENTS_BASE = 100_000
ELEMENTS_PER_BYTE = 4  # the real files hold about 0.002 elements per byte
# The real files hold one instruction per 400 (mime5) to 1,000 (UCF101) bytes; the scan takes
# about a microsecond per instruction, so this bounds it by about 1 s (the target's "+ 1 s": a
# small file of short clips, denser than any real one, still loads) + 4 ms per MB.
OPS_BASE = 1_000_000
OPS_BYTES = 256
# Byte strings this large (the arrays' data) are not read while loading: arrays are made on the
# file's pages, mapped, so that clips never looked at cost nothing.
LAZY_MIN = 4096

__all__ = ["RestrictedUnpickler", "Refused", "clip"]

# Kinds of what the scan puts on its stack in place of values. A string of up to 255 bytes is
# its position, negated (STACK_GLOBAL names a global with two of them); containers are nodes,
# [depth, elements (shared ones counted in full), placed in another, open, kind].
STR, BYTES, INT, NONE, BOOL = 1, 2, 3, 4, 5  # hash cheaply and never collide: keys allowed
FLOAT, BIGINT, BYTEARRAY, ARRAY_STUB, DTYPE_STUB, ARRAY, SCALAR, EMPTY_TUPLE = range(6, 14)
BIG_BYTES = 14  # left in the file while loading: not a key (it is not bytes until the end)
_NAMES = {
    STR: "a str",
    BYTES: "a bytes",
    INT: "an int",
    NONE: "a NoneType",
    BOOL: "a bool",
    FLOAT: "a float",
    BIGINT: "an int",
    BYTEARRAY: "a bytearray",
    ARRAY_STUB: "an array",
    DTYPE_STUB: "a dtype",
    ARRAY: "an array",
    SCALAR: "a numpy scalar",
    EMPTY_TUPLE: "a tuple",
    BIG_BYTES: f"a bytes of {LAZY_MIN:,} bytes or more",
}
_CONTAINERS = {
    "t": "a tuple",
    "l": "a list",
    "d": "a dict",
    "o": "an OrderedDict",
    "s": "a set",
    "f": "a frozenset",
}
_TYPES = {"l": "list", "d": "dict", "o": "OrderedDict", "s": "set"}
# what a call of each allowed global leaves on the stack
_RESULTS = {
    "_reconstruct": ARRAY_STUB,
    "dtype": DTYPE_STUB,
    "scalar": SCALAR,
    "_frombuffer": ARRAY,
    "encode": BYTES,
    "bytes": BYTES,
}

_U8, _I32, _U32, _U64 = (struct.Struct(f).unpack_from for f in ("<B", "<i", "<I", "<Q"))
_F64 = struct.Struct(">d").unpack_from


class _Global:
    __slots__ = ("name", "result")

    def __init__(self, name: str, result: int | str | None) -> None:
        self.name, self.result = name, result  # result None: may be named, not called


def _text(buf: memoryview, value: Any) -> str:
    """A string on the scan's stack: itself, or where SHORT_BINUNICODE left it (-position)."""
    if type(value) is str:
        return value
    if type(value) is int and value < 0:
        start = -value
        return str(buf[start + 1 : start + 1 + buf[start]], "utf-8", "surrogatepass")
    raise Refused("STACK_GLOBAL requires str")


def _describe(value: Any) -> str:
    if type(value) is int and value < 0:
        return "a str"
    if type(value) is list:
        return _CONTAINERS[value[4]]
    if type(value) is str:
        return "a str"
    if type(value) is _Global:
        return value.name
    return _NAMES.get(value, "a value")


class RestrictedUnpickler:
    """Builds plain containers and numpy arrays from `handle`, a file of `size` bytes."""

    def __init__(self, handle: BinaryIO, size: int) -> None:
        self.handle, self.size = handle, size
        self.max_elements = ELEMENTS_BASE + ELEMENTS_PER_BYTE * size
        self.max_ops = OPS_BASE + size // OPS_BYTES
        self._rebuilder = Rebuilder(size)
        self._globals: dict[tuple[str, str], _Global] = {}
        for module, name in self._rebuilder.globals:
            result = "o" if name == "OrderedDict" else _RESULTS.get(name)
            self._globals[module, name] = _Global(f"{module}.{name}", result)
        self._open = 0

    def load(self) -> Any:
        if self.size == 0:
            raise EOFError
        # A private (copy-on-write) mapping: arrays made from it are writable, as pickle's are,
        # and writing to them never reaches the file.
        mapped = mmap.mmap(self.handle.fileno(), 0, access=mmap.ACCESS_COPY)
        try:
            _advise(mapped, "MADV_RANDOM")  # the scan reads only the pages it looks at
            self._scan(mapped)
            _advise(mapped, "MADV_NORMAL")
            lazy = sum(end - start for start, end, kind in self._cuts if kind is not None)
            if lazy * 2 >= self.size:  # mostly large byte strings: leave them in the file
                source, payloads = self._without_payloads(mapped)
            else:
                self.handle.seek(0)
                source, payloads = self.handle, []
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a warning from numpy would be a second line
                data = _Loader(source, self._rebuilder.globals, payloads).load()
            self._rebuilder.finish()
            return self._rebuilder.resolve(data, bool(payloads))
        finally:
            self._cuts = []
            try:
                mapped.close()  # refused while arrays still use it; they keep it open
            except BufferError:
                pass

    def _without_payloads(self, mapped: mmap.mmap) -> tuple[io.BytesIO, list[Payload]]:
        """The instructions with each large byte string replaced by a reference (BININT i,
        BINPERSID) to a `Payload` that points into the mapping, and FRAMEs dropped: one frame
        around it all, so that C's unpickler reads it in one go."""
        view = memoryview(mapped)
        pieces: list[Any] = []
        payloads: list[Payload] = []
        previous = 0
        for start, end, kind in self._cuts:
            pieces.append(view[previous:start])
            if kind is not None:
                header = _HEADERS[kind]
                pieces.append(b"J" + struct.pack("<i", len(payloads)) + b"Q")
                payloads.append(Payload(mapped, start + header, end - start - header, kind))
            previous = end
        pieces.append(view[previous:])
        body = b"".join(pieces)
        del pieces  # slices of the view: released before it
        view.release()
        return io.BytesIO(b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body), payloads

    # --- the scan --------------------------------------------------------------------------

    def _scan(self, mapped: mmap.mmap) -> None:
        view = memoryview(mapped)
        try:
            self._run(mapped, view)
        finally:
            view.release()

    def _run(self, mapped: mmap.mmap, buf: memoryview) -> None:  # noqa: C901, PLR0912, PLR0915
        """One pass over the instructions; the common ones first, inline (this loop is the
        scan's whole cost)."""
        stack: list[Any] = []
        marks: list[int] = []
        memo: list[Any] = []
        filled = 0  # memo entries set (MEMOIZE's index), not counting unset gaps
        cuts = self._cuts = []  # (start, end, opcode): large byte strings and FRAMEs
        push, size, max_memo = stack.append, self.size, self.max_ops
        made, fill = self._made, self._fill
        pos = 0
        try:
            for _ in range(self.max_ops):
                op = buf[pos]
                pos += 1
                if op == 0x6A:  # LONG_BINGET
                    (i,) = _U32(buf, pos)
                    pos += 4
                    try:
                        value = memo[i]
                    except IndexError:
                        value = None
                    if value is None:
                        raise Refused(f"Memo value not found at index {i}")
                    push(value)
                elif op == 0x94:  # MEMOIZE: the next index is the number of entries, as in C
                    if filled == len(memo):
                        memo.append(stack[-1])
                        filled += 1
                    else:
                        filled += self._put(memo, filled, stack[-1], max_memo)
                elif op == 0x4B:  # BININT1
                    push(INT)
                    pos += 1
                elif op == 0x28:  # MARK
                    if len(marks) >= MAX_DEPTH:  # each open MARK is a container being built
                        raise Refused(_too_deep())
                    marks.append(len(stack))
                elif op == 0x68:  # BINGET
                    i = buf[pos]
                    pos += 1
                    try:
                        value = memo[i]
                    except IndexError:
                        value = None
                    if value is None:
                        raise Refused(f"Memo value not found at index {i}")
                    push(value)
                elif op == 0x8C:  # SHORT_BINUNICODE: where it is, decoded only if STACK_GLOBAL
                    push(-pos)  # needs it (negative: never one of the kinds above)
                    pos += 1 + buf[pos]
                elif op == 0x43:  # SHORT_BINBYTES
                    pos += 1 + buf[pos]
                    push(BYTES)
                elif op == 0x87 or op == 0x86 or op == 0x85:  # TUPLE3, TUPLE2, TUPLE1
                    n = op - 0x84
                    items = stack[-n:]
                    if len(items) < n:
                        raise IndexError
                    if list in map(type, items):
                        stack[-n:] = [made("t", items)]
                    else:  # numbers and strings only: depth 1, n + 1 elements
                        stack[-n:] = [[1, n + 1, False, False, "t"]]
                elif op == 0x74:  # TUPLE
                    if not marks:
                        raise Refused("could not find MARK")
                    k = marks.pop()
                    items = stack[k:]
                    del stack[k:]
                    if list in map(type, items) or len(items) >= self.max_elements:
                        push(made("t", items))
                    else:
                        push([1, len(items) + 1, False, False, "t"])
                elif op == 0x52:  # REDUCE
                    args = stack.pop()
                    stack[-1] = self._reduce(stack[-1], args)
                elif op == 0x62:  # BUILD
                    stack.pop()
                    if stack[-1] not in (ARRAY_STUB, DTYPE_STUB):
                        raise Refused(f"BUILD sets the state of {_describe(stack[-1])}: {ALLOWED}")
                elif op == 0x89 or op == 0x88:  # NEWFALSE, NEWTRUE
                    push(BOOL)
                elif op == 0x42:  # BINBYTES
                    (n,) = _U32(buf, pos)
                    pos += 4 + self._length("BINBYTES", n, pos + 4)
                    if n >= LAZY_MIN:
                        cuts.append((pos - n - 5, pos, 0x42))
                        push(BIG_BYTES)
                    else:
                        push(BYTES)
                elif op == 0x7D:  # EMPTY_DICT
                    push(made("d"))
                elif op == 0x75:  # SETITEMS
                    items = self._pop_mark(stack, marks)
                    if len(items) % 2:
                        raise Refused(
                            "SETITEMS needs key-value pairs, found an odd number of items"
                        )
                    _check_keys(items[::2], "a dict")
                    fill(stack, ("d", "o"), "SETITEMS", items)
                elif op == 0x95:  # FRAME
                    (n,) = _U64(buf, pos)
                    cuts.append((pos - 1, pos + 8, None))
                    pos += 8
                    if self._length("FRAME", n, pos) and pos + n > size:
                        raise EOFError
                elif op == 0x4D:  # BININT2
                    push(INT)
                    pos += 2
                elif op == 0x71:  # BINPUT
                    filled += self._put(memo, buf[pos], stack[-1], max_memo)
                    pos += 1
                elif op == 0x72:  # LONG_BINPUT
                    (i,) = _U32(buf, pos)
                    filled += self._put(memo, i, stack[-1], max_memo)
                    pos += 4
                elif op == 0x4A:  # BININT
                    push(INT)
                    pos += 4
                elif op == 0x4E:  # NONE
                    push(NONE)
                elif op == 0x5D:  # EMPTY_LIST
                    push(made("l"))
                elif op == 0x29:  # EMPTY_TUPLE
                    push(EMPTY_TUPLE)
                elif op == 0x61:  # APPEND
                    value = stack.pop()
                    fill(stack, ("l",), "APPEND", (value,))
                elif op == 0x65:  # APPENDS
                    fill(stack, ("l",), "APPENDS", self._pop_mark(stack, marks))
                elif op == 0x73:  # SETITEM
                    value = stack.pop()
                    key = stack.pop()
                    _check_keys((key,), "a dict")
                    fill(stack, ("d", "o"), "SETITEM", (key, value))
                elif op == 0x58:  # BINUNICODE
                    (n,) = _U32(buf, pos)
                    pos += 4 + self._length("BINUNICODE", n, pos + 4)
                    push(STR)
                elif op == 0x55:  # SHORT_BINSTRING (Python 2's str: latin-1 text here)
                    n = buf[pos]
                    push(str(buf[pos + 1 : pos + 1 + n], "latin1"))
                    pos += 1 + n
                elif op == 0x54:  # BINSTRING
                    (n,) = _I32(buf, pos)
                    pos += 4 + self._length("BINSTRING", n, pos + 4)
                    push(STR)
                elif op == 0x47:  # BINFLOAT
                    pos += 8
                    push(FLOAT)
                elif op == 0x8A:  # LONG1
                    n = buf[pos]
                    pos += 1 + n
                    push(INT if n <= 8 else BIGINT)
                elif op == 0x8B:  # LONG4
                    (n,) = _I32(buf, pos)
                    pos += 4 + self._length("LONG4", n, pos + 4)
                    push(INT if n <= 8 else BIGINT)
                elif op == 0x8E or op == 0x8D or op == 0x96:  # BINBYTES8, BINUNICODE8, BYTEARRAY8
                    (n,) = _U64(buf, pos)
                    name = {0x8E: "BINBYTES8", 0x8D: "BINUNICODE8", 0x96: "BYTEARRAY8"}[op]
                    pos += 8 + self._length(name, n, pos + 8)
                    if op != 0x8D and n >= LAZY_MIN:
                        cuts.append((pos - n - 9, pos, op))
                        push(BIG_BYTES)
                    else:
                        push({0x8E: BYTES, 0x8D: STR, 0x96: BYTEARRAY}[op])
                elif op == 0x93:  # STACK_GLOBAL
                    name = _text(buf, stack.pop())
                    push(self._global(_text(buf, stack.pop()), name))
                elif op == 0x63:  # GLOBAL
                    module, pos = self._line(mapped, pos)
                    name, pos = self._line(mapped, pos)
                    push(self._global(module, name))
                elif op == 0x30:  # POP: the top item, or the MARK when nothing is above it
                    if len(stack) > (marks[-1] if marks else 0):
                        stack.pop()
                    else:
                        self._pop_mark(stack, marks)
                elif op == 0x31:  # POP_MARK
                    self._pop_mark(stack, marks)
                elif op == 0x32:  # DUP
                    push(stack[-1])
                elif op == 0x6C:  # LIST
                    push(made("l", self._pop_mark(stack, marks)))
                elif op == 0x64:  # DICT
                    items = self._pop_mark(stack, marks)
                    if len(items) % 2:
                        raise Refused("DICT needs key-value pairs, found an odd number of items")
                    _check_keys(items[::2], "a dict")
                    push(made("d", items))
                elif op == 0x8F:  # EMPTY_SET
                    push(made("s"))
                elif op == 0x90:  # ADDITEMS
                    items = self._pop_mark(stack, marks)
                    _check_keys(items, "a set")
                    fill(stack, ("s",), "ADDITEMS", items)
                elif op == 0x91:  # FROZENSET
                    items = self._pop_mark(stack, marks)
                    _check_keys(items, "a set")
                    push(made("f", items))
                elif op == 0x67 or op == 0x70:  # GET, PUT (text)
                    text, pos = self._line(mapped, pos)
                    i = self._int(text, "memo index")
                    if op == 0x67:
                        push(_get(memo, i))
                    else:
                        filled += self._put(memo, i, stack[-1], max_memo)
                elif op == 0x49 or op == 0x4C:  # INT, LONG (text)
                    text, pos = self._line(mapped, pos)
                    digits = text.rstrip("L").lstrip("+-")
                    push(BOOL if text in ("00", "01") else INT if len(digits) <= 18 else BIGINT)
                elif op == 0x46:  # FLOAT (text)
                    _, pos = self._line(mapped, pos)
                    push(FLOAT)
                elif op == 0x53 or op == 0x56:  # STRING, UNICODE (text)
                    text, pos = self._line(mapped, pos)
                    push(text if len(text) <= 255 else STR)
                elif op == 0x80:  # PROTO
                    pos += 1
                elif op == 0x2E:  # STOP
                    if len(stack) <= (marks[-1] if marks else 0):
                        raise IndexError
                    return
                elif op in (0x69, 0x6F, 0x81, 0x92):  # INST, OBJ, NEWOBJ, NEWOBJ_EX
                    raise Refused(f"building an instance of a class (INST, OBJ, NEWOBJ): {ALLOWED}")
                elif op in (0x50, 0x51):  # PERSID, BINPERSID
                    raise Refused(f"a persistent id (PERSID): {ALLOWED}")
                elif op in (0x82, 0x83, 0x84):  # EXT1, EXT2, EXT4
                    raise Refused(f"a global from the extension registry (EXT): {ALLOWED}")
                elif op in (0x97, 0x98):  # NEXT_BUFFER, READONLY_BUFFER
                    raise Refused(f"an out-of-band buffer (NEXT_BUFFER): {ALLOWED}")
                else:
                    raise Refused(f"invalid load key, {bytes([op])!r}")
            raise Refused(
                f"more than {self.max_ops:,} instructions ({OPS_BASE:,} + 1 per {OPS_BYTES} bytes "
                f"of this {size:,}-byte file; a PYSKL file has one per 400 bytes or fewer): "
                "refusing a pickle bomb"
            )
        except (IndexError, struct.error):  # an empty stack, or a field cut short
            if pos >= size:
                raise EOFError from None
            raise Refused("unpickling stack underflow (a corrupt pickle)") from None

    # --- helpers of the scan ---------------------------------------------------------------

    def _length(self, op: str, n: int, end: int) -> int:
        if not 0 <= n <= self.size:
            raise Refused(
                f"{op} asks for {n:,} bytes, but the whole file holds {self.size:,}: truncated or "
                "corrupt (nothing larger than the file is allocated)"
            )
        if end + n > self.size:
            raise EOFError
        return n

    def _line(self, mapped: mmap.mmap, pos: int) -> tuple[str, int]:
        end = mapped.find(b"\n", pos)
        if end < 0:
            raise EOFError
        return str(mapped[pos:end], "latin1"), end + 1

    def _int(self, text: str, what: str) -> int:
        if not (text.isdigit() and len(text) <= 18):
            raise Refused(f"a {what} must be a small integer, found {clip(text, 40)!r}")
        return int(text)

    def _put(self, memo: list[Any], i: int, value: Any, limit: int) -> int:
        """Set memo entry `i`; 1 if it is a new entry (C's unpickler counts them), else 0."""
        if i >= len(memo):
            if i >= limit:
                raise Refused(
                    f"a memo index of {i:,} is beyond {limit:,} ({OPS_BASE:,} + 1 per "
                    f"{OPS_BYTES} bytes of this {self.size:,}-byte file): refusing a pickle bomb"
                )
            memo.extend([None] * (i + 1 - len(memo)))
        new = memo[i] is None
        memo[i] = value
        return int(new)

    def _pop_mark(self, stack: list[Any], marks: list[int]) -> list[Any]:
        if not marks:
            raise Refused("could not find MARK")
        k = marks.pop()
        items = stack[k:]
        del stack[k:]
        return items

    def _global(self, module: str, name: str) -> _Global:
        found = self._globals.get((module, name))
        if found is None:
            name = clip(f"{module}.{name}")
            raise Refused(f"refused to load global {name} ({ALLOWED})")
        return found

    def _reduce(self, func: Any, args: Any) -> Any:
        if type(func) is not _Global or func.result is None:
            raise Refused(f"REDUCE calls {_describe(func)}, which is not an allowed function")
        if args != EMPTY_TUPLE and not (type(args) is list and args[4] == "t"):
            raise Refused(f"REDUCE needs a tuple of arguments, found {_describe(args)}")
        if func.result == "o":
            return self._made("o", () if args == EMPTY_TUPLE else (args,))
        return func.result

    # --- bounds on containers -------------------------------------------------------------

    def _account(self, node: list[Any], items: Any) -> None:
        """Add `items` to a container's node: its depth and its elements, shared ones in full."""
        depth, elements = node[0], node[1]
        if list not in map(type, items):  # no containers: one element each
            elements += len(items)
            items = ()
        for child in items:
            if type(child) is not list:  # a number, string, array: no container
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
            raise Refused(_too_deep())
        if elements > self.max_elements:
            raise Refused(
                f"a container holds more than {self.max_elements:,} elements, counting every "
                f"reference to a shared one ({ELEMENTS_BASE:,} + {ELEMENTS_PER_BYTE} per byte "
                f"of this {self.size:,}-byte file): refusing a 'billion laughs' pickle bomb"
            )
        node[0], node[1] = depth, elements

    def _made(self, kind: str, items: Any = ()) -> list[Any]:
        node = [1, 1, False, False, kind]
        if items:
            self._account(node, items)
        elif kind in "ldos":  # an empty list, dict or set, to be filled
            node[3] = True
            self._open += 1
            if self._open > OPEN_LIMIT:
                raise Refused(
                    f"more than {OPEN_LIMIT:,} empty containers wait to be filled (nesting "
                    "built from the top down; a PYSKL file has a few open at once): refusing a "
                    "pickle bomb"
                )
        return node

    def _fill(self, stack: list[Any], kinds: tuple[str, ...], op: str, items: Any) -> None:
        """The container on top of the stack, checked before `items` go into it."""
        node = stack[-1]
        if type(node) is not list or node[4] not in kinds:
            raise Refused(f"{op} adds items to {_describe(node)}, not to a {_TYPES[kinds[0]]}")
        if node[2]:
            raise Refused(
                f"{op} changes a {_TYPES[node[4]]} already placed inside another "
                "container, which no pickler writes (a cycle or a hidden bomb)"
            )
        if node[3]:
            node[3] = False
            self._open -= 1
        self._account(node, items)


def _get(memo: list[Any], i: int) -> Any:
    if i < len(memo) and (value := memo[i]) is not None:
        return value
    raise Refused(f"Memo value not found at index {i}")


def _check_keys(keys: Any, where: str) -> None:
    for key in keys:
        if type(key) is not str and not (type(key) is int and key <= BOOL):
            raise Refused(_unsafe_key(where, _describe(key)))


def _too_deep() -> str:
    return (
        f"containers nested more than {MAX_DEPTH} deep (a PYSKL file nests 4 deep): "
        "refusing a pickle bomb"
    )


class _Loader(pickle.Unpickler):
    """C's unpickler, on a file the scan has passed; globals only from `allowed`, persistent
    ids only the references to `payloads` put in by `_without_payloads`."""

    def __init__(
        self, source: BinaryIO, allowed: dict[tuple[str, str], Any], payloads: list[Payload]
    ) -> None:
        super().__init__(source, encoding="latin1")
        self._allowed, self._payloads = allowed, payloads

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[module, name]
        except KeyError:
            name = clip(f"{module}.{name}")
            raise Refused(f"refused to load global {name} ({ALLOWED})") from None

    def persistent_load(self, pid: Any) -> Payload:
        return self._payloads[pid]


_HEADERS = {0x42: 5, 0x8E: 9, 0x96: 9}  # opcode and length field before a byte string's data


def _advise(mapped: mmap.mmap, advice: str) -> None:
    try:
        mapped.madvise(getattr(mmap, advice))
    except (AttributeError, OSError):  # not on every system; only an optimisation
        pass
