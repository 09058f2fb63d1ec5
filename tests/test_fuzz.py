"""Fuzzed input: malformed PYSKL pickles end in a clean result or one PipelineError line.

Hypothesis mutates a small valid dataset (wrong types, shapes and dtypes, NaN/inf, odd frame
counts, hostile frame_dir names, missing and extra keys, broken splits) and feeds it to the
checks of `pipeline.files.pklio` and to the extract stage function, in this process for speed. Every
example must end in a clean result or a one-line PipelineError; never another exception, never
a hang (each example runs under an alarm), never a file outside the stage's output folder.
A few fuzzed pickles also go through `python -m pipeline.extract` as a subprocess.
`FUZZ_SCALE=k` runs k times as many examples (a longer hunt than the suite's default).
"""

from __future__ import annotations

import contextlib
import copy
import os
import pickle
import pickletools
import random
import signal
import struct
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_dataset, run_stage, section, write_params, write_pkl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import extract
from pipeline.core.errors import PipelineError
from pipeline.dataset.subset import Subset
from pipeline.files import pklio

pytestmark = pytest.mark.slow  # stages in subprocesses or trained workspaces

EXAMPLE_SECONDS = 20  # an example running longer than this counts as a hang
SCALE = int(os.environ.get("FUZZ_SCALE", "1"))  # FUZZ_SCALE=20 for a long hunt
FIELDS = ("frame_dir", "label", "keypoint", "keypoint_score", "img_shape", "total_frames")
SUBSET_FILES = {"index.csv", "keypoints.npy", "scores.npy", "meta.json"}
ABS = "<absolute path in the sandbox>"  # replaced per example by a real absolute path
HOSTILE_NAMES = [
    "../../evil",
    "../evil",
    "a/../../evil",
    "/tmp/evil",
    ABS,
    "a/b",
    "a\\b",
    "..\\..\\evil",
    "a\x00b",
    "\x00",
    "ünïcødé_名前",
    "v_Evil_g02_c01/../../x",
    ".",
    "..",
    "",
    " ",
    "\r",
    "\n",
    "a\rb",
    "a\nb",
    "a,b",
    '"q"',
    "NA",
    "nan",
    "007",
    "v_123_g02_c01",
    "\u2028",
    "\t",
]


class Hang(BaseException):  # not an Exception: the loader's catch-all must not swallow it
    pass


@contextlib.contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def alarm(signum: int, frame: Any) -> None:
        raise Hang(f"an example ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def base_dataset() -> dict[str, Any]:
    """8 clips: labels 0 and 1, groups 1 (test) and 2-4 (train), 3-6 frames, one person."""
    return make_dataset(
        labels=(0, 1),
        groups=range(1, 5),
        test_groups=(1,),
        clips_per_group=1,
        frames=(3, 6),
        seed=7,
    )


BASE = base_dataset()
CFG = section("data")  # params.yaml's, typed


def assert_one_line(exc: PipelineError) -> str:
    text = str(exc)
    assert text and len(text.splitlines()) == 1 and "\n" not in text and "\r" not in text, text
    return text


# --- strategies ---------------------------------------------------------------------------------

DTYPES = [
    "float16",
    "float32",
    "float64",
    ">f4",
    "longdouble",
    "int8",
    "int64",
    "uint8",
    "bool",
    "object",
    "complex64",
    "U3",
]
SPECIAL = [0.0, -0.0, 1.0, -5.0, 0.5, 1e6, -1e6, 1e300, np.nan, np.inf, -np.inf]


@st.composite
def arrays(draw: st.DrawFn) -> np.ndarray:
    """Small arrays of any rank, dtype and content, including shapes close to a keypoint's."""
    shape = draw(
        st.one_of(
            st.lists(st.integers(0, 3), max_size=5).map(tuple),
            st.tuples(
                st.integers(0, 2),
                st.integers(0, 4),
                st.sampled_from([17, 18]),
                st.sampled_from([2, 3]),
            ),
            st.tuples(st.integers(0, 2), st.integers(0, 4), st.just(17)),
        )
    )
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    fill = draw(st.sampled_from(SPECIAL))
    if dtype.kind in "fc":
        with np.errstate(over="ignore"):
            return np.full(shape, fill, dtype)
    if dtype.kind == "O":
        return np.full(shape, draw(st.sampled_from([None, 1, "x", 2.5])), object)
    if dtype.kind == "U":
        return np.full(shape, "abc", dtype)
    if dtype.kind == "b":
        return np.full(shape, True, dtype)
    return np.full(shape, draw(st.integers(0, 100)), dtype)


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([0, -1, 1, 3, 2**31, 2**63, 10**30]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.binary(max_size=6),
    st.sampled_from(
        [
            np.int64(4),
            np.int8(-1),
            np.uint64(2**64 - 1),
            np.float32(np.nan),
            np.float64(3.0),
            np.bool_(True),
            np.int32(240),
        ]
    ),
)
VALUES = st.one_of(
    SCALARS,
    arrays(),
    st.lists(SCALARS, max_size=3),
    st.tuples(SCALARS, SCALARS),
    st.dictionaries(st.text(max_size=3), SCALARS, max_size=2),
    st.sampled_from(
        [
            (240, 320),
            (0, 320),
            (-240, 320),
            (240.0, 320.0),
            (240, 320, 3),
            [240, 320],
            np.array([240, 320]),
            (np.int64(240), np.int64(2**40)),
            (True, True),
        ]
    ),
)
NAMES = st.one_of(st.sampled_from(HOSTILE_NAMES), st.text(max_size=10))
INDEX = st.integers(0, len(BASE["annotations"]) - 1)
SPLIT_KEYS = st.sampled_from(["train1", "test1", "train2", "other"])

CLIP_MUTATIONS = st.one_of(
    st.tuples(st.just("set"), INDEX, st.sampled_from(FIELDS), VALUES),
    st.tuples(st.just("delete"), INDEX, st.sampled_from(FIELDS)),
    st.tuples(st.just("extra"), INDEX, st.text(max_size=6), VALUES),
    st.tuples(st.just("not a dict"), INDEX, VALUES),
    st.tuples(st.just("rename"), INDEX, NAMES, st.booleans()),
    st.tuples(
        st.just("astype"),
        INDEX,
        st.sampled_from(["keypoint", "keypoint_score"]),
        st.sampled_from(DTYPES),
    ),
    st.tuples(
        st.just("poison"),
        INDEX,
        st.sampled_from(["keypoint", "keypoint_score"]),
        st.integers(0, 10**6),
        st.sampled_from(SPECIAL),
    ),
    st.tuples(st.just("frames"), INDEX, st.integers(0, 8), st.sampled_from([0, 0, 1, -1, 10**9])),
    st.tuples(st.just("persons"), INDEX, st.integers(0, 3)),
    st.tuples(
        st.just("total_frames"),
        INDEX,
        st.sampled_from([-1, -(10**12), 10**12, 2**63, 0, 3.0, np.int64(5), np.float64(5)]),
    ),
    st.tuples(
        st.just("label"),
        INDEX,
        st.sampled_from([-1, 2, 100, 2**40, 10**30, 1.0, True, "0", np.int8(1), None]),
    ),
)
FILE_MUTATIONS = st.one_of(
    st.tuples(st.just("split set"), SPLIT_KEYS, VALUES),
    st.tuples(st.just("split add"), SPLIT_KEYS, st.one_of(INDEX, NAMES, SCALARS)),
    st.tuples(st.just("split drop"), SPLIT_KEYS),
    st.tuples(st.just("top"), st.sampled_from(["annotations", "split", "extra"]), VALUES),
    st.tuples(st.just("top drop"), st.sampled_from(["annotations", "split"])),
    st.tuples(st.just("whole"), VALUES),
)
# Mostly clip-level damage (which reaches the deeper checks), sometimes a broken file layout.
MUTATIONS = st.integers(0, 7).flatmap(lambda k: FILE_MUTATIONS if k == 0 else CLIP_MUTATIONS)


def apply(mutations: list[tuple], abs_name: str) -> Any:
    """A deep copy of BASE with each mutation applied in order."""
    data: Any = copy.deepcopy(BASE)
    for op, *args in mutations:
        if not isinstance(data, dict):
            break
        splits, anns = data.get("split"), data.get("annotations")
        if op in ("whole", "top", "top drop"):
            if op == "whole":
                data = args[0]
            elif op == "top":
                data[args[0]] = args[1]
            else:
                data.pop(args[0], None)
            continue
        if op.startswith("split"):
            if not isinstance(splits, dict):
                continue
            key = args[0]
            if op == "split set":
                splits[key] = args[1]
            elif op == "split drop":
                splits.pop(key, None)
            elif isinstance(splits.get(key), list):
                item = args[1]
                if isinstance(item, int) and not isinstance(item, bool) and 0 <= item < 8:
                    item = BASE["annotations"][item]["frame_dir"]  # a duplicate or a leak
                splits[key].append(item)
            continue
        if not isinstance(anns, list) or not anns:
            continue
        i = args[0] % len(anns)
        ann = anns[i]
        if op == "not a dict":
            anns[i] = args[1]
            continue
        if not isinstance(ann, dict):
            continue
        if op == "set":
            ann[args[1]] = args[2]
        elif op == "delete":
            ann.pop(args[1], None)
        elif op == "extra":
            ann[args[1]] = args[2]
        elif op == "rename":
            new = abs_name if args[1] == ABS else args[1]
            old = ann.get("frame_dir")
            ann["frame_dir"] = new
            # keep the splits consistent; only a string name can be listed there (and `==` on
            # an array-valued frame_dir would be elementwise)
            if args[2] and isinstance(splits, dict) and isinstance(old, str):
                for members in splits.values():
                    if isinstance(members, list):
                        members[:] = [new if m == old else m for m in members]
        elif op == "total_frames":
            ann["total_frames"] = args[1]
        elif op == "label":
            ann["label"] = args[1]
        elif op in ("astype", "poison", "frames", "persons"):
            mutate_arrays(ann, op, args[1:])
    return data


def mutate_arrays(ann: dict[str, Any], op: str, args: list[Any]) -> None:
    kp, score = ann.get("keypoint"), ann.get("keypoint_score")
    if not isinstance(kp, np.ndarray) or not isinstance(score, np.ndarray):
        return
    if op == "astype":
        field, dtype = args
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # complex to real, overflow: meant to happen
            ann[field] = ann[field].astype(dtype)
    elif op == "poison":
        field, position, value = args
        array = ann[field]
        if array.size and array.dtype.kind == "f":
            with np.errstate(over="ignore"):
                array.reshape(-1)[position % array.size] = value
    elif op == "frames" and kp.ndim == 4 and score.ndim == 3:
        frames, delta = args
        reps = -(-frames // max(kp.shape[1], 1))
        ann["keypoint"] = np.concatenate([kp] * max(reps, 1), axis=1)[:, :frames]
        ann["keypoint_score"] = np.concatenate([score] * max(reps, 1), axis=1)[:, :frames]
        ann["total_frames"] = frames + delta
    elif op == "persons" and kp.ndim == 4 and score.ndim == 3 and kp.shape[0]:
        persons = args[0]
        ann["keypoint"] = np.concatenate([kp] * 3)[:persons]
        ann["keypoint_score"] = np.concatenate([score] * 3)[:persons]


CONFIGS = st.fixed_dictionaries(
    {
        "classes": st.sampled_from([[0, 1], "all", [1]]),
        "val_by": st.sampled_from(["group", "clip"]),
    }
)


# --- the checks of pklio ------------------------------------------------------------------------


@settings(
    max_examples=150 * SCALE,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(MUTATIONS, min_size=1, max_size=3), st.integers(0, 7))
def test_check_annotation_is_clean_or_one_line(mutations, position):
    data = apply(mutations, "/nonexistent/abs")
    anns = data.get("annotations") if isinstance(data, dict) else None
    ann = anns[position % len(anns)] if isinstance(anns, list) and anns else data
    with time_limit(EXAMPLE_SECONDS):
        try:
            persons = pklio.check_annotation(ann, "f.pkl", position)
        except PipelineError as exc:
            assert assert_one_line(exc).startswith("f.pkl: ")
            return
    # Accepted: a dict whose arrays agree with each other and hold only finite numbers.
    assert isinstance(persons, int) and persons >= 0
    kp, score = ann["keypoint"], ann["keypoint_score"]
    assert persons == kp.shape[0] and score.shape == kp.shape[:3] and kp.shape[2:] == (17, 2)
    if persons:
        assert kp.shape[1] == ann["total_frames"] > 0
        assert np.isfinite(kp).all() and np.isfinite(score).all()
        # what the subset stores (float16) must stay finite too
        assert np.isfinite(kp.astype(np.float16)).all(), "coordinates overflow float16"
        assert np.isfinite(score.astype(np.float16)).all(), "scores overflow float16"


@settings(
    max_examples=150 * SCALE,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(MUTATIONS, min_size=1, max_size=3))
def test_check_dataset_is_clean_or_one_line(mutations):
    data = apply(mutations, "/nonexistent/abs")
    with time_limit(EXAMPLE_SECONDS):
        try:
            splits, annotations = pklio.check_dataset(data, "f.pkl")
        except PipelineError as exc:
            assert assert_one_line(exc).startswith("f.pkl: ")
            return
    assert all(isinstance(k, str) for k in splits)
    assert all(isinstance(n, str) for members in splits.values() for n in members)
    assert isinstance(annotations, list)


@settings(max_examples=60 * SCALE, deadline=None, database=None)
@given(
    st.sampled_from([2, 4, 5]),
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete", "truncate"]),
            st.integers(0, 10**6),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    ),
)
def test_corrupted_pickle_bytes_are_clean_or_one_line(tmp_path_factory, protocol, edits):
    raw = bytearray(pickle.dumps(BASE, protocol=protocol))
    for kind, position, value in edits:
        at = position % len(raw)
        if kind == "flip":
            raw[at] ^= value or 1
        elif kind == "insert":
            raw.insert(at, value)
        elif kind == "delete":
            del raw[at]
        else:
            del raw[at:]
        if not raw:
            break
    path = tmp_path_factory.mktemp("bytes") / "data.pkl"
    path.write_bytes(bytes(raw))
    with time_limit(EXAMPLE_SECONDS):
        try:
            data = pklio.load_pickle(path)
            splits, annotations = pklio.check_dataset(data, str(path))
            for i, ann in enumerate(annotations):
                pklio.check_annotation(ann, str(path), i)
        except PipelineError as exc:
            assert assert_one_line(exc).startswith(f"{path}: ")


# --- mutated pickles: edits of whole instructions -------------------------------------------------


def instructions(data: Any, protocol: int) -> list[bytes]:
    """The instructions of `data` pickled, each with its argument bytes. FRAME headers are
    dropped (they are optional), so that an edit changes what the pickle does rather than only
    breaking a frame's length."""
    raw = pickle.dumps(data, protocol=protocol)
    ops = list(pickletools.genops(raw))
    ends = [pos for _, _, pos in ops[1:]] + [len(raw)]
    return [raw[pos:end] for (op, _, pos), end in zip(ops, ends, strict=True) if op.name != "FRAME"]


def mutation_base() -> dict[str, Any]:
    """BASE with a clip of zero persons (bytes() at protocols 0-2) and a numpy label (scalar)."""
    data = copy.deepcopy(BASE)
    first = data["annotations"][0]
    first["keypoint"], first["keypoint_score"] = first["keypoint"][:0], first["keypoint_score"][:0]
    data["annotations"][1]["label"] = np.int64(1)
    return data


PROTOCOLS = (0, 1, 2, 4, 5)
INSTRUCTIONS = {protocol: instructions(mutation_base(), protocol) for protocol in PROTOCOLS}
Q = struct.Struct("<Q").pack
# Instructions to insert: stack and memo shuffles, container builders, calls, lengths far beyond
# the file, and the globals (allowed or not) a pickle can name.
INSERTS = [
    b"(",
    b"0",
    b"1",
    b"2",
    b"N",
    b"\x88",
    b")",
    b"]",
    b"}",
    b"\x8f",
    b"t",
    b"\x85",
    b"\x86",
    b"\x87",
    b"l",
    b"d",
    b"\x91",
    b"a",
    b"e",
    b"s",
    b"u",
    b"\x90",
    b"R",
    b"b",
    b"\x81",
    b"\x92",
    b"\x93",
    b".",
    b"\x94",
    b"h\x00",
    b"h\x05",
    b"j\xff\xff\xff\x7f",
    b"q\x03",
    b"r\xff\xff\x00\x00",
    b"K\x07",
    b"J\xff\xff\xff\xff",
    b"\x8a\x08" + b"\xff" * 8,
    b"\x8b\x40\x42\x0f\x00",
    b"\x8e" + Q(2**40),
    b"\x96" + Q(2**62),
    b"B\xff\xff\xff\x7f",
    b"\x95" + Q(2**33),
    b"X\x06\x00\x00\x00latin1",
    b"\x8c\x02f2",
    b"\x8c\x01O",
    b"C\x01b",
    b"V\\u0100\n",
    b"cnumpy\ndtype\n",
    b"cnumpy\nndarray\n",
    b"cnumpy.core.multiarray\n_reconstruct\n",
    b"cnumpy._core.multiarray\nscalar\n",
    b"cnumpy._core.numeric\n_frombuffer\n",
    b"c_codecs\nencode\n",
    b"c__builtin__\nbytes\n",
    b"ccollections\nOrderedDict\n",
    b"cos\nsystem\n",
    b"\x8c\x05numpy\x8c\x05dtype\x93",
]
WIDTHS = {
    ord("K"): 1,
    ord("h"): 1,
    ord("q"): 1,
    ord("M"): 2,
    ord("J"): 4,
    ord("j"): 4,
    ord("r"): 4,
    ord("B"): 4,
    ord("X"): 4,
    ord("C"): 1,
    ord("\x8c"): 1,
}
AT = st.integers(0, 10**6)
EDITS = st.one_of(
    st.tuples(st.just("delete"), AT),
    st.tuples(st.just("duplicate"), AT),
    st.tuples(st.just("swap"), AT, AT),
    st.tuples(st.just("insert"), AT, st.sampled_from(INSERTS)),
    st.tuples(st.just("opcode"), AT, st.integers(0, 255)),
    st.tuples(st.just("number"), AT, st.sampled_from([0, 1, 5, 255, 2**15, 2**31 - 1, 2**32 - 1])),
)


def edit(ops: list[bytes], kind: str, at: int, value: Any = None) -> None:
    """Apply one edit to a list of instructions, in place."""
    i = at % len(ops)
    if kind == "delete":
        del ops[i]
    elif kind == "duplicate":
        ops.insert(i, ops[i])
    elif kind == "swap":
        j = value % len(ops)
        ops[i], ops[j] = ops[j], ops[i]
    elif kind == "insert":
        ops.insert(i, value)
    elif kind == "opcode":
        ops[i] = bytes([value]) + ops[i][1:]
    else:  # a new number (index, integer, length) for an instruction with a fixed-width one
        width = WIDTHS.get(ops[i][0])
        if width:
            number = (value % 256**width).to_bytes(width, "little")
            ops[i] = ops[i][:1] + number + ops[i][1 + width :]


@settings(
    max_examples=150 * SCALE,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.sampled_from(PROTOCOLS), st.lists(EDITS, min_size=1, max_size=4))
def test_pickles_with_edited_instructions_are_clean_or_one_line(tmp_path_factory, protocol, edits):
    ops = list(INSTRUCTIONS[protocol])
    for kind, at, *value in edits:
        if ops:
            edit(ops, kind, at, *value)
    path = tmp_path_factory.mktemp("ops") / "data.pkl"
    path.write_bytes(b"".join(ops))
    with time_limit(5):
        try:
            data = pklio.load_pickle(path)
            assert len(pklio._show(data)) <= 60
            splits, annotations = pklio.check_dataset(data, str(path))
            for i, ann in enumerate(annotations):
                pklio.check_annotation(ann, str(path), i)
        except PipelineError as exc:
            assert assert_one_line(exc).startswith(f"{path}: ")


def test_the_unedited_instructions_load_at_every_protocol(tmp_path):
    """The fuzzing above starts from pickles that load, so its edits are what gets refused."""
    for protocol, ops in INSTRUCTIONS.items():
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(b"".join(ops))
        splits, annotations = pklio.check_dataset(pklio.load_pickle(path), str(path))
        persons = [pklio.check_annotation(a, str(path), i) for i, a in enumerate(annotations)]
        assert persons == [0] + [1] * 7 and splits == BASE["split"]


# --- the extract stage --------------------------------------------------------------------------


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@contextlib.contextmanager
def sandbox() -> Iterator[tuple[Path, Path]]:
    """(outer, work): the stage runs in outer/w1/w2, so '../../x' would land in outer."""
    previous = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as outer:
        work = Path(outer) / "w1" / "w2"
        work.mkdir(parents=True)
        os.chdir(work)
        try:
            yield Path(outer), work
        finally:
            os.chdir(previous)


def check_subset(data: dict[str, Any], meta: dict[str, Any], folder: Path) -> None:
    """A clean result: what the subset holds is exactly the selected clips, finite, readable."""
    sub = Subset(folder)
    try:
        by_name = {a["frame_dir"]: a for a in data["annotations"]}
        index = sub.index
        names = list(index["frame_dir"])
        assert all(isinstance(n, str) for n in names), names
        assert len(set(names)) == len(names), f"a clip is written twice: {names}"
        assert set(names) <= set(by_name), names
        assert sum(meta.counts.values()) == len(index)
        for split in ("train", "test"):
            name = meta.train_split if split == "train" else meta.test_split
            listed = set(data["split"][name])
            rows = (
                set(index.loc[index["split"] != "test", "frame_dir"])
                if split == "train"
                else (set(index.loc[index["split"] == "test", "frame_dir"]))
            )
            assert rows <= listed
        assert not set(index.loc[index["split"] == "test", "frame_dir"]) & set(
            index.loc[index["split"] != "test", "frame_dir"]
        ), "a clip is on both sides of train/test"
        for i, name in enumerate(names):
            ann = by_name[name]
            keypoint, score = sub.clip(i)
            assert int(index["label"][i]) == int(ann["label"])
            np.testing.assert_array_equal(keypoint, np.asarray(ann["keypoint"], np.float16))
            np.testing.assert_array_equal(score, np.asarray(ann["keypoint_score"], np.float16))
            assert np.isfinite(keypoint).all() and np.isfinite(score).all()
    finally:
        sub.close()


@settings(
    max_examples=100 * SCALE,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(MUTATIONS, min_size=1, max_size=3), CONFIGS)
def test_extract_is_clean_or_one_line_and_writes_only_its_output(mutations, overrides):
    cfg = replace(CFG, **overrides, pkl="data.pkl")
    with sandbox() as (outer, work):
        data = apply(mutations, str(outer / "abs_evil"))
        write_pkl(data, work / "data.pkl")
        with time_limit(EXAMPLE_SECONDS):
            try:
                meta = extract.extract(cfg, "data.pkl", "data/subset")
            except PipelineError as exc:
                assert assert_one_line(exc).startswith("data.pkl: ")
                meta = None
        written = tree(outer)
        allowed = {"w1", "w1/w2", "w1/w2/data.pkl"}
        if meta is not None:
            allowed |= {"w1/w2/data", "w1/w2/data/subset"}
            allowed |= {f"w1/w2/data/subset/{name}" for name in SUBSET_FILES}
            assert allowed <= written
            check_subset(data, meta, work / "data" / "subset")
        assert written <= allowed, sorted(written - allowed)


def test_hostile_frame_dirs_only_appear_inside_the_csv(tmp_path):
    """Names that look like paths are data: the subset holds them, no file is made from them."""
    data = base_dataset()
    outer = tmp_path / "outer"
    work = outer / "w1" / "w2"
    work.mkdir(parents=True)
    hostile = ["../../evil", str(outer / "abs_evil"), "..\\..\\evil", "a/b/c", "ü/../../x"]
    renamed = {}
    for ann, name in zip(data["annotations"], hostile, strict=False):
        renamed[ann["frame_dir"]] = name
        ann["frame_dir"] = name
    for members in data["split"].values():
        members[:] = [renamed.get(m, m) for m in members]
    write_pkl(data, work / "data.pkl")
    cfg = replace(CFG, pkl="data.pkl", classes=[0, 1], val_by="clip")
    with contextlib.chdir(work):
        meta = extract.extract(cfg, "data.pkl", "data/subset")
    assert tree(outer) == {"w1", "w1/w2", "w1/w2/data.pkl", "w1/w2/data", "w1/w2/data/subset"} | {
        f"w1/w2/data/subset/{name}" for name in SUBSET_FILES
    }
    sub = Subset(work / "data" / "subset")
    assert set(hostile) <= set(sub.index["frame_dir"])
    sub.close()
    csv = (work / "data" / "subset" / "index.csv").read_text()
    assert all(name in csv for name in hostile)
    assert sum(meta.counts.values()) == len(data["annotations"])


# --- the stage as a subprocess ------------------------------------------------------------------


def fuzzed_pickles(count: int, seed: int) -> list[Any]:
    """Deterministic mutations of BASE, one or two each, drawn from the same list of kinds."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        anns = copy.deepcopy(BASE)
        i = rng.randrange(len(anns["annotations"]))
        ann = anns["annotations"][i]
        kind = rng.choice(["nan", "int", "object", "name", "total", "split", "extra", "drop"])
        if kind == "nan":
            ann["keypoint"][0, 0, 0, 0] = np.nan
        elif kind in ("int", "object"):
            ann["keypoint"] = ann["keypoint"].astype(np.int32 if kind == "int" else object)
        elif kind == "name":
            old, new = ann["frame_dir"], rng.choice(HOSTILE_NAMES[:12])
            ann["frame_dir"] = new.replace(ABS, "/tmp/abs_evil")
            for members in anns["split"].values():
                members[:] = [ann["frame_dir"] if m == old else m for m in members]
        elif kind == "total":
            ann["total_frames"] = rng.choice([-1, 10**12, 0])
        elif kind == "split":
            anns["split"]["train1"] = rng.choice(["v_x", None, {"a": 1}, 3])
        elif kind == "extra":
            ann[rng.choice(["modality", "\x00", "../x"])] = rng.choice([None, np.zeros(3), "x"])
        else:
            del ann[rng.choice(FIELDS)]
        out.append(anns)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_extract_subprocess_on_fuzzed_pickles_exits_0_or_2_with_one_line(tmp_path, seed):
    (data,) = fuzzed_pickles(1, seed)
    write_pkl(data, tmp_path / "data.pkl")
    write_params(tmp_path, {"data.pkl": "data.pkl", "data.classes": [0, 1]})
    result = run_stage("extract", tmp_path, timeout=60)
    assert result.returncode in (0, 2), (result.returncode, result.stderr)
    if result.returncode == 2:
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: data.pkl: "), result.stderr
        assert not (tmp_path / "data").exists()
    else:
        assert result.stderr == ""
        Subset(tmp_path / "data" / "subset").close()
    assert {p.name for p in tmp_path.iterdir()} <= {"data.pkl", "params.yaml", "data"}


# --- what fuzzing found, pinned down ------------------------------------------------------------


def run_select(data: dict[str, Any]) -> dict[str, Any]:
    """extract.select on a dataset pickled and loaded the way the stage reads it."""
    cfg = replace(CFG, classes=[0, 1], val_by="clip")
    loaded = pickle.loads(pickle.dumps(data))
    return extract.select(cfg, loaded, "f.pkl")[2]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            "carriage return",
            r"frame_dir: expected a non-empty string of printable characters, "
            r"found 'v_A\\rpplyEyeMakeup_g01_c01'",
        ),
        ("NUL", r"frame_dir: expected a non-empty string of printable characters"),
        ("float64 beyond float16", r"keypoint holds 1e\+06, beyond the float16 range"),
        ("score beyond float16", r"keypoint_score holds 70000, beyond the float16 range"),
        ("array label", r"label must be an integer >= 0, found array of shape \(3, 3\)"),
        ("train lists twice", r"split 'train1' lists clip 'v_ApplyEyeMakeup_g02_c01' twice"),
        (
            "train and test",
            r"clip 'v_ApplyEyeMakeup_g02_c01' is in both split 'train1' and "
            r"'test1'",
        ),
    ],
)
def test_fuzz_findings_are_one_line_errors(change, expected):
    data = base_dataset()
    ann = data["annotations"][0]  # v_ApplyEyeMakeup_g01_c01, a test clip
    if change in ("carriage return", "NUL"):
        new = "v_A\rpplyEyeMakeup_g01_c01" if change == "carriage return" else "v_\x00"
        data["split"]["test1"][0] = ann["frame_dir"] = new
    elif change == "float64 beyond float16":
        ann["keypoint"] = ann["keypoint"].astype(np.float64)
        ann["keypoint"][0, 1, 2, 0] = 1e6
    elif change == "score beyond float16":
        ann["keypoint_score"] = ann["keypoint_score"].astype(np.float32)
        ann["keypoint_score"][0, 0, 0] = 7e4
    elif change == "array label":
        ann["label"] = np.zeros((3, 3))
        with pytest.raises(PipelineError, match=expected) as excinfo:
            pklio.check_annotation(ann, "f.pkl", 0)
        assert_one_line(excinfo.value)
        return
    elif change == "train lists twice":
        data["split"]["train1"].append("v_ApplyEyeMakeup_g02_c01")
    else:
        data["split"]["test1"].append("v_ApplyEyeMakeup_g02_c01")
    with pytest.raises(PipelineError, match=expected) as excinfo:
        run_select(data)
    assert assert_one_line(excinfo.value).startswith("f.pkl: ")


def test_names_that_look_like_numbers_read_back_as_text(tmp_path):
    data = base_dataset()
    renamed = {}
    for i, ann in enumerate(data["annotations"]):
        renamed[ann["frame_dir"]] = ann["frame_dir"] = f"{i:04d}"
    for members in data["split"].values():
        members[:] = [renamed[m] for m in members]
    write_pkl(data, tmp_path / "data.pkl")
    cfg = replace(CFG, classes=[0, 1], val_by="clip")
    extract.extract(cfg, tmp_path / "data.pkl", tmp_path / "subset")
    sub = Subset(tmp_path / "subset")
    assert sorted(sub.index["frame_dir"]) == [f"{i:04d}" for i in range(8)]
    sub.close()
