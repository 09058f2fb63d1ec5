"""Stage `shards` (and extract before it): sampling, persons, normalization, the notebook's
protocol, shard files, parallel builds, real clips, bad params."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import preprocess_reference as reference
import pytest
from conftest import (
    REALDATA,
    call_stage,
    error_line,
    make_annotation,
    make_dataset,
    requires_realdata,
    run_stage,
    run_stages,
    write_params,
    write_pkl,
)

from pipeline import shards
from pipeline.core import skeleton
from pipeline.dataset import preprocess
from pipeline.dataset.subset import Subset
from pipeline.files import pklio

NOTEBOOK = {
    "shards.frames": 64,
    "shards.sampling": "head",
    "shards.normalize": "video_mean",
    "shards.persons": 1,
    "shards.person_order": "first",
    "shards.min_score": 0.0,
}
IMAGE_1P = {"shards.normalize": "image", "shards.persons": 1, "shards.person_order": "first"}


def build(folder: Path, data: Any, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write data (a dataset, or a path to a pickle) and params, run extract and shards here."""
    pkl = data if isinstance(data, Path) else write_pkl(data, folder / "data.pkl")
    base = {"data.pkl": str(pkl), "data.classes": "all", "shards.workers": 1}
    write_params(folder, {**base, **(overrides or {})})
    run_stages(folder, "extract", "shards")
    return load(folder)


def load(folder: Path) -> dict[str, Any]:
    """manifest plus, per split, the concatenated shards and the table of clips."""
    out = folder / "data" / "shards"
    manifest = json.loads((out / "manifest.json").read_text())
    result: dict[str, Any] = {"manifest": manifest}
    for split, info in manifest["splits"].items():
        arrays = [np.load(out / name) for name in info["shards"]]
        table = pd.read_csv(out / f"{split}.csv", keep_default_na=False)
        result[split] = (np.concatenate(arrays), table)
    return result


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {a["frame_dir"]: a for a in data["annotations"]}


def notebook_item(ann: dict[str, Any], max_len: int = 64) -> tuple[np.ndarray, int]:
    """The seed notebook's SkeletonDataset.__getitem__, minus the torch conversion."""
    kp = ann["keypoint"][0]
    T = kp.shape[0]
    kp = kp.astype(np.float32)
    seq = kp.reshape(T, -1)
    seq = seq - seq.mean(axis=0, keepdims=True)
    if T >= max_len:
        seq = seq[:max_len]
        seq_len = max_len
    else:
        pad = np.zeros((max_len - T, seq.shape[1]), dtype=np.float32)
        seq = np.concatenate([seq, pad], axis=0)
        seq_len = T
    return seq, seq_len


def assert_matches_notebook(shards: dict[str, Any], annotations: dict[str, dict[str, Any]]):
    checked = 0
    for split in ("train", "val", "test"):
        x, table = shards[split]
        assert x.shape == (len(table), 1, 64, 1, 17, 3)
        for k, (name, length) in enumerate(zip(table["frame_dir"], table["length"], strict=True)):
            seq, seq_len = notebook_item(annotations[name])
            assert length == seq_len
            np.testing.assert_allclose(
                x[k, 0, :, 0, :, :2].reshape(64, 34), seq, rtol=1e-6, atol=1e-6
            )
            score = annotations[name]["keypoint_score"][0, :seq_len].astype(np.float32)
            np.testing.assert_array_equal(x[k, 0, :seq_len, 0, :, 2], score)
            assert not x[k, 0, seq_len:].any()
            checked += 1
    return checked


def frame_coded(data: dict[str, Any]) -> dict[str, Any]:
    """Every joint's x is its frame number, y is 120: a shard then says which frames it took."""
    for ann in data["annotations"]:
        kp = ann["keypoint"]
        kp[..., 0] = np.arange(kp.shape[1])[None, :, None]
        kp[..., 1] = 120
    return data


def taken_frames(x: np.ndarray) -> np.ndarray:
    """Frame numbers from image-normalized frame-coded shards: x = (t - 160) / 160."""
    return np.rint(x[..., 0, 0, 0] * 160 + 160).astype(np.int64)


# --- the notebook's protocol --------------------------------------------------------------------


def test_head_video_mean_first_person_equals_the_notebook(tmp_path):
    data = make_dataset(
        labels=(0, 1),
        groups=range(1, 6),
        test_groups=(1,),
        clips_per_group=1,
        persons=(1, 2),
        frames=(40, 90),
        seed=4,
    )
    for ann in data["annotations"]:  # person 1 is the more confident: "first" must ignore that
        ann["keypoint_score"][1:] = 1.0
    lengths = [a["keypoint"].shape[1] for a in data["annotations"]]
    assert min(lengths) < 64 < max(lengths)
    assert max(a["keypoint"].shape[0] for a in data["annotations"]) == 2
    shards = build(tmp_path, data, NOTEBOOK)
    assert assert_matches_notebook(shards, by_name(data)) == len(data["annotations"])
    assert shards["manifest"]["splits"]["test"]["views"] == 1  # head sampling has one view


def real_clips_of_two_classes(folder: Path) -> Path:
    """The 6 real clips (all ApplyEyeMakeup) and a copy of each as ApplyLipstick (label 1), in
    the same splits: extract refuses a single class, as nothing could be learned from it."""
    data = pklio.load_pickle(REALDATA / "ucf101_mini_2d.pkl")
    copies = [
        {
            **ann,
            "frame_dir": ann["frame_dir"].replace("ApplyEyeMakeup", "ApplyLipstick"),
            "label": 1,
        }
        for ann in data["annotations"]
    ]
    for members in data["split"].values():
        members += [name.replace("ApplyEyeMakeup", "ApplyLipstick") for name in members]
    data["annotations"] += copies
    return write_pkl(data, folder / "real2.pkl")


@requires_realdata
def test_real_clips_under_the_notebook_protocol_equal_the_notebook(tmp_path):
    path = real_clips_of_two_classes(tmp_path)
    shards = build(tmp_path, path, {**NOTEBOOK, "data.val_by": "clip"})
    annotations = by_name(pklio.load_pickle(path))
    assert assert_matches_notebook(shards, annotations) == 12


# --- real clips through both stages -------------------------------------------------------------


@requires_realdata
@pytest.mark.slow
def test_real_clips_pass_through_extract_and_shards(tmp_path):
    path = real_clips_of_two_classes(tmp_path)
    write_params(
        tmp_path,
        {"data.pkl": str(path), "data.val_by": "clip", "data.classes": [0, 1], "shards.workers": 1},
    )
    extract = run_stage("extract", tmp_path)
    assert extract.returncode == 0, extract.stderr
    assert "train 4, val 2 (clip), test 6 clips; skipped 0 with no person" in extract.stdout
    shards = run_stage("shards", tmp_path)
    assert shards.returncode == 0, shards.stderr
    assert shards.stdout.startswith("shards: train 4, val 2, test 6 clips of shape [64, 2, 17, 3]")

    original = by_name(pklio.load_pickle(path))
    sub = Subset(tmp_path / "data" / "subset")
    index = sub.index
    assert sorted(index["frame_dir"]) == sorted(original)
    assert list(index["split"]).count("test") == 6
    assert sorted(index.loc[index["split"] != "test", "frame_dir"]) == [
        f"v_{name}_g08_c0{c}" for name in ("ApplyEyeMakeup", "ApplyLipstick") for c in (1, 2, 3)
    ]
    assert sub.meta.classes == ["ApplyEyeMakeup", "ApplyLipstick"]
    for i, row in index.iterrows():
        ann = original[row["frame_dir"]]
        assert (row["persons"], row["frames"]) == ann["keypoint"].shape[:2]
        assert (row["img_h"], row["img_w"]) == (256, 340)
        keypoint, score = sub.clip(i)
        np.testing.assert_array_equal(keypoint, ann["keypoint"])
        np.testing.assert_array_equal(score, ann["keypoint_score"])
    assert (
        dict(zip(index["frame_dir"], index["persons"], strict=True))["v_ApplyEyeMakeup_g01_c01"]
        == 2
    )
    sub.close()

    out = load(tmp_path)
    for split, clips, views in (("train", 4, 1), ("val", 2, 1), ("test", 6, 10)):
        x, table = out[split]
        assert x.shape == (clips, views, 64, 2, 17, 3) and x.dtype == np.float32
        assert np.isfinite(x).all()
        assert list(table["length"]) == [64] * clips  # every real clip has more than 64 frames
        assert list(table["target"]) == [int("Lipstick" in n) for n in table["frame_dir"]]
        for k, name in enumerate(table["frame_dir"]):
            assert x[k, :, :, 0].any()
            two = original[name]["keypoint"].shape[0] == 2
            assert x[k, :, :, 1].any() == two  # the second person slot is filled only if present
    assert out["manifest"]["splits"]["test"]["views"] == 10


# --- uniform sampling ---------------------------------------------------------------------------


def test_uniform_sampling_covers_the_clip_in_segments():
    rng = np.random.default_rng(0)
    for length in (65, 100, 128, 257, 1000):
        idx = reference.frame_indices(length, 64, "uniform", 6, rng)
        assert idx.shape == (6, 64)
        middles = np.floor((np.arange(64) + 0.5) * length / 64).astype(np.int64)
        np.testing.assert_array_equal(idx[0], middles)
        seg = np.arange(64)
        assert (idx >= seg * length // 64).all() and (idx * 64 < (seg + 1) * length).all()
        assert idx[0, 0] <= length / 64 and idx[0, -1] >= length - length / 64 - 1
        assert (idx[1:] != idx[0]).any()
    a = reference.frame_indices(300, 64, "uniform", 4, np.random.default_rng(7))
    b = reference.frame_indices(300, 64, "uniform", 4, np.random.default_rng(7))
    c = reference.frame_indices(300, 64, "uniform", 4, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert (a[1:] != c[1:]).any() and (a[0] == c[0]).all()
    head = reference.frame_indices(300, 64, "head", 1, None)
    np.testing.assert_array_equal(head[0], np.arange(64))


def test_stage_samples_views_within_segments_and_keeps_short_clips_whole(tmp_path):
    data = make_dataset(labels=(0, 1), groups=range(1, 5), test_groups=(1,), frames=(100, 200))
    data["annotations"][0] = make_annotation("v_ApplyEyeMakeup_g01_c01", 0, frames=30)  # test
    data["annotations"][3] = make_annotation("v_ApplyEyeMakeup_g02_c02", 0, frames=30)  # train
    frame_coded(data)
    params = {**IMAGE_1P, "shards.test_views": 5, "shards.train_views": 3, "shards.seed": 3}
    out = build(tmp_path, data, params)
    assert out["manifest"]["splits"]["test"]["views"] == 5
    assert out["manifest"]["splits"]["train"]["views"] == 3
    assert out["train"][0].shape[1] == 3 and out["val"][0].shape[1] == 1
    annotations = by_name(data)
    short = 0
    for split in ("train", "val", "test"):
        x, table = out[split]
        for k, (name, length) in enumerate(zip(table["frame_dir"], table["length"], strict=True)):
            total = annotations[name]["keypoint"].shape[1]
            frames = taken_frames(x[k])  # [views, 64]
            if total <= 64:
                short += 1
                assert length == total
                np.testing.assert_array_equal(
                    frames[:, :total], np.arange(total)[None].repeat(len(frames), 0)
                )
                assert not x[k, :, total:].any()  # zero padding, score channel included
                continue
            assert length == 64
            seg = np.arange(64)
            middles = np.floor((seg + 0.5) * total / 64)
            np.testing.assert_array_equal(frames[0], middles)
            assert (frames >= seg * total // 64).all() and (frames * 64 < (seg + 1) * total).all()
            if split != "val":
                assert (frames[1:] != frames[0]).any()
    assert short == 2

    test_x = out["test"][0]
    write_params(
        tmp_path, {"data.pkl": "data.pkl", "data.classes": "all", "shards.workers": 1, **params}
    )
    assert call_stage("shards", tmp_path).returncode == 0
    np.testing.assert_array_equal(load(tmp_path)["test"][0], test_x)  # same seed, same views
    write_params(
        tmp_path,
        {
            "data.pkl": "data.pkl",
            "data.classes": "all",
            "shards.workers": 1,
            **params,
            "shards.seed": 4,
        },
    )
    assert call_stage("shards", tmp_path).returncode == 0
    other = load(tmp_path)["test"][0]
    np.testing.assert_array_equal(other[:, 0], test_x[:, 0])
    assert not np.array_equal(other[:, 1:], test_x[:, 1:])


# --- persons, normalization, scores -------------------------------------------------------------


def test_person_order_score_keeps_the_most_confident_persons_first(tmp_path):
    data = make_dataset(
        labels=(0, 1), groups=range(1, 5), test_groups=(1,), persons=3, frames=(10, 20)
    )
    for ann in data["annotations"]:
        ann["keypoint_score"][:] = np.array([0.5, 0.6, 0.9], np.float16)[:, None, None]
    out = build(tmp_path, data, {**IMAGE_1P, "shards.persons": 2, "shards.person_order": "score"})
    annotations = by_name(data)
    x, table = out["train"]
    for k, (name, n) in enumerate(zip(table["frame_dir"], table["length"], strict=True)):
        kp = annotations[name]["keypoint"].astype(np.float32)
        want = (kp[[2, 1]] - np.float32([160, 120])) / np.float32([160, 120])
        np.testing.assert_allclose(x[k, 0, :n].transpose(1, 0, 2, 3)[..., :2], want, atol=1e-6)
        np.testing.assert_allclose(x[k, 0, :n, :, 0, 2], [[0.9, 0.6]] * n, atol=1e-3)

    order = preprocess.person_order(annotations[name]["keypoint_score"], 1, "score")
    assert list(order) == [2]
    assert list(preprocess.person_order(annotations[name]["keypoint_score"], 2, "first")) == [0, 1]


def test_body_normalization_centres_the_hips_and_scales_the_torso(tmp_path):
    data = make_dataset(labels=(0, 1), groups=range(1, 5), test_groups=(1,), frames=40)
    for ann in data["annotations"]:
        kp = ann["keypoint"]
        t = np.arange(40, dtype=np.float32)
        for joint, (x0, y0) in {
            skeleton.LEFT_HIP: (150, 120),
            skeleton.RIGHT_HIP: (170, 120),
            skeleton.LEFT_SHOULDER: (150, 70),
            skeleton.RIGHT_SHOULDER: (170, 70),
        }.items():
            kp[0, :, joint, 0] = x0 + t  # walking right, torso 50 px
            kp[0, :, joint, 1] = y0
    out = build(tmp_path, data, {"shards.normalize": "body", "shards.persons": 1})
    for split in ("train", "val", "test"):
        x = out[split][0][:, 0, :40, 0, :, :2]  # all 40 frames are kept
        hip = (x[:, :, skeleton.LEFT_HIP] + x[:, :, skeleton.RIGHT_HIP]) / 2
        shoulder = (x[:, :, skeleton.LEFT_SHOULDER] + x[:, :, skeleton.RIGHT_SHOULDER]) / 2
        np.testing.assert_allclose(hip.mean(axis=1), 0.0, atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(shoulder - hip, axis=-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(hip[:, 1, 0] - hip[:, 0, 0], 1 / 50, atol=1e-5)


def test_body_normalization_falls_back_to_image_when_hips_are_never_seen():
    xy = np.random.default_rng(0).random((1, 5, 17, 2)).astype(np.float32) * 100
    score = np.ones((1, 5, 17), np.float32)
    score[..., skeleton.LEFT_HIP] = 0
    body = reference.normalize(xy, score, "body", (240, 320), 0.0)
    image = reference.normalize(xy, score, "image", (240, 320), 0.0)
    np.testing.assert_array_equal(body, image)


def test_video_mean_subtracts_each_persons_own_mean():
    rng = np.random.default_rng(1)
    xy = (rng.random((2, 30, 17, 2)) * 100 + np.array([0, 200])[:, None, None, None]).astype(
        np.float32
    )
    out = reference.normalize(xy, np.ones((2, 30, 17), np.float32), "video_mean", (240, 320), 0)
    np.testing.assert_allclose(out.mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(out, xy - xy.mean(axis=1, keepdims=True), atol=1e-5)


def test_image_normalization_maps_the_corners_to_minus_and_plus_one(tmp_path):
    data = make_dataset(labels=(0, 1), groups=range(1, 5), test_groups=(1,), frames=10)
    wide = make_annotation("v_ApplyEyeMakeup_g03_c02", 0, frames=10, img_shape=(256, 340))
    data["annotations"][[a["frame_dir"] for a in data["annotations"]].index(wide["frame_dir"])] = (
        wide
    )
    for ann in data["annotations"]:
        h, w = ann["img_shape"]
        ann["keypoint"][0, :, 0] = (0, 0)
        ann["keypoint"][0, :, 1] = (w, h)
        ann["keypoint"][0, :, 2] = (w / 2, h / 2)
        ann["keypoint"][0, :, 3] = (w, 0)
    out = build(tmp_path, data, {**IMAGE_1P, "shards.sampling": "head"})
    for split in ("train", "val", "test"):
        x = out[split][0][:, 0, :10, 0]
        np.testing.assert_array_equal(x[:, :, 0, :2], -1.0)
        np.testing.assert_array_equal(x[:, :, 1, :2], 1.0)
        np.testing.assert_array_equal(x[:, :, 2, :2], 0.0)
        np.testing.assert_array_equal(
            x[:, :, 3, :2], np.broadcast_to([1.0, -1.0], x.shape[:2] + (2,))
        )
        assert np.abs(x[..., :2]).max() <= 1.0  # every joint lies in the image


def test_min_score_zeroes_low_joints(tmp_path):
    data = make_dataset(labels=(0, 1), groups=range(1, 5), test_groups=(1,), frames=10)
    for ann in data["annotations"]:
        ann["keypoint_score"][0, :, 3] = 0.25
        ann["keypoint_score"][0, 4:, 5] = 0.25  # joint 5 is low in later frames only
    visibility_off = {**IMAGE_1P, "shards.min_joint_visibility": 0.0}
    out = build(tmp_path, data, {**visibility_off, "shards.min_score": 0.3})
    kept = build(tmp_path / "keep", data, {**visibility_off, "shards.min_score": 0.0})
    for split in ("train", "val", "test"):
        x, ref = out[split][0][:, :, :10, 0], kept[split][0][:, :, :10, 0]
        assert not x[:, :, :, 3].any()
        assert not x[:, :, 4:, 5].any()
        np.testing.assert_array_equal(x[:, :, :4, 5], ref[:, :, :4, 5])
        np.testing.assert_array_equal(x[:, :, :, 6:], ref[:, :, :, 6:])
        assert (ref[:, :, :, 3, 2] == np.float32(np.float16(0.25))).all()


def test_joints_rarely_seen_in_train_are_zeroed_in_every_split(tmp_path):
    data = make_dataset(labels=(0, 1), groups=range(1, 5), test_groups=(1,), frames=10)
    for ann in data["annotations"]:
        in_test = "_g01_" in ann["frame_dir"]
        ann["keypoint_score"][0, :, 13] = 0.9 if in_test else 0.0  # knee: seen in test only
        ann["keypoint_score"][0, 3:, 14] = 0.0  # other knee: seen in 30% of every clip's frames
        ann["keypoint_score"][0, 6:, 15] = 0.0  # ankle: seen in 60%, kept at threshold 0.5
    out = build(tmp_path, data, {**IMAGE_1P, "shards.min_joint_visibility": 0.5})
    off = build(tmp_path / "off", data, {**IMAGE_1P, "shards.min_joint_visibility": 0.0})
    assert out["manifest"]["hidden_joints"] == ["left_knee", "right_knee"]
    assert off["manifest"]["hidden_joints"] == []
    for split in ("train", "val", "test"):
        x, ref = out[split][0], off[split][0]
        assert not x[..., [13, 14], :].any()
        keep = [j for j in range(17) if j not in (13, 14)]
        np.testing.assert_array_equal(x[..., keep, :], ref[..., keep, :])
    assert off["test"][0][..., 13, 2].any()  # without the option the test knee would show


def test_train_visibility_counts_every_train_person_frame(tmp_path, monkeypatch):
    data = make_dataset(labels=(0, 1), groups=range(1, 5), test_groups=(1,), frames=(5, 150))
    rng = np.random.default_rng(0)
    for ann in data["annotations"]:
        ann["keypoint_score"][..., 0] = rng.random(ann["keypoint_score"].shape[:-1])
        ann["keypoint_score"][..., 3] = 0.3  # at the threshold: not detected
        ann["keypoint_score"][..., 4] = np.nextafter(np.float16(0.3), np.float16(1))
    build(tmp_path, data, {"shards.min_score": 0.3})
    subset = Subset(tmp_path / "data" / "subset")
    want, frames = np.zeros(17, np.int64), 0
    for i in subset.rows("train"):
        score = subset.clip(i)[1].reshape(-1, 17)
        want += (score > np.float16(0.3)).sum(axis=0)
        frames += len(score)
    assert want[3] == 0 and want[4] == frames and 0 < want[0] < frames
    for chunk in (1 << 18, 100):  # one read per run of clips, and many with rows past 64 * k
        monkeypatch.setattr(shards, "_CHUNK_ROWS", chunk)
        visible, seen = shards.train_visibility(subset, 0.3)
        assert seen == frames and visible.tolist() == want.tolist()
    subset.close()


def test_rare_joints_compares_the_detected_share_with_the_threshold():
    visible = np.array([10, 5, 4, 0] + [10] * 13)
    assert preprocess.rare_joints(visible, 10, 0.5) == [2, 3]
    assert preprocess.rare_joints(visible, 10, 0.0) == []
    assert preprocess.rare_joints(visible, 0, 0.5) == []


# --- shard files, parallel builds ---------------------------------------------------------------


def test_size_splits_into_shards_whose_concatenation_matches_one_shard(tmp_path):
    data = make_dataset(labels=(0, 1), groups=range(1, 6), test_groups=(1,), frames=(5, 80))
    whole = build(tmp_path / "one", data, {"shards.size": 1024})
    parts = build(tmp_path / "many", data, {"shards.size": 3})
    for split in ("train", "val", "test"):
        clips = len(whole[split][1])
        names = parts["manifest"]["splits"][split]["shards"]
        assert names == [f"{split}-{n:05d}.npy" for n in range(-(-clips // 3))]
        sizes = [len(np.load(tmp_path / "many" / "data" / "shards" / n)) for n in names]
        assert sizes == [3] * (clips // 3) + ([clips % 3] if clips % 3 else [])
        assert whole["manifest"]["splits"][split]["shards"] == [f"{split}-00000.npy"]
        np.testing.assert_array_equal(parts[split][0], whole[split][0])
        pd.testing.assert_frame_equal(parts[split][1], whole[split][1])
        assert parts["manifest"]["splits"][split]["clips"] == clips == len(parts[split][0])
    assert len(parts["manifest"]["splits"]["train"]["shards"]) > 1


@pytest.mark.slow
def test_two_workers_write_the_same_bytes_as_one(tmp_path):
    data = make_dataset(labels=(0, 1), groups=range(1, 6), test_groups=(1,), frames=(5, 80))
    build(tmp_path, data, {"shards.size": 2, "shards.test_views": 3})
    shards_dir = tmp_path / "data" / "shards"
    one = {p.name: p.read_bytes() for p in shards_dir.iterdir()}
    write_params(
        tmp_path,
        {
            "data.pkl": "data.pkl",
            "data.classes": "all",
            "shards.size": 2,
            "shards.test_views": 3,
            "shards.workers": 2,
        },
    )
    result = run_stage("shards", tmp_path)
    assert result.returncode == 0, result.stderr
    two = {p.name: p.read_bytes() for p in shards_dir.iterdir()}
    assert sorted(two) == sorted(one) and len(one) > 6
    manifests = [json.loads(d.pop("manifest.json")) for d in (one, two)]
    assert two == one
    assert [m["params"].pop("workers") for m in manifests] == [1, 2]
    assert manifests[0] == manifests[1]


def test_shards_in_one_process_read_each_new_subset(tmp_path):
    """A second run in the same process must not reuse the clips of the first run's subset."""
    first = build(tmp_path / "a", make_dataset(labels=(0, 1), frames=(5, 9), seed=0))
    data = make_dataset(labels=(0, 1), frames=(5, 9), seed=1)
    second = build(tmp_path / "b", data)
    assert not np.array_equal(first["train"][0], second["train"][0])
    annotations = by_name(data)
    x, table = second["train"]
    for k, (name, n) in enumerate(zip(table["frame_dir"], table["length"], strict=True)):
        score = annotations[name]["keypoint_score"]
        np.testing.assert_array_equal(x[k, 0, :n, 0, :, 2], score[0].astype(np.float32))


# --- bad params ---------------------------------------------------------------------------------

BAD_PARAMS = [
    ("shards.frames", 0, "expected an integer in [1, 100000], found 0"),
    ("shards.sampling", "random", "expected one of ['uniform', 'head'], found 'random'"),
    ("shards.normalize", "none", "expected one of ['image', 'video_mean', 'body']"),
    ("shards.persons", 3, "expected an integer in [1, 2], found 3"),
    ("shards.min_score", 1.5, "expected a number in [0.0, 1.0], found 1.5"),
    ("shards.size", "big", "expected an integer >= 1, found 'big'"),
    ("shards.colour", "red", "unknown key 'colour'"),
]


@pytest.mark.parametrize(("key", "value", "expected"), BAD_PARAMS, ids=[b[0] for b in BAD_PARAMS])
def test_bad_shards_params_fail_before_any_output(tmp_path, key, value, expected):
    data = make_dataset(labels=(0, 1), groups=range(1, 5), test_groups=(1,), frames=(5, 8))
    write_pkl(data, tmp_path / "data.pkl")
    write_params(tmp_path, {"data.pkl": "data.pkl", "data.classes": "all", key: value})
    assert call_stage("extract", tmp_path).returncode == 0
    subset = {p.name: p.read_bytes() for p in (tmp_path / "data" / "subset").iterdir()}
    line = error_line(call_stage("shards", tmp_path))
    assert line.startswith(f"error: params.yaml: {key.rsplit('.', 1)[0]}"), line
    assert key.split(".")[1] in line and expected in line
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["subset"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "data" / "subset").iterdir()} == subset


def test_shards_without_a_subset_is_a_one_line_error(tmp_path):
    write_params(tmp_path)
    line = error_line(call_stage("shards", tmp_path))
    assert line == "error: data/subset: no subset found (run `python -m pipeline.extract` first)"
    assert not (tmp_path / "data").exists() or not list((tmp_path / "data").iterdir())
