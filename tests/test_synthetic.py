"""The synthetic stand-in: exact PYSKL format, official splits, determinism, mirror mode, and
motion that needs the temporal pattern to be classified."""

from __future__ import annotations

import csv
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from pipeline.core import skeleton
from pipeline.core.errors import PipelineError
from pipeline.dataset import synthetic, ucf101

REAL_CLIPS = Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata" / "ucf101_clips.csv"
NAME = re.compile(r"^v_([A-Za-z]+)_g(\d{2})_c(\d{2})$")
SMALL = {"labels": [0, 36, 100], "clips_per_group": (1, 2), "frames": (5, 12)}


@pytest.fixture(scope="module")
def small() -> dict:
    return synthetic.generate(**SMALL)


@pytest.fixture(scope="module")
def many_short() -> dict:
    """Every class, one short clip per group: enough clips for the rare zero-person case."""
    return synthetic.generate(clips_per_group=(1, 1), frames=(4, 6), seed=3)


def _group(name: str) -> int:
    return ucf101.parse_frame_dir(name)[1]


def _write_csv(path: Path, rows: list[tuple[str, int, int, int]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(synthetic.MIRROR_COLUMNS)
        writer.writerows(rows)
    return path


# ucf101 ---------------------------------------------------------------------------------------


def test_classes_are_the_101_ucf101_names_in_classind_order() -> None:
    assert len(ucf101.CLASSES) == len(set(ucf101.CLASSES)) == 101
    assert ucf101.CLASSES[:3] == ("ApplyEyeMakeup", "ApplyLipstick", "Archery")
    assert ucf101.CLASSES[36] == "HandStandPushups"  # frame_dir spelling, not classInd's
    assert ucf101.CLASSES[-1] == "YoYo"


def test_classes_match_the_real_clip_list() -> None:
    if not REAL_CLIPS.exists():
        pytest.skip(f"{REAL_CLIPS} absent (only the project's shared workspace has it)")
    with open(REAL_CLIPS, newline="") as handle:
        seen = {int(r["label"]): NAME.match(r["frame_dir"])[1] for r in csv.DictReader(handle)}
    assert tuple(seen[label] for label in range(101)) == ucf101.CLASSES


def test_test_groups_follow_the_official_splits() -> None:
    assert list(ucf101.test_groups(1)) == list(range(1, 8))
    assert list(ucf101.test_groups(2)) == list(range(8, 15))
    assert list(ucf101.test_groups(3)) == list(range(15, 22))
    with pytest.raises(PipelineError, match="split"):
        ucf101.test_groups(4)


def test_official_splits_keep_input_order() -> None:
    names = ["v_YoYo_g25_c01", "v_Archery_g01_c02", "v_Archery_g08_c01", "v_Punch_g15_c03"]
    splits = ucf101.official_splits(names)
    assert splits == {
        "train1": ["v_YoYo_g25_c01", "v_Archery_g08_c01", "v_Punch_g15_c03"],
        "train2": ["v_YoYo_g25_c01", "v_Archery_g01_c02", "v_Punch_g15_c03"],
        "train3": ["v_YoYo_g25_c01", "v_Archery_g01_c02", "v_Archery_g08_c01"],
        "test1": ["v_Archery_g01_c02"],
        "test2": ["v_Archery_g08_c01"],
        "test3": ["v_Punch_g15_c03"],
    }
    with pytest.raises(PipelineError, match="v_<ClassName>"):
        ucf101.official_splits(["Archery_1"])


# format ---------------------------------------------------------------------------------------


def test_format_is_exactly_pyskl(small: dict) -> None:
    assert set(small) == {"split", "annotations"}
    assert {a["label"] for a in small["annotations"]} == {0, 36, 100}
    for ann in small["annotations"]:
        assert set(ann) == {
            "frame_dir",
            "label",
            "total_frames",
            "img_shape",
            "original_shape",
            "keypoint",
            "keypoint_score",
        }
        match = NAME.match(ann["frame_dir"])
        assert match, ann["frame_dir"]
        assert type(ann["label"]) is int and ucf101.CLASSES[ann["label"]] == match[1]
        assert 1 <= int(match[2]) <= 25
        assert ann["img_shape"] == ann["original_shape"] == (256, 340)
        assert type(ann["img_shape"]) is tuple and type(ann["original_shape"]) is tuple
        kp, score = ann["keypoint"], ann["keypoint_score"]
        assert type(ann["total_frames"]) is int and 5 <= ann["total_frames"] <= 12
        assert kp.dtype == score.dtype == np.float16
        persons, frames = kp.shape[:2]
        assert kp.shape == (persons, ann["total_frames"], 17, 2)
        assert score.shape == (persons, frames, 17)
        assert 0 <= persons <= 3


def test_every_group_and_clip_numbering(small: dict) -> None:
    names = [a["frame_dir"] for a in small["annotations"]]
    assert len(set(names)) == len(names)
    for label in (0, 36, 100):
        groups = {_group(n) for n in names if NAME.match(n)[1] == ucf101.CLASSES[label]}
        assert groups == set(range(1, 26))
    clips = [int(NAME.match(n)[3]) for n in names]
    assert set(clips) == {1, 2}  # drawn in clips_per_group, numbered from 1


@pytest.mark.slow
def test_values_are_finite_in_image_and_scores_in_unit_range(many_short: dict) -> None:
    kp = np.concatenate([a["keypoint"].reshape(-1, 2) for a in many_short["annotations"]])
    score = np.concatenate([a["keypoint_score"].ravel() for a in many_short["annotations"]])
    assert np.isfinite(kp).all() and np.isfinite(score).all()
    assert (kp[:, 0] >= 0).all() and (kp[:, 0] <= 340).all()
    assert (kp[:, 1] >= 0).all() and (kp[:, 1] <= 256).all()
    assert (score >= 0).all() and (score <= 1).all()
    # Dropped joints exist (low score), some as zero coordinates like a failed detection,
    # but they are the exception for the actor.
    actor = np.concatenate(
        [a["keypoint_score"][0].ravel() for a in many_short["annotations"] if len(a["keypoint"])]
    )
    assert 0.005 < (actor < 0.1).mean() < 0.2
    assert (kp == 0).all(axis=1).any()


@pytest.mark.slow  # many_short: every class generated
def test_some_clips_have_no_person_others_several(many_short: dict) -> None:
    persons = np.array([a["keypoint"].shape[0] for a in many_short["annotations"]])
    assert len(persons) == 101 * 25
    assert 5 <= (persons == 0).sum() <= 60  # about 1%
    assert (persons == 1).mean() > 0.4 and (persons == 2).any() and (persons == 3).any()
    empty = next(a for a in many_short["annotations"] if a["keypoint"].shape[0] == 0)
    assert empty["keypoint"].shape == (0, empty["total_frames"], 17, 2)
    assert empty["keypoint_score"].shape == (0, empty["total_frames"], 17)


@pytest.mark.slow  # many_short: every class generated
def test_actor_is_person_zero_with_the_highest_scores(many_short: dict) -> None:
    crowded = [a for a in many_short["annotations"] if a["keypoint"].shape[0] > 1]
    assert crowded
    for ann in crowded:
        mean = ann["keypoint_score"].astype(np.float32).mean(axis=(1, 2))
        assert mean[0] == mean.max(), ann["frame_dir"]


def test_clip_lengths_are_drawn_in_range_and_skewed() -> None:
    data = synthetic.generate(labels=[1, 2], clips_per_group=(4, 7), frames=(10, 110))
    lengths = np.array([a["total_frames"] for a in data["annotations"]])
    assert lengths.min() >= 10 and lengths.max() <= 110
    assert 40 <= np.median(lengths) <= 60  # near the middle, a little below it
    assert lengths.mean() > np.median(lengths)  # the long tail, as in the real data
    counts = np.unique([a["frame_dir"][:-4] for a in data["annotations"]], return_counts=True)[1]
    assert counts.min() >= 4 and counts.max() <= 7 and len(set(counts)) > 1


# splits ---------------------------------------------------------------------------------------


def test_split_lists_are_official(small: dict) -> None:
    names = [a["frame_dir"] for a in small["annotations"]]
    split = small["split"]
    assert set(split) == {f"{kind}{k}" for kind in ("train", "test") for k in (1, 2, 3)}
    assert {_group(n) for n in split["test1"]} == set(range(1, 8))
    assert {_group(n) for n in split["train1"]} == set(range(8, 26))
    for k in (1, 2, 3):
        train, test = split[f"train{k}"], split[f"test{k}"]
        assert sorted(train + test) == sorted(names)  # each clip in exactly one of the two
        assert train == [n for n in names if n in set(train)]  # input order kept
        assert all(_group(n) in ucf101.test_groups(k) for n in test)


# determinism ----------------------------------------------------------------------------------


def test_same_arguments_give_identical_bytes(small: dict) -> None:
    assert pickle.dumps(synthetic.generate(**SMALL), 4) == pickle.dumps(small, 4)
    assert pickle.dumps(synthetic.generate(**SMALL, seed=1), 4) != pickle.dumps(small, 4)


def test_a_clip_does_not_depend_on_which_other_classes_are_generated(small: dict) -> None:
    alone = synthetic.generate(**{**SMALL, "labels": [36]})["annotations"]
    same = [a for a in small["annotations"] if a["label"] == 36]
    assert pickle.dumps(alone, 4) == pickle.dumps(same, 4)


def test_write_pickles_atomically(tmp_path: Path, small: dict) -> None:
    path = tmp_path / "raw" / "ucf101_2d.pkl"
    synthetic.write(path, **SMALL)
    raw = path.read_bytes()
    assert raw[:2] == b"\x80\x04"  # protocol 4
    assert raw == pickle.dumps(small, 4)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


def test_bad_arguments_raise_pipeline_errors() -> None:
    with pytest.raises(PipelineError, match="clips_per_group"):
        synthetic.generate(clips_per_group=(3, 2), labels=[0])
    with pytest.raises(PipelineError, match="frames"):
        synthetic.generate(frames=(0, 5), labels=[0])
    with pytest.raises(PipelineError, match="labels"):
        synthetic.generate(labels=[101])


# mirror ---------------------------------------------------------------------------------------


def test_mirror_reproduces_names_labels_lengths_and_persons(tmp_path: Path) -> None:
    rows = [
        ("v_Punch_g03_c02", 70, 9, 2),
        ("v_ApplyEyeMakeup_g08_c01", 0, 4, 1),
        ("v_YoYo_g25_c07", 100, 31, 30),
        ("v_Punch_g11_c01", 70, 17, 0),
        ("v_Archery_g01_c04", 2, 12, 3),
    ]
    path = _write_csv(tmp_path / "clips.csv", rows)
    data = synthetic.generate(mirror=path)
    got = [
        (a["frame_dir"], a["label"], a["total_frames"], a["keypoint"].shape[0])
        for a in data["annotations"]
    ]
    assert got == rows
    for ann in data["annotations"]:
        assert ann["keypoint"].shape[1] == ann["keypoint_score"].shape[1] == ann["total_frames"]
    assert data["split"]["test1"] == ["v_Punch_g03_c02", "v_Archery_g01_c04"]
    assert data["split"]["test2"] == ["v_ApplyEyeMakeup_g08_c01", "v_Punch_g11_c01"]

    filtered = synthetic.generate(mirror=path, labels=[70, 2])
    assert [a["frame_dir"] for a in filtered["annotations"]] == [
        "v_Punch_g03_c02",
        "v_Punch_g11_c01",
        "v_Archery_g01_c04",
    ]
    assert pickle.dumps(filtered["annotations"], 4) == pickle.dumps(
        [a for a in data["annotations"] if a["label"] in (70, 2)], 4
    )


@pytest.mark.parametrize(
    ("row", "message"),
    [
        (("v_Punch_g03_c02", 3, 9, 2), "does not name class"),
        (("Punch_3", 70, 9, 2), "frame_dir"),
        (("v_Punch_g03_c02", 70, "many", 2), "integers"),
        (("v_Punch_g03_c02", 70, 0, 2), "total_frames >= 1"),
    ],
)
def test_mirror_rejects_bad_rows_with_the_line(tmp_path: Path, row: tuple, message: str) -> None:
    path = _write_csv(tmp_path / "clips.csv", [("v_Archery_g01_c04", 2, 12, 3), row])
    with pytest.raises(PipelineError, match=rf"clips\.csv:3: .*{message}"):
        synthetic.generate(mirror=path)


@pytest.mark.slow
def test_mirror_of_the_real_clip_list(tmp_path: Path) -> None:
    if not REAL_CLIPS.exists():
        pytest.skip(f"{REAL_CLIPS} absent (only the project's shared workspace has it)")
    with open(REAL_CLIPS, newline="") as handle:
        real = [r for r in csv.DictReader(handle) if r["label"] == "5"]
    data = synthetic.generate(mirror=REAL_CLIPS, labels=[5])
    assert [
        (a["frame_dir"], a["total_frames"], a["keypoint"].shape[0]) for a in data["annotations"]
    ] == [(r["frame_dir"], int(r["total_frames"]), int(r["persons"])) for r in real]


# content --------------------------------------------------------------------------------------


def _actor(ann: dict) -> tuple[np.ndarray, np.ndarray]:
    return ann["keypoint"][0].astype(np.float32), ann["keypoint_score"][0] >= 0.1


def test_each_group_has_its_own_camera() -> None:
    """Clips of one (class, group) share placement and size; other groups differ."""
    data = synthetic.generate(labels=[4], clips_per_group=(4, 4), frames=(30, 40))
    centers, sizes, groups = [], [], []
    for ann in data["annotations"]:
        if ann["keypoint"].shape[0]:
            kp, ok = _actor(ann)
            centers.append(np.median(kp[ok], axis=0))
            sizes.append(np.log(kp[ok][:, 1].std()))
            groups.append(_group(ann["frame_dir"]))
    groups_arr = np.array(groups)
    for values in (np.array(centers), np.array(sizes)):
        within = np.mean([values[groups_arr == g].var(axis=0).sum() for g in set(groups)])
        assert within < 0.3 * values.var(axis=0).sum()


@pytest.mark.slow
def test_classes_need_the_temporal_pattern() -> None:
    """Nearest centroid, trained on groups 8-25 and tested on groups 1-7: joint speeds separate
    the classes well; a single frame's pose does far worse."""
    labels = [0, 10, 20, 30, 40, 50]
    data = synthetic.generate(labels=labels, clips_per_group=(2, 2), frames=(40, 100), seed=5)
    temporal, single, y, test = [], [], [], []
    for ann in data["annotations"]:
        if not ann["keypoint"].shape[0]:
            continue
        kp, ok = _actor(ann)
        center, scale = np.median(kp[ok], axis=0), kp[ok].std(axis=0).mean()
        both = ok[1:] & ok[:-1]
        speed = (np.abs(np.diff(kp, axis=0)).sum(-1) * both).sum(0) / np.maximum(both.sum(0), 1)
        temporal.append(np.log(speed / scale + 1e-3))
        middle = len(kp) // 2
        single.append(((kp[middle] - center) / scale * ok[middle, :, None]).ravel())
        y.append(ann["label"])
        test.append(_group(ann["frame_dir"]) in ucf101.test_groups(1))
    y_arr, test_arr = np.array(y), np.array(test)

    def accuracy(features: list[np.ndarray]) -> float:
        x = np.stack(features)
        centroids = np.stack([x[~test_arr & (y_arr == c)].mean(axis=0) for c in labels])
        distance = ((x[test_arr, None] - centroids[None]) ** 2).sum(-1)
        return float((np.array(labels)[distance.argmin(1)] == y_arr[test_arr]).mean())

    # Over seeds 0-7 these come out at 0.63-0.87 and 0.17-0.35 (chance 0.17); the bounds
    # leave room for retuning the generator without letting either property go.
    moving, still = accuracy(temporal), accuracy(single)
    assert moving >= 0.55, (moving, still)
    assert still <= 0.4 and moving - still >= 0.25, (moving, still)


def test_actor_moves_as_a_rigid_coco_skeleton() -> None:
    """Within a clip the actor's bones keep their length (only jitter changes them) while the
    limbs move well beyond that jitter."""
    data = synthetic.generate(labels=[46], clips_per_group=(1, 1), frames=(60, 60))
    limbs = [
        (skeleton.J[f"{side}_{child}"], skeleton.J[f"{side}_{parent}"])
        for side in ("left", "right")
        for child, parent in (
            ("elbow", "shoulder"),
            ("wrist", "elbow"),
            ("hip", "shoulder"),
            ("knee", "hip"),
            ("ankle", "knee"),
        )
    ]
    assert set(limbs) <= set(skeleton.BONES)
    for ann in data["annotations"][:5]:
        kp, ok = _actor(ann)
        for child, parent in limbs:
            keep = ok[:, child] & ok[:, parent]
            length = np.linalg.norm(kp[keep, child] - kp[keep, parent], axis=-1)
            assert length.std() < 0.12 * length.mean(), (ann["frame_dir"], child)
    wrist = skeleton.J["left_wrist"]
    travel = [
        np.ptp(kp[ok[:, wrist], wrist], axis=0).max() / kp[ok].std(axis=0).mean()
        for kp, ok in (_actor(a) for a in data["annotations"] if a["keypoint"].shape[0])
    ]
    assert np.median(travel) > 0.3
