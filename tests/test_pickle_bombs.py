"""Pickle bombs and arrays without their data: refused in one line, before they cost anything.

Each row of HOSTILE builds a small valid dataset with one field replaced by a hostile value,
written at the opcode level where Python's pickler could not make it (a list nested 10**6 deep,
a "billion laughs" of memo references, numpy calls numpy itself never writes). The extract
stage must stop on it with exit 2 and exactly the expected line; the list nested 10**6 deep,
which used to end in a RecursionError traceback, also runs as a real process.
"""

from __future__ import annotations

import codecs
import io
import pickle
import struct
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from conftest import call_stage, error_line, make_dataset, run_stage, write_params

from pipeline.core.errors import PipelineError
from pipeline.files import pklio, unpickler

RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's _reconstruct, under the name numpy pickles
KEYPOINT = (1, 5_000_000, 17, 2)  # 340 MB of float16 declared by a pickle of a few KB
N = 10**6


class Raw:
    """Pickled as these opcodes, verbatim; they push exactly one object (or are refused first)."""

    def __init__(self, code: bytes) -> None:
        self.code = code


class Reduce:
    """Pickled as func(*args), then BUILD with `state` if given: any call, as a pickle can."""

    def __init__(self, func: Any, args: tuple[Any, ...], state: Any = None) -> None:
        self.func, self.args, self.state = func, args, state

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args) if self.state is None else (self.func, self.args, self.state)


class RawPickler(pickle._Pickler):  # the pure-Python pickler lets Raw be written as is
    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[Raw] = lambda self, obj: self.write(obj.code)


def slot(k: int) -> bytes:
    return struct.pack("<I", 100_000 + k)  # memo slots far above the ones the pickler uses


def laughs(levels: int = 30, width: int = 10, fill_first: bool = False) -> Raw:
    """A list of `width` references to a list of `width` references ... `levels` deep: 10**30
    elements from about 1.6 KB. With `fill_first`, the innermost list is filled only after it
    was placed in the others (which would hide the size from a count made when placing)."""
    code = b"]r" + slot(0)
    for k in range(1, levels + 1):
        code += b"0](" + (b"j" + slot(k - 1)) * width + b"er" + slot(k)
    if fill_first:
        code += b"j" + slot(0) + b"Na0"  # [].append(None), then drop it: the top is level 30
    return Raw(code)


def built(shape: tuple[int, ...], dtype: np.dtype, data: Any) -> Reduce:
    """An array as numpy pickles one: an empty placeholder, then BUILD with this state."""
    return Reduce(RECONSTRUCT, (np.ndarray, (0,), b"b"), (1, shape, dtype, False, data))


def dataset(field: str, value: Any) -> dict[str, Any]:
    """8 valid clips; the first gets `value` as `field` (a new key is an extra field)."""
    data = make_dataset(labels=(0, 1), groups=range(1, 5), test_groups=(1,), clips_per_group=1)
    data["annotations"][0][field] = value
    return data


HOSTILE_STATE = (3, "|", None, ("a",), {"a": (np.dtype("f8"), 0)}, 8, 1, 0)  # a struct dtype
FLAT = "only numpy arrays and plain containers are allowed"
DEEP = "containers nested more than 100 deep (a PYSKL file nests 4 deep): refusing a pickle bomb"
TOO_BIG = (
    "a numpy array of shape (1, 5000000, 17, 2) and dtype float16 takes 340,000,000 bytes, more "
    "than this {size:,}-byte file holds (an array must carry its data, so what a pickle "
    "allocates is bounded by its file size)"
)
HOSTILE: dict[str, tuple[Callable[[], Any], str]] = {
    "list nested 10**6 deep, top down": (
        lambda: dataset("img_shape", Raw(b"]" * N + b"a" * (N - 1))),
        "more than 10,000 empty containers wait to be filled (nesting built from the top down; "
        "a PYSKL file has a few open at once): refusing a pickle bomb",
    ),
    "tuple nested 10**6 deep, bottom up": (
        lambda: dataset("img_shape", Raw(b"]" + b"\x85" * N)),
        DEEP,
    ),
    "dict key nested 10**6 deep (crashed CPython when hashed)": (
        lambda: dataset("extra", {Raw(b")" + b"\x85" * N): 1}),
        DEEP,
    ),
    "MARK nested 10**6 deep": (lambda: dataset("img_shape", Raw(b"(" * N)), DEEP),
    "billion laughs": (
        lambda: dataset("total_frames", laughs()),
        "a container holds more than {limit:,} elements, counting every reference to a shared "
        "one (100,000 + 4 per byte of this {size:,}-byte file): refusing a 'billion laughs' "
        "pickle bomb",
    ),
    "billion laughs filled after placing": (
        lambda: dataset("total_frames", laughs(levels=4, fill_first=True)),
        "APPEND changes a list already placed inside another container, which no pickler "
        "writes (a cycle or a hidden bomb)",
    ),
    "keypoint reconstructed without data, 340 MB": (
        lambda: dataset("keypoint", Reduce(RECONSTRUCT, (np.ndarray, KEYPOINT, "f2"))),
        TOO_BIG,
    ),
    "keypoint reconstructed without data, small": (
        lambda: dataset("keypoint", Reduce(RECONSTRUCT, (np.ndarray, (1, 4, 17, 2), "f2"))),
        "a numpy array of shape (1, 4, 17, 2) and dtype float16 is reconstructed but never "
        "given its data (no BUILD): it would be 272 bytes of uninitialised memory",
    ),
    "keypoint state declaring 340 MB": (
        lambda: dataset("keypoint", built(KEYPOINT, np.dtype("f2"), b"\0" * 8)),
        TOO_BIG,
    ),
    "keypoint state with too little data": (
        lambda: dataset("keypoint", built((1, 4, 17, 2), np.dtype("f2"), b"ab")),
        "a numpy array of shape (1, 4, 17, 2) and dtype float16 needs 272 bytes of data but "
        "carries 2",
    ),
    "object array (a short state list crashed numpy)": (
        lambda: dataset("keypoint", built((10**6,), np.dtype(object), [1])),
        "numpy.dtype: dtype object is not a plain number type (bool, int, uint, float or complex)",
    ),
    "numpy.ndarray called for uninitialised memory": (
        lambda: dataset("keypoint", Reduce(np.ndarray, (KEYPOINT, "f2"))),
        "REDUCE calls numpy.ndarray, which is not an allowed function",
    ),
    "numpy.ndarray built by NEWOBJ": (
        lambda: dataset("keypoint", Raw(b"cnumpy\nndarray\n(K\x05t\x81")),
        f"building an instance of a class (INST, OBJ, NEWOBJ): {FLAT}",
    ),
    "bytes(10**10)": (
        lambda: dataset("keypoint", Reduce(bytes, (10**10,))),
        "bytes() may only be called without arguments (an empty bytes)",
    ),
    "_codecs.encode doubling with hex": (
        lambda: dataset("keypoint", Reduce(codecs.encode, (b"x" * 99, "hex"))),
        "_codecs.encode may only turn latin-1 text into bytes",
    ),
    "a length field of 10**12 bytes": (
        lambda: dataset("keypoint", Raw(b"\x8e" + struct.pack("<Q", 10**12))),
        "BINBYTES8 asks for 1,000,000,000,000 bytes, but the whole file holds {size:,}: "
        "truncated or corrupt (nothing larger than the file is allocated)",
    ),
    "a dtype state numpy never writes": (
        lambda: dataset("keypoint", Reduce(np.dtype, ("f2", False, True), HOSTILE_STATE)),
        "the state of numpy dtype float16 is not the one numpy writes for it",
    ),
}


def write_hostile(name: str, folder: Any) -> tuple[Any, str]:
    """Write HOSTILE[name] as folder/data.pkl (protocol 2, as PYSKL's files are); return the
    path and the expected message."""
    build, expected = HOSTILE[name]
    buffer = io.BytesIO()
    RawPickler(buffer, protocol=2).dump(build())
    path = folder / "data.pkl"
    path.write_bytes(buffer.getvalue())
    size = len(buffer.getvalue())
    limit = unpickler.ELEMENTS_BASE + unpickler.ELEMENTS_PER_BYTE * size
    return path, expected.format(size=size, limit=limit)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_extract_refuses_each_hostile_pickle_in_one_line(tmp_path, name):
    _, expected = write_hostile(name, tmp_path)
    write_params(tmp_path, {"data.pkl": "data.pkl"})
    result = call_stage("extract", tmp_path)
    assert error_line(result) == f"error: data.pkl: not a usable pickle: {expected}"
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.pkl", "params.yaml"]


def test_a_bomb_that_crashed_is_one_line_in_a_real_process(tmp_path):
    _, expected = write_hostile("list nested 10**6 deep, top down", tmp_path)
    write_params(tmp_path, {"data.pkl": "data.pkl"})
    result = run_stage("extract", tmp_path, timeout=60)
    assert "Traceback" not in result.stderr
    assert error_line(result) == f"error: data.pkl: not a usable pickle: {expected}"


def test_the_real_pickler_never_trips_the_bounds_on_a_large_flat_file(tmp_path):
    """Far more clips, tuples and shared references than a PYSKL file has, all within bounds."""
    data = make_dataset(labels=range(8), groups=range(1, 26), clips_per_group=4, frames=2)
    shape = (240, 320)
    for ann in data["annotations"]:
        ann["img_shape"] = ann["original_shape"] = shape  # one tuple shared by 800 clips
    data["pairs"] = tuple((i, str(i)) for i in range(20_000))  # 20,000 tuples on one MARK
    data["empty"] = [[] for _ in range(5_000)]  # empty lists, placed as they are made
    path = tmp_path / "big.pkl"
    for protocol in (0, 2, 5):
        path.write_bytes(pickle.dumps(data, protocol=protocol))
        loaded = pklio.load_pickle(path)
        assert loaded["pairs"] == data["pairs"] and loaded["empty"] == data["empty"]
        assert len(loaded["annotations"]) == 800


def nested(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


def shared(levels: int) -> list[Any]:
    value: list[Any] = [0]
    for _ in range(levels):
        value = [value] * 10
    return value


@pytest.mark.parametrize(
    ("make", "shown"),
    [
        (lambda: nested(10**5), "[[[[...]]]]"),
        (lambda: shared(30), "[[[[...], [...], [...], [...], ...], [[...], [...], [...]..."),
        (lambda: 2**100_000, "<int of 100001 bits>"),
        (lambda: -(2**64), "<int of 65 bits>"),
        (lambda: "x" * N, "'" + "x" * 56 + "..."),
        (lambda: (240,), "(240,)"),
        (lambda: {"a": 1.5, "b": None}, "{'a': 1.5, 'b': None}"),
        (lambda: np.zeros((2, 3), np.float16), "array of shape (2, 3) and dtype float16"),
        (lambda: object(), "<object>"),
    ],
    ids=[
        "deep",
        "laughs",
        "huge int",
        "int beyond int64",
        "long str",
        "tuple",
        "dict",
        "array",
        "object",
    ],
)
def test_show_is_bounded_on_any_value(make, shown):
    value = make()
    assert pklio._show(value) == shown
    ann = dataset("total_frames", value)["annotations"][0]
    with pytest.raises(PipelineError) as excinfo:
        pklio.check_annotation(ann, "f.pkl", 0)
    assert str(excinfo.value) == (
        f"f.pkl: clip 'v_ApplyEyeMakeup_g01_c01': total_frames must be an integer >= 0, "
        f"found {shown}"
    )
