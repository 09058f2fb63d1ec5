"""Late fusion: a model per input stream (`stream@<stream>`), their probabilities averaged with
weights chosen on validation (`fuse`), and the params that shape each stream's model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import (
    PARAMS_YAML,
    call_stage,
    error_line,
    make_dataset,
    run_stages,
    write_params,
    write_pkl,
)

from pipeline.core import params
from pipeline.core.errors import PipelineError
from pipeline.core.paths import model_path
from pipeline.learning import checkpoint, fusion

pytestmark = pytest.mark.usefixtures("torch_state_kept")


def test_the_grid_sums_to_one_and_starts_at_equal_weights():
    grid = fusion.simplex(4, 0.25)
    assert len(grid) == 35  # compositions of 4 quarters into 4 parts
    np.testing.assert_allclose(grid.sum(1), 1.0)
    np.testing.assert_allclose(grid[0], [0.25] * 4)
    assert fusion.simplex(2, 0.5).tolist()[0] == [0.5, 0.5]


def test_choose_weighs_the_model_that_knows_more():
    targets = np.array([0, 1, 0, 1])
    good = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.1, 0.9]])
    noise = np.full((4, 2), 0.5)
    wrong = good[:, ::-1]
    weights = fusion.choose(np.stack([noise, good, wrong]), targets, 0.1)
    np.testing.assert_allclose(weights, [0.0, 1.0, 0.0])
    # two equally good models: the tie goes to the plain average
    np.testing.assert_allclose(fusion.choose(np.stack([good, good]), targets, 0.1), [0.5, 0.5])
    np.testing.assert_allclose(
        fusion.fused(np.array([0.5, 0.5]), np.stack([good, noise])), (good + noise) / 2
    )


def test_a_stream_model_is_the_ensemble_section_on_its_stream_with_its_overrides(tmp_path):
    ensemble = yaml.safe_load(PARAMS_YAML.read_text())["ensemble"]
    other = {"mean": "mean_max", "mean_max": "mean"}[ensemble["tcn"]["frame_pool"]]
    write_params(tmp_path, {"fusion.bone": {"epochs": 3, "tcn": {"frame_pool": other}}})
    _, joint = params.load_model("stream-joint", tmp_path / "params.yaml")
    _, bone = params.load_model("stream-bone", tmp_path / "params.yaml")
    assert joint.streams == ["joint"] and joint.epochs == ensemble["epochs"]
    assert joint.net.frame_pool == ensemble["tcn"]["frame_pool"]
    assert bone.streams == ["bone"] and bone.epochs == 3 and bone.net.frame_pool == other


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"epochs": 0}, r"fusion\.motion\.epochs: expected an integer in \[1, 10000\], found 0"),
        ({"streams": ["bone"]}, r"fusion\.motion: unknown key 'streams'"),
        ({"color": 1}, r"fusion\.motion: unknown key 'color'"),
        ({"tcn": {"frame_pool": "max"}}, r"fusion\.motion\.tcn\.frame_pool: expected one of"),
        ({"augment": {"scale": 2}}, r"fusion\.motion\.augment: scale|fusion\.motion\.augment\."),
    ],
)
def test_a_bad_override_names_its_key(tmp_path, override, message):
    write_params(tmp_path, {"fusion.motion": override})
    with pytest.raises(PipelineError, match=message):
        params.load_model("stream-motion", tmp_path / "params.yaml")


def test_fusion_step_must_divide_one(tmp_path):
    write_params(tmp_path, {"fusion.step": 0.3})
    with pytest.raises(PipelineError, match=r"fusion\.step: expected 1 divided by a whole"):
        params.load("fusion", path=tmp_path / "params.yaml")


def test_a_stream_not_listed_in_fusion_streams_is_not_trained(tmp_path):
    """No stage owns the model file of a stream that fusion.streams does not list, and fuse
    would never read it: training one stops before any work, naming the list."""
    write_params(tmp_path, {"fusion.streams": ["joint", "bone"]})
    assert error_line(call_stage("train", tmp_path, "stream-motion")) == (
        "error: params.yaml: fusion.streams: expected a list naming motion (only the listed "
        "streams' models are trained and fused), found ['joint', 'bone']"
    )
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize(
    "streams",
    [["joint", "hand"], ["bone", "bone"], [], "joint"],
    ids=["unknown", "repeated", "empty", "not-a-list"],
)
def test_the_check_stage_refuses_an_unknown_or_repeated_stream(tmp_path, streams):
    """dvc.yaml makes a stage of each listed stream: `check` stops a bad list in one line."""
    write_params(tmp_path, {"fusion.streams": streams})
    assert error_line(call_stage("check", tmp_path)) == (
        "error: params.yaml: fusion.streams: expected a non-empty list of distinct values from "
        f"['bone', 'bone_motion', 'joint', 'motion'], found {streams!r}"
    )


def test_a_stream_models_file_and_retrain_hint_name_its_stage():
    assert model_path("stream-bone_motion") == Path("models/streams/bone_motion.pt")
    assert model_path("improved") == Path("models/improved.pt")
    hint = checkpoint.retrain(Path("/work/x") / model_path("stream-bone_motion"))
    assert hint == "retrain it with `dvc repro stream@bone_motion`"
    assert checkpoint.retrain("models/improved.pt") == "retrain it with `dvc repro train@improved`"


@pytest.mark.slow
def test_fuse_reads_the_listed_stream_models_in_the_lists_order(tmp_path: Path):
    write_pkl(
        make_dataset(labels=(0, 1, 2), groups=range(1, 9)), tmp_path / "data/raw/ucf101_2d.pkl"
    )
    tiny = {
        "data.classes": [0, 1, 2],
        "shards.frames": 8,
        "shards.test_views": 2,
        "shards.workers": 1,
        "train.threads": 1,
        "ensemble.epochs": 2,
        "ensemble.hidden": 8,
        "ensemble.eval": {"clips": 2, "flip": True},
        "fusion.step": 0.25,
    }
    write_params(tmp_path, {**tiny, "fusion.streams": ["joint", "bone"]})
    run_stages(tmp_path, "extract", "shards", ("train", "stream-joint"), ("train", "stream-bone"))
    models = tmp_path / "models" / "streams"
    assert sorted(p.name for p in models.iterdir()) == ["bone.pt", "joint.pt"]
    (models / "motion.pt").write_bytes(b"a stale model of a stream no longer listed")
    write_params(tmp_path, {**tiny, "fusion.streams": ["bone", "joint"]})
    done = call_stage("fuse", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("fuse: accuracy ")
    assert done.stdout.rstrip().endswith(
        tuple(f"weights bone {b:.2f}, joint {1 - b:.2f}" for b in (0, 0.25, 0.5, 0.75, 1))
    ), done.stdout
    metrics = json.loads((tmp_path / "metrics/ensemble.json").read_text())
    weights = {k: v for k, v in metrics.items() if k.startswith("weight_")}
    assert list(weights) == ["weight_bone", "weight_joint"]  # the listed ones, in list order
    assert sum(weights.values()) == pytest.approx(1.0)
    assert all(w in (0, 0.25, 0.5, 0.75, 1) for w in weights.values())
    alone = [k for k in metrics if k.startswith("accuracy_")]
    assert alone == ["accuracy_bone", "accuracy_joint"]
    assert metrics["test_clips"] > 0 and 0 <= metrics["accuracy"] <= 1
    table = (tmp_path / "metrics/ensemble/predictions.csv").read_text().splitlines()
    assert len(table) == metrics["test_clips"] + 1
    for stream in ("joint", "bone"):  # each stream model's curves, where dvc.yaml says
        assert json.loads((tmp_path / f"metrics/train/stream-{stream}/metrics.json").read_text())
    # a listed stream's model is read: missing, it is named
    write_params(tmp_path, {**tiny, "fusion.streams": ["bone", "motion"]})
    (models / "motion.pt").unlink()
    line = error_line(call_stage("fuse", tmp_path))
    assert line.startswith("error: models/streams/motion.pt: model not found"), line


def test_bone_motion_is_each_bones_change_to_the_next_frame():
    import torch

    from pipeline.learning import features

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(2, 6, 1, 17, 3, generator=gen) + 0.1  # every joint present
    lengths = torch.tensor([6, 4])
    x[1, 4:] = 0
    bone = features.build_input(x, lengths, ["bone"], True)
    moved = features.build_input(x, lengths, ["bone_motion"], True)
    root = 0  # the nose has no bone, so no bone motion either
    expected = bone[:, 1:, ..., :2] - bone[:, :-1, ..., :2]
    torch.testing.assert_close(moved[0, :5, :, 1:, :2], expected[0, :, :, 1:])
    assert moved[0, 5].abs().sum() == 0  # the last frame has no successor
    assert moved[1, 3:].abs().sum() == 0  # nor has clip 1's, and its padding stays zero
    assert moved[..., root, :].abs().sum() == 0
    assert features.in_channels(["bone_motion"], True) == 3
