"""The restricted pickle reader and the checks on what a PYSKL pickle holds."""

from __future__ import annotations

import io
import pickle
import struct
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import (
    REALDATA,
    ShellPayload,
    make_annotation,
    make_dataset,
    requires_realdata,
)

from pipeline.core.errors import PipelineError
from pipeline.files import pklio


class EvalEvil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (eval, ("__import__('os').getcwd()",))


def one_line_error(excinfo: pytest.ExceptionInfo[PipelineError], where: str) -> str:
    text = str(excinfo.value)
    assert text.startswith(f"{where}: "), text
    assert "\n" not in text
    return text


class Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 wrote its str (STRING, BINSTRING), as PYSKL's Python 2-era tools
    did for array data; Python 3 reads them back as latin-1 text."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        if not self.bin:
            self.write(pickle.STRING + repr(obj)[1:].encode("ascii") + b"\n")
        elif len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)

    dispatch[bytes] = save_py2_str


def plain_dataset() -> dict[str, Any]:
    """Every plain thing a PYSKL file holds: a clip with zero persons (an empty array, which
    protocols 0-2 pickle through bytes()), numpy integer labels, float32 and float64 arrays,
    an OrderedDict annotation."""
    data = make_dataset(labels=(0, 1), groups=(1, 2), clips_per_group=1, persons=2)
    anns = data["annotations"]
    anns[0] = make_annotation(anns[0]["frame_dir"], 0, persons=0, frames=5)
    anns[1]["label"] = np.int64(1)
    anns[2]["keypoint"] = anns[2]["keypoint"].astype(np.float32)
    anns[2]["keypoint_score"] = anns[2]["keypoint_score"].astype(np.float64)
    anns[3] = OrderedDict(anns[3])
    return data


@pytest.mark.parametrize(
    ("writer", "protocol"),
    [("python 3", p) for p in range(6)] + [("python 2", p) for p in range(3)],
)
def test_load_pickle_round_trips_plain_data_of_any_protocol(tmp_path, protocol, writer):
    data = plain_dataset()
    buffer = io.BytesIO()
    (Py2Pickler if writer == "python 2" else pickle.Pickler)(buffer, protocol).dump(data)
    path = tmp_path / "d.pkl"
    path.write_bytes(buffer.getvalue())
    loaded = pklio.load_pickle(path)
    assert loaded["split"] == data["split"]
    for got, want in zip(loaded["annotations"], data["annotations"], strict=True):
        assert type(got) is type(want) and got.keys() == want.keys()
        for key in ("keypoint", "keypoint_score"):
            assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape
            np.testing.assert_array_equal(got[key], want[key])
        assert got["img_shape"] == (240, 320) and got["label"] == want["label"]
    assert type(loaded["annotations"][1]["label"]) is np.int64
    persons = [pklio.check_annotation(a, str(path), i) for i, a in enumerate(loaded["annotations"])]
    assert persons == [0, 2, 2, 2]


@requires_realdata
def test_real_mini_file_loads_and_every_clip_passes_the_checks():
    path = REALDATA / "ucf101_mini_2d.pkl"
    splits, annotations = pklio.check_dataset(pklio.load_pickle(path), str(path))
    assert sorted(splits) == ["test1", "train1"]
    persons = [pklio.check_annotation(a, str(path), i) for i, a in enumerate(annotations)]
    assert sorted(persons) == [1, 1, 1, 1, 1, 2]
    assert sum("modality" in a for a in annotations) == 3  # extra keys are tolerated


@pytest.mark.parametrize("protocol", [2, 5])
def test_pickle_calling_os_system_is_refused_before_it_runs(tmp_path, protocol):
    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pkl"
    payload = {"split": {}, "annotations": [ShellPayload(marker)]}
    path.write_bytes(pickle.dumps(payload, protocol=protocol))
    with pytest.raises(PipelineError, match="refused to load global") as excinfo:
        pklio.load_pickle(path)
    assert "system" in one_line_error(excinfo, str(path))
    assert not marker.exists()


def test_pickle_calling_eval_or_naming_a_class_is_refused(tmp_path):
    for i, payload in enumerate([EvalEvil(), Path("/etc"), {"x": {1, 2}.__class__}]):
        path = tmp_path / f"bad{i}.pkl"
        path.write_bytes(pickle.dumps(payload))
        with pytest.raises(PipelineError, match="refused to load global"):
            pklio.load_pickle(path)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "file not found"),
        (b"", "empty or truncated"),
        (b"this is a text file, not a pickle\n", "not a usable pickle"),
        ("truncated", "empty or truncated|truncated"),
        ("folder", "found a folder"),
    ],
    ids=["missing", "empty", "text", "truncated", "folder"],
)
def test_unreadable_files_give_one_line_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "data.pkl"
    if content == "truncated":
        full = pickle.dumps(make_dataset(labels=(0,), groups=(1, 2), clips_per_group=1))
        path.write_bytes(full[: len(full) // 2])
    elif content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(PipelineError, match=expected) as excinfo:
        pklio.load_pickle(path)
    one_line_error(excinfo, str(path))


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ([1, 2], "expected a dict with 'split' and 'annotations', found list"),
        ({"annotations": []}, "missing top-level key 'split'"),
        ({"split": {}}, "missing top-level key 'annotations'"),
        ({"split": ["train1"], "annotations": []}, "'split' must map split names"),
        ({"split": {"train1": "v_a"}, "annotations": []}, "'split' must map split names"),
        ({"split": {}, "annotations": {}}, "'annotations' must be a list, found dict"),
        ({"split": {"train1": [3]}, "annotations": []}, "split 'train1': expected frame_dir str"),
    ],
)
def test_check_dataset_rejects_a_wrong_top_level(data, expected):
    with pytest.raises(PipelineError, match=expected) as excinfo:
        pklio.check_dataset(data, "f.pkl")
    one_line_error(excinfo, "f.pkl")


def test_check_dataset_returns_splits_and_annotations():
    data = make_dataset(labels=(0,), groups=(1, 2, 3), test_groups=(1,), clips_per_group=1)
    splits, annotations = pklio.check_dataset(data, "f.pkl")
    assert splits == {
        "train1": ["v_ApplyEyeMakeup_g02_c01", "v_ApplyEyeMakeup_g03_c01"],
        "test1": ["v_ApplyEyeMakeup_g01_c01"],
    }
    assert annotations == data["annotations"]


def _broken(change: str) -> dict[str, Any]:
    ann = make_annotation("v_Archery_g01_c01", 2, persons=2, frames=10, seed=1)
    kp, score = ann["keypoint"], ann["keypoint_score"]
    if change.startswith("drop "):
        del ann[change[5:]]
    elif change == "rank":
        ann["keypoint"] = kp[0]
    elif change == "joints":
        ann["keypoint"] = np.zeros((2, 10, 18, 2), np.float16)
    elif change == "coords":
        ann["keypoint"] = np.zeros((2, 10, 17, 3), np.float16)
    elif change == "int keypoint":
        ann["keypoint"] = kp.astype(np.int32)
    elif change == "score shape":
        ann["keypoint_score"] = score[:, :9]
    elif change == "score list":
        ann["keypoint_score"] = score.tolist()
    elif change in ("nan", "inf", "-inf"):
        kp[1, 3, 5, 0] = float(change)
    elif change == "nan score":
        score[0, 0, 0] = np.nan
    elif change == "zero frames":
        ann["keypoint"], ann["keypoint_score"] = kp[:, :0], score[:, :0]
        ann["total_frames"] = 0
    elif change == "total mismatch":
        ann["total_frames"] = 11
    elif change == "negative label":
        ann["label"] = -1
    elif change == "float label":
        ann["label"] = 1.0
    elif change == "bool label":
        ann["label"] = True
    elif change == "img_shape":
        ann["img_shape"] = (240,)
    elif change == "img_shape zero":
        ann["img_shape"] = (0, 320)
    elif change == "img_shape 0-d":
        ann["img_shape"] = np.array(240)
    elif change == "frame_dir":
        ann["frame_dir"] = ""
    return ann


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("drop label", "clip 'v_Archery_g01_c01': missing key 'label'"),
        ("drop keypoint", "missing key 'keypoint'"),
        ("drop keypoint_score", "missing key 'keypoint_score'"),
        ("drop img_shape", "missing key 'img_shape'"),
        ("drop total_frames", "missing key 'total_frames'"),
        ("rank", r"keypoint must have shape \[persons, frames, 17, 2\], found \(10, 17, 2\)"),
        ("joints", r"keypoint must have shape .*found \(2, 10, 18, 2\)"),
        ("coords", r"keypoint must have shape .*found \(2, 10, 17, 3\)"),
        ("int keypoint", "keypoint must be a float array, found array of shape"),
        ("score shape", r"keypoint_score shape \(2, 9, 17\) does not match keypoint \(2, 10, 17\)"),
        ("score list", "keypoint_score must be a float array, found list"),
        ("nan", "keypoint holds NaN or infinite coordinates"),
        ("inf", "keypoint holds NaN or infinite coordinates"),
        ("-inf", "keypoint holds NaN or infinite coordinates"),
        ("nan score", "keypoint_score holds NaN or infinite values"),
        ("zero frames", "the clip has zero frames"),
        ("total mismatch", "total_frames is 11 but keypoint holds 10 frames"),
        ("negative label", "label must be an integer >= 0, found -1"),
        ("float label", "label must be an integer >= 0, found 1.0"),
        ("bool label", "label must be an integer >= 0, found True"),
        ("img_shape", r"img_shape must be \(height, width\), each in 1\.\.2147483648,"),
        ("img_shape zero", r"img_shape must be \(height, width\), each in 1\.\.2147483648,"),
        ("img_shape 0-d", r"img_shape must be \(height, width\), each in 1\.\.2147483648,"),
        ("frame_dir", r"annotations\[7\].frame_dir: expected a non-empty string"),
    ],
)
def test_check_annotation_names_the_clip_and_field(change, expected):
    with pytest.raises(PipelineError, match=expected) as excinfo:
        pklio.check_annotation(_broken(change), "f.pkl", 7)
    text = one_line_error(excinfo, "f.pkl")
    if change != "frame_dir":
        assert "clip 'v_Archery_g01_c01'" in text


def test_check_annotation_returns_persons_and_zero_for_an_empty_clip():
    assert pklio.check_annotation(_broken("none"), "f.pkl", 0) == 2
    ann = make_annotation("v_Archery_g01_c01", 2, persons=3, frames=5)
    ann["keypoint"] = ann["keypoint"].astype(np.float64)  # any float width is accepted
    assert pklio.check_annotation(ann, "f.pkl", 0) == 3
    empty = make_annotation("v_Archery_g01_c02", 2, persons=0, frames=5)
    assert empty["keypoint"].shape == (0, 5, 17, 2)
    assert pklio.check_annotation(empty, "f.pkl", 0) == 0


def test_check_annotation_rejects_a_non_dict():
    with pytest.raises(PipelineError, match=r"annotations\[3\]: expected a dict, found list"):
        pklio.check_annotation([1], "f.pkl", 3)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_finiteness_check_agrees_with_isfinite_on_special_values(dtype):
    specials = [0.0, -0.0, 1.0, -65504.0, 65504.0, 6e-8, np.inf, -np.inf, np.nan]
    for value in specials:
        array = np.array([[1.0, value], [2.0, 3.0]], dtype=dtype)
        assert pklio._all_finite(array) == bool(np.isfinite(array).all()), value
        assert pklio._all_finite(array[:, ::-1]) == bool(np.isfinite(array).all())  # strided
    assert pklio._all_finite(np.zeros((0, 17), dtype))
