"""Stage `extract`: selection, validation carve-out, class names, the written subset, bad input."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import (
    call_stage,
    error_line,
    make_annotation,
    make_dataset,
    run_stage,
    section,
    ucf_name,
    write_params,
    write_pkl,
)
from sklearn.model_selection import train_test_split

from pipeline import extract
from pipeline.dataset.subset import INDEX_COLUMNS, Subset

GROUPED = {"data.val_by": "group", "data.val_fraction": 0.2, "data.seed": 42}


def run_extract(folder: Path, data: Any, overrides: dict[str, Any] | None = None):
    """Pickle `data` (unless None) to folder/data.pkl and run the stage there in-process."""
    if data is not None:
        write_pkl(data, folder / "data.pkl")
    write_params(folder, {"data.pkl": "data.pkl", "data.classes": "all", **(overrides or {})})
    return call_stage("extract", folder)


def ok_subset(folder: Path, result) -> Subset:
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return Subset(folder / "data" / "subset")


def assert_no_output(folder: Path) -> None:
    assert not (folder / "data" / "subset").exists()
    assert not list(folder.glob("data/.subset*")), list(folder.glob("data/.subset*"))


def rename(data: dict[str, Any], old: str, new: str) -> None:
    for members in data["split"].values():
        members[:] = [new if m == old else m for m in members]
    for ann in data["annotations"]:
        if ann["frame_dir"] == old:
            ann["frame_dir"] = new


def split_of(sub: Subset) -> dict[str, str]:
    return dict(zip(sub.index["frame_dir"], sub.index["split"], strict=True))


# --- the subset it writes -----------------------------------------------------------------------


def test_subset_holds_every_selected_clip_exactly(tmp_path):
    data = make_dataset(labels=(0, 1, 2), persons=(1, 3), frames=(5, 9), seed=3)
    sub = ok_subset(tmp_path, run_extract(tmp_path, data, {"data.classes": [0, 2]}))
    by_name = {a["frame_dir"]: a for a in data["annotations"]}
    index = sub.index
    assert list(index.columns) == INDEX_COLUMNS
    expected = {n for n, a in by_name.items() if a["label"] in (0, 2)}
    assert set(index["frame_dir"]) == expected and len(index) == len(expected)
    assert list(index["split"]) == sorted(index["split"], key=["train", "val", "test"].index)
    for i, row in index.iterrows():
        ann = by_name[row["frame_dir"]]
        keypoint, score = sub.clip(i)
        assert keypoint.dtype == np.float16 and score.dtype == np.float16
        np.testing.assert_array_equal(keypoint, ann["keypoint"])
        np.testing.assert_array_equal(score, ann["keypoint_score"])
        assert (row["persons"], row["frames"]) == ann["keypoint"].shape[:2]
        assert (row["img_h"], row["img_w"], row["label"]) == (240, 320, ann["label"])
        assert row["target"] == {0: 0, 2: 1}[ann["label"]]
        assert row["group"] == row["frame_dir"].split("_g")[1][:2]
        assert (row["split"] == "test") == (row["group"] in ("01", "02"))
    meta = sub.meta
    assert meta.labels == [0, 2]
    assert meta.classes == ["ApplyEyeMakeup", "Archery"]
    assert meta.counts == {s: int((index["split"] == s).sum()) for s in ("train", "val", "test")}
    assert (meta.train_split, meta.test_split) == ("train1", "test1")
    assert len(meta.skipped) == 0
    sub.close()


def test_rerun_replaces_the_subset_and_leaves_no_temporary_folders(tmp_path):
    data = make_dataset(labels=(0, 1, 2), frames=(5, 8))
    ok_subset(tmp_path, run_extract(tmp_path, data, {"data.classes": [0, 1]})).close()
    result = run_extract(tmp_path, data, {"data.classes": [1, 2]})
    sub = ok_subset(tmp_path, result)
    assert set(sub.index["label"]) == {1, 2}
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["subset"]
    assert result.stdout.startswith("extract: 2 classes, train ")
    sub.close()


def test_zero_person_clip_is_skipped_and_counted(tmp_path):
    data = make_dataset(labels=(0, 1), frames=(5, 8))
    empty = data["annotations"][5]
    assert empty["frame_dir"] in data["split"]["train1"]
    empty["keypoint"] = empty["keypoint"][:0]
    empty["keypoint_score"] = empty["keypoint_score"][:0]
    result = run_extract(tmp_path, data)
    sub = ok_subset(tmp_path, result)
    assert empty["frame_dir"] not in set(sub.index["frame_dir"])
    assert len(sub.index) == len(data["annotations"]) - 1
    assert len(sub.meta.skipped) == 1
    assert sub.meta.skipped == [empty["frame_dir"]]
    assert "skipped 1 with no person" in result.stdout
    sub.close()


# --- validation carve-out -----------------------------------------------------------------------


def test_group_validation_never_puts_a_group_on_both_sides():
    names = [ucf_name(label, g, c) for label in (0, 1, 2) for g in range(3, 13) for c in (1, 2, 3)]
    labels = [int(label) for label in np.repeat([0, 1, 2], 30)]
    chosen_sets = set()
    for seed in (0, 1, 42):
        for fraction in (0.1, 0.2, 0.35, 0.5):
            cfg = section(
                "data",
                val_by="group",
                group_pattern=r"_g(\d+)_",
                seed=seed,
                val_fraction=fraction,
                folds=None,
                fold=0,
            )
            val, method = extract.carve_validation(names, labels, names, cfg, "f.pkl")
            assert method == "group"
            val_groups = {n.split("_g")[1][:2] for n in val}
            train_groups = {n.split("_g")[1][:2] for n in names if n not in val}
            assert val_groups and train_groups and not val_groups & train_groups
            # whole groups go over: all three classes' clips of a held-out group
            assert len(val) == 9 * len(val_groups)
            chosen_sets.add(frozenset(val_groups))
    assert len(chosen_sets) > 3  # the seed and fraction change which groups are held out


def folds_of(names, labels, all_train, k: int, method: str, **cfg) -> list[set[str]]:
    """The k held-out sets of a k-fold carve-out; each must be reported as `method`, fold f."""
    values = {
        "val_by": "group",
        "group_pattern": r"_g(\d+)_",
        "seed": 0,
        "val_fraction": 0.2,
        "folds": k,
        **cfg,
    }
    held = [
        extract.carve_validation(
            names, labels, all_train, section("data", **values, fold=f), "f.pkl"
        )
        for f in range(k)
    ]
    assert [how for _, how in held] == [f"{method}, fold {f} of {k}" for f in range(k)]
    return [val for val, _ in held]


def assert_partition(folds: list[set[str]], names: list[str]) -> None:
    """Every name is held out by exactly one fold, and no fold is empty."""
    assert all(folds)
    assert sorted(n for fold in folds for n in fold) == sorted(names)


def test_group_folds_hold_out_every_group_exactly_once():
    names = [ucf_name(label, g, c) for label in (0, 1, 2) for g in range(3, 13) for c in (1, 2, 3)]
    labels = [int(label) for label in np.repeat([0, 1, 2], 30)]
    assignments = set()
    for k in (2, 3, 5):
        for seed in (0, 42):
            folds = folds_of(names, labels, names, k, "group", seed=seed)
            assert_partition(folds, names)
            for fold in folds:  # whole groups: all 9 clips (3 classes x 3) of each held-out group
                groups = {n.split("_g")[1][:2] for n in fold}
                assert len(fold) == 9 * len(groups)
            assignments.add(tuple(frozenset(f) for f in folds))
    assert len(assignments) == 6  # the seed changes which groups share a fold


def test_clip_folds_split_the_whole_train_list_and_stratify_without_groups():
    names = [f"clip{label}x{c}" for label in (0, 1) for c in range(12)]
    labels = [0] * 12 + [1] * 12
    # val_by clip: folds of the whole train list, as the notebook's random split is
    folds = folds_of(names[:12], labels[:12], names, 4, "clip", val_by="clip")
    assert_partition(folds, names)
    # no group in the names: class-stratified folds of the chosen clips
    folds = folds_of(names, labels, names, 4, "clip-stratified (no group in the names)")
    assert_partition(folds, names)
    assert all(sorted(int(n[4]) for n in fold) == [0, 0, 0, 1, 1, 1] for fold in folds)


def test_a_fold_through_the_stage(tmp_path):
    data = make_dataset(labels=(0, 1), groups=range(1, 10), frames=(4, 6), clips_per_group=2)
    sub = ok_subset(
        tmp_path, run_extract(tmp_path, data, {**GROUPED, "data.folds": 3, "data.fold": 2})
    )
    assert sub.meta.validation == "group, fold 2 of 3"
    sides = sub.index.groupby("group")["split"].agg(set)
    assert all(len(s) == 1 for s in sides), sides
    assert {"train", "val"} <= set(sub.index["split"])
    sub.close()


def test_a_fold_past_the_last_is_an_error_before_the_pickle_is_read(tmp_path):
    overrides = {**GROUPED, "data.folds": 3, "data.fold": 3, "data.pkl": "absent.pkl"}
    write_params(tmp_path, {"data.classes": "all", **overrides})
    line = error_line(call_stage("extract", tmp_path))
    assert line == (
        "error: params.yaml: data.fold: expected an integer in [0, 2] (data.folds is 3), found 3"
    )
    assert_no_output(tmp_path)


def test_more_folds_than_groups_is_an_error(tmp_path):
    data = make_dataset(labels=(0, 1), groups=(1, 2, 3), test_groups=(1,), frames=(4, 6))
    line = error_line(run_extract(tmp_path, data, {**GROUPED, "data.folds": 5}))
    assert "data.pkl: cannot carve 5 data.folds out of 'train1'" in line
    assert_no_output(tmp_path)


def test_group_validation_through_the_stage_keeps_groups_whole(tmp_path):
    data = make_dataset(labels=(0, 1, 2), groups=range(1, 11), frames=(4, 6), clips_per_group=2)
    sub = ok_subset(tmp_path, run_extract(tmp_path, data, {**GROUPED, "data.seed": 5}))
    sides = sub.index.groupby("group")["split"].agg(set)
    assert all(len(s) == 1 for s in sides), sides
    assert {"train", "val"} <= set(sub.index["split"])
    assert sub.meta.validation == "group"
    sub.close()


@pytest.mark.parametrize("chosen", [[1, 3], [3, 0], [0, 1, 2, 3]])
def test_clip_validation_reproduces_the_notebook_split(tmp_path, chosen):
    data = make_dataset(labels=(0, 1, 2, 3), groups=range(1, 9), clips_per_group=3, frames=(4, 6))
    np.random.default_rng(1).shuffle(data["split"]["train1"])  # order matters to the split
    sub = ok_subset(
        tmp_path, run_extract(tmp_path, data, {"data.val_by": "clip", "data.classes": chosen})
    )
    # the notebook: split ALL of train1 (every class) at clip level, then keep the chosen classes
    video_to_ann = {ann["frame_dir"]: ann for ann in data["annotations"]}
    train_ann_list = [video_to_ann[vid] for vid in data["split"]["train1"]]
    train_anns, val_anns = train_test_split(
        train_ann_list, test_size=0.2, random_state=42, shuffle=True
    )
    label_map = {old: i for i, old in enumerate(sorted(chosen))}
    want_val = [a["frame_dir"] for a in val_anns if a["label"] in label_map]
    want_train = [a["frame_dir"] for a in train_anns if a["label"] in label_map]
    want_test = [v for v in data["split"]["test1"] if video_to_ann[v]["label"] in label_map]
    index = sub.index
    assert sorted(index.loc[index["split"] == "val", "frame_dir"]) == sorted(want_val)
    assert sorted(index.loc[index["split"] == "train", "frame_dir"]) == sorted(want_train)
    assert list(index.loc[index["split"] == "test", "frame_dir"]) == want_test
    for name, target in zip(index["frame_dir"], index["target"], strict=True):
        assert target == label_map[video_to_ann[name]["label"]]
    assert sub.meta.validation == "clip"
    sub.close()


def test_names_without_groups_fall_back_to_a_stratified_clip_split(tmp_path):
    data = make_dataset(
        labels=(0, 1),
        groups=range(1, 7),
        frames=(4, 6),
        name=lambda label, g, c: f"clip{label}x{g:02d}x{c}",
    )
    sub = ok_subset(tmp_path, run_extract(tmp_path, data, {**GROUPED, "data.val_fraction": 0.25}))
    assert sub.meta.validation == "clip-stratified (no group in the names)"
    val = sub.index[sub.index["split"] == "val"]
    assert list(val["label"].value_counts().sort_index()) == [2, 2]  # 8 train clips per class
    # the very clips train_test_split would draw, so runs made before stay reproducible
    train = data["split"]["train1"]
    labels = [int(name[4]) for name in train]
    _, want = train_test_split(
        train, test_size=0.25, random_state=42, shuffle=True, stratify=labels
    )
    assert sorted(val["frame_dir"]) == sorted(want)
    assert set(sub.index["group"]) == {""}
    sub.close()


def test_a_name_without_group_among_grouped_names_is_an_error(tmp_path):
    data = make_dataset(labels=(0, 1), frames=(4, 6))
    rename(data, "v_ApplyLipstick_g04_c02", "v_ApplyLipstick_c02")
    line = error_line(run_extract(tmp_path, data, GROUPED))
    assert "data.pkl: clip 'v_ApplyLipstick_c02' has no group matching data.group_pattern" in line
    assert_no_output(tmp_path)


def test_validation_needs_two_train_groups(tmp_path):
    data = make_dataset(labels=(0,), groups=(1, 2), test_groups=(1,), frames=(4, 6))
    line = error_line(run_extract(tmp_path, data, GROUPED))
    assert "validation by group needs 2 or more groups in train, found '02'" in line
    assert_no_output(tmp_path)


@pytest.mark.parametrize(
    "overrides",
    [
        {"data.val_fraction": 0.99},  # GroupShuffleSplit: train side would be empty
        {"data.val_by": "clip", "data.val_fraction": 0.99},
    ],
)
def test_a_fraction_that_cannot_be_carved_is_an_error(tmp_path, overrides):
    data = make_dataset(labels=(0, 1), groups=(1, 2, 3), test_groups=(1,), clips_per_group=1)
    line = error_line(run_extract(tmp_path, data, {**GROUPED, **overrides}))
    assert "data.pkl: cannot carve data.val_fraction out of 'train1'" in line
    assert_no_output(tmp_path)


def test_too_few_clips_per_class_for_a_stratified_split_is_an_error(tmp_path):
    data = make_dataset(
        labels=(0, 1),
        groups=(1, 2, 3),
        test_groups=(1,),
        clips_per_group=1,
        name=lambda label, g, c: f"clip{label}x{g}x{c}",
    )
    line = error_line(run_extract(tmp_path, data, GROUPED))
    assert "cannot carve data.val_fraction" in line
    assert_no_output(tmp_path)


# --- other PYSKL pickles: split names, labels, class names ---------------------------------------


def test_split_names_come_from_params(tmp_path):
    data = make_dataset(labels=(0, 1), frames=(4, 6), split_names=("train", "test"))
    line = error_line(run_extract(tmp_path, data))
    assert "data.pkl: split 'train1' not found (the file has ['test', 'train'])" in line
    assert_no_output(tmp_path)
    named = {"data.train_split": "train", "data.test_split": "test"}
    sub = ok_subset(tmp_path, run_extract(tmp_path, data, named))
    assert (sub.meta.train_split, sub.meta.test_split) == ("train", "test")
    assert len(sub.index) == len(data["annotations"])
    sub.close()


@pytest.mark.parametrize(
    ("classes", "labels"), [("all", [1, 4, 9]), ([9, 1], [1, 9]), ([9, 4], [4, 9])]
)
def test_labels_with_gaps_become_targets_in_sorted_label_order(tmp_path, classes, labels):
    data = make_dataset(labels=(9, 1, 4), frames=(4, 6))
    sub = ok_subset(tmp_path, run_extract(tmp_path, data, {"data.classes": classes}))
    assert sub.meta.labels == labels
    names = {1: "ApplyLipstick", 4: "BalanceBeam", 9: "Action9"}
    assert sub.meta.classes == [names[label] for label in labels]
    assert set(sub.index["label"]) == set(labels)
    for label, target, name in sub.index[["label", "target", "class_name"]].itertuples(False):
        assert target == labels.index(label)
        assert name == names[label]
    sub.close()


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("1 Apply lipstick\n\n4 Beam\n9 nine\n12 unused\n", ["Apply lipstick", "Beam", "nine"]),
        ("\n".join(f"name {i}" for i in range(10)) + "\n", ["name 1", "name 4", "name 9"]),
        ("\n".join(f"n{i}" for i in range(10)), ["n1", "n4", "n9"]),
    ],
    ids=["label-name", "names-with-spaces", "one-name-per-line"],
)
def test_class_names_from_a_label_map_file(tmp_path, text, names):
    (tmp_path / "labels.txt").write_text(text)
    data = make_dataset(labels=(1, 4, 9), frames=(4, 6))
    sub = ok_subset(tmp_path, run_extract(tmp_path, data, {"data.label_map": "labels.txt"}))
    assert sub.meta.classes == names
    sub.close()


def test_a_label_map_missing_a_label_is_an_error(tmp_path):
    (tmp_path / "labels.txt").write_text("1 a\n4 b\n")
    data = make_dataset(labels=(1, 4, 9), frames=(4, 6))
    line = error_line(run_extract(tmp_path, data, {"data.label_map": "labels.txt"}))
    assert line == "error: labels.txt: no name for label 9 (the file names 2)"
    assert_no_output(tmp_path)
    (tmp_path / "labels.txt").write_bytes(b"\xff\xfe\x00binary")
    line = error_line(run_extract(tmp_path, data, {"data.label_map": "labels.txt"}))
    assert line.startswith("error: labels.txt: ")
    line = error_line(run_extract(tmp_path, data, {"data.label_map": "absent.txt"}))
    assert line.startswith("error: absent.txt: cannot read the label map")
    assert_no_output(tmp_path)


def test_other_names_get_class_label_names_and_a_custom_group_pattern(tmp_path):
    data = make_dataset(
        labels=(0, 3),
        groups=range(1, 9),
        test_groups=(7, 8),
        frames=(4, 6),
        name=lambda label, g, c: f"p{g:02d}_act{label}_{c:02d}",
    )
    sub = ok_subset(tmp_path, run_extract(tmp_path, data, {"data.group_pattern": r"^p(\d+)_"}))
    assert sub.meta.classes == ["class_0", "class_3"]
    assert sub.meta.validation == "group"
    assert set(sub.index["group"]) == {f"{g:02d}" for g in range(1, 9)}
    sides = sub.index.groupby("group")["split"].agg(set)
    assert all(len(s) == 1 for s in sides)
    sub.close()


def test_a_label_with_two_parsed_names_falls_back_to_class_label(tmp_path):
    data = make_dataset(labels=(0, 1), frames=(4, 6))
    rename(data, "v_ApplyEyeMakeup_g05_c01", "v_Other_g05_c01")
    sub = ok_subset(tmp_path, run_extract(tmp_path, data))
    assert sub.meta.classes == ["class_0", "class_1"]
    sub.close()


# --- bad input ----------------------------------------------------------------------------------

TARGET = "v_ApplyEyeMakeup_g03_c01"  # a train clip of class 0


def small() -> dict[str, Any]:
    return make_dataset(
        labels=(0, 1), groups=range(1, 6), test_groups=(1,), clips_per_group=1, frames=(5, 8)
    )


def target(data: dict[str, Any]) -> dict[str, Any]:
    return next(a for a in data["annotations"] if a["frame_dir"] == TARGET)


def corrupt(change: str) -> dict[str, Any] | bytes | None:
    """The file content for one bad-input case: a dataset, raw bytes, or None for no file."""
    data = small()
    ann = target(data)
    kp = ann["keypoint"]
    if change == "missing file":
        return None
    if change == "empty file":
        return b""
    if change == "truncated":
        full = pickle.dumps(data, protocol=4)
        return full[: len(full) * 2 // 3]
    if change == "text file":
        return b"frame_dir,label\nv_a,0\n"
    if change == "no annotations key":
        del data["annotations"]
    elif change == "annotation without keypoint_score":
        del ann["keypoint_score"]
    elif change == "keypoint rank 3":
        ann["keypoint"] = kp[0]
    elif change == "18 joints":
        ann["keypoint"] = np.zeros((1, kp.shape[1], 18, 2), np.float16)
    elif change == "score shape":
        ann["keypoint_score"] = ann["keypoint_score"][:, 1:]
    elif change in ("nan", "inf"):
        kp[0, 2, 4, 1] = float(change)
    elif change == "zero frames":
        ann["keypoint"], ann["keypoint_score"] = kp[:, :0], ann["keypoint_score"][:, :0]
        ann["total_frames"] = 0
    elif change == "duplicate frame_dir":
        data["annotations"].append(make_annotation(TARGET, 0, frames=5))
    elif change == "split names a clip without annotation":
        data["split"]["test1"].append("v_Ghost_g01_c01")
    elif change == "test split without chosen class":
        data["split"]["test1"] = [n for n in data["split"]["test1"] if "Lipstick" in n]
    elif change == "empty train split":
        data["split"]["train1"] = []
    elif change == "only test clip has no person":
        test = next(a for a in data["annotations"] if a["frame_dir"] == "v_ApplyEyeMakeup_g01_c01")
        test["keypoint"], test["keypoint_score"] = test["keypoint"][:0], test["keypoint_score"][:0]
    elif change == "label is a string":
        ann["label"] = "0"
    return data


BAD_INPUT = [
    # (case, params overrides, words the one error line must hold)
    ("missing file", {}, ["data.pkl: file not found"]),
    ("empty file", {}, ["data.pkl: the file is empty or truncated"]),
    ("truncated", {}, ["data.pkl:", "truncated"]),
    ("text file", {}, ["data.pkl: not a usable pickle"]),
    ("no annotations key", {}, ["data.pkl: missing top-level key 'annotations'"]),
    ("annotation without keypoint_score", {}, [TARGET, "missing key 'keypoint_score'"]),
    ("keypoint rank 3", {}, [TARGET, "keypoint must have shape [persons, frames, 17, 2]"]),
    ("18 joints", {}, [TARGET, "[persons, frames, 17, 2], found (1,", ", 18, 2)"]),
    ("score shape", {}, [TARGET, "keypoint_score shape (1,", "does not match keypoint"]),
    ("nan", {}, [TARGET, "keypoint holds NaN or infinite coordinates"]),
    ("inf", {}, [TARGET, "keypoint holds NaN or infinite coordinates"]),
    ("zero frames", {}, [TARGET, "the clip has zero frames"]),
    ("duplicate frame_dir", {}, [f"clip '{TARGET}' appears twice"]),
    (
        "split names a clip without annotation",
        {},
        ["split 'test1' names clip 'v_Ghost_g01_c01', which has no annotation"],
    ),
    ("label is a string", {}, [TARGET, "label must be an integer >= 0"]),
    ("split file lacks", {"data.split": 2}, ["split 'train2' not found (the file has"]),
    (
        "class file lacks",
        {"data.classes": [0, 7]},
        ["data.classes: label 7 has no clip in split 'train1' (labels there: 0..1)"],
    ),
    (
        "test split without chosen class",
        {"data.classes": [0]},
        ["split 'test1' has no clip of the chosen classes"],
    ),
    (
        "empty train split",
        {"data.classes": [0]},
        ["data.classes: label 0 has no clip in split 'train1' (it is empty)"],
    ),
    ("only test clip has no person", {"data.classes": [0]}, ["the selection leaves no test clip"]),
    (
        "params classes",
        {"data.classes": "some"},
        ['params.yaml: data.classes: expected "all" or a non-empty list', "found 'some'"],
    ),
    (
        "params val_fraction",
        {"data.val_fraction": 1.5},
        ["params.yaml: data.val_fraction: expected a number in [0.01, 0.99], found 1.5"],
    ),
    (
        "params val_by",
        {"data.val_by": "random"},
        ["params.yaml: data.val_by: expected one of ['group', 'clip'], found 'random'"],
    ),
    (
        "params seed",
        {"data.seed": "42"},
        ["params.yaml: data.seed: expected an integer in [0, 4294967295]"],
    ),
    ("params unknown key", {"data.colour": "red"}, ["params.yaml: data: unknown key 'colour'"]),
]


@pytest.mark.parametrize(("case", "overrides", "words"), BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_no_output(tmp_path, case, overrides, words):
    content = corrupt(case)
    if isinstance(content, bytes):
        (tmp_path / "data.pkl").write_bytes(content)
        content = None
    line = error_line(run_extract(tmp_path, content, {"data.classes": [0, 1], **overrides}))
    for word in words:
        assert word in line, line
    assert_no_output(tmp_path)


def test_bad_input_leaves_an_existing_subset_untouched(tmp_path):
    ok_subset(tmp_path, run_extract(tmp_path, small())).close()
    before = {p.name: p.read_bytes() for p in (tmp_path / "data" / "subset").iterdir()}
    error_line(run_extract(tmp_path, corrupt("nan")))
    after = {p.name: p.read_bytes() for p in (tmp_path / "data" / "subset").iterdir()}
    assert after == before
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["subset"]


class TouchMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.slow
def test_a_pickle_that_runs_a_command_is_refused_by_the_stage(tmp_path):
    marker = tmp_path / "MARKER"
    data = small()
    target(data)["keypoint"] = TouchMarker(marker)
    write_pkl(data, tmp_path / "data.pkl")
    write_params(tmp_path, {"data.pkl": "data.pkl", "data.classes": [0, 1]})
    result = run_stage("extract", tmp_path, timeout=60)
    line = error_line(result)
    assert line.startswith("error: data.pkl: not a usable pickle: refused to load global ")
    assert "system" in line
    assert not marker.exists()
    assert_no_output(tmp_path)
    assert result.stdout == ""
