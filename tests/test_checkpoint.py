"""A model file alone is enough to use the model: what train writes, evaluate reads back through
one schema (pipeline.learning.checkpoint), and the fit loop, inference and scoring that produced
it."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import make_dataset, run_stages, section, write_params, write_pkl

from pipeline import evaluate
from pipeline.core import params
from pipeline.core.errors import PipelineError
from pipeline.dataset.manifest import Manifest
from pipeline.dataset.shardset import ShardSet
from pipeline.learning import checkpoint, inference, runtime, training
from pipeline.learning.scoring import score
from pipeline.models import build_model

MANIFEST = Path("data/shards/manifest.json")


pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("torch_state_kept")]


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace where extract, shards, train baseline and evaluate baseline ran on tiny data."""
    work = tmp_path_factory.mktemp("checkpoint")
    write_pkl(make_dataset(labels=(0, 1, 2), groups=range(1, 9)), work / "data/raw/ucf101_2d.pkl")
    write_params(
        work,
        {
            "data.classes": [0, 1, 2],
            "shards.frames": 8,
            "shards.test_views": 2,
            "shards.workers": 1,
            "train.threads": 1,
            "baseline.epochs": 2,
            "baseline.eval": {"clips": 2, "flip": True},
        },
    )
    run_stages(work, "extract", "shards", ("train", "baseline"), ("evaluate", "baseline"))
    return work


def test_the_checkpoint_holds_what_preprocessing_and_the_model_need(work: Path) -> None:
    manifest = json.loads((work / MANIFEST).read_text())
    ckpt = checkpoint.load(work / "models/baseline.pt", "baseline")
    assert ckpt.shards == params.parse("shards", manifest["params"])
    assert (ckpt.shards.frames, ckpt.shards.persons) == (8, 2)
    assert ckpt.hidden_joints == manifest["hidden_joints"]
    assert ckpt.channels == ["x", "y", "score"] == manifest["channels"]
    assert ckpt.classes == manifest["classes"] == ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]
    assert ckpt.labels == manifest["labels"] == [0, 1, 2]  # the pickle's label of each class
    assert ckpt.config == section("baseline", epochs=2, eval={"clips": 2, "flip": True})
    assert ckpt.in_channels == 2 and (ckpt.persons, ckpt.joints) == (2, 17)
    saved = torch.load(work / "models/baseline.pt", weights_only=True)
    assert list(saved) == list(checkpoint.KEYS)
    assert saved["config"] == params.plain(ckpt.config)  # plain values: no class in the file


def test_the_model_is_rebuilt_from_the_file_alone(work: Path, tmp_path: Path) -> None:
    """Without the shards or params.yaml, the file builds the network; its predictions on the
    test split are those the evaluate stage wrote."""
    alone = tmp_path / "baseline.pt"
    shutil.copy(work / "models/baseline.pt", alone)
    ckpt = checkpoint.load(alone, "baseline")
    model = ckpt.build_model()
    test = ShardSet(work / "data/shards", "test")
    runtime.setup(ckpt.train)
    probs = inference.predict(
        model,
        test,
        ckpt.config,
        torch.device("cpu"),
        8,
        ckpt.config.eval.clips,
        ckpt.config.eval.flip,
    )
    table = evaluate.prediction_table(test, probs, ckpt.classes)
    written = (work / "metrics/baseline/predictions.csv").read_text()
    assert table.to_csv(index=False) == written
    metrics = json.loads((work / "metrics/baseline.json").read_text())
    scores = score(test.targets, probs)
    assert (round(scores.accuracy, 6), round(scores.loss, 6)) == (
        metrics["accuracy"],
        metrics["loss"],
    )


def test_shards_with_other_hidden_joints_are_refused(work: Path) -> None:
    ckpt = checkpoint.load(work / "models/baseline.pt", "baseline")
    manifest = Manifest.read(work / MANIFEST.parent)
    ckpt.check_against(manifest, MANIFEST)
    with pytest.raises(PipelineError) as excinfo:
        ckpt.check_against(dataclasses.replace(manifest, hidden_joints=["left_knee"]), MANIFEST)
    assert str(excinfo.value) == (
        f"{work / 'models/baseline.pt'}: its hidden_joints is [], where {MANIFEST} has "
        "['left_knee']; retrain it with `dvc repro train@baseline`"
    )


def test_a_field_of_the_wrong_kind_is_named(work: Path, tmp_path: Path) -> None:
    saved = torch.load(work / "models/baseline.pt", weights_only=True)
    path = tmp_path / "baseline.pt"
    torch.save({**saved, "shards": {**saved["shards"], "frames": 0}}, path)
    with pytest.raises(
        PipelineError,
        match=r"its shards params are not a valid shards section "
        r"\(shards\.frames: expected an integer",
    ):
        checkpoint.load(path, "baseline")
    torch.save({**saved, "epochs_run": 2.5}, path)
    with pytest.raises(PipelineError, match=r"its epochs_run is 2\.5, not a int"):
        checkpoint.load(path, "baseline")
    torch.save({**saved, "labels": ["0", "1", "2"]}, path)
    with pytest.raises(PipelineError, match=r"its labels is \['0', '1', '2'\], not a list of int"):
        checkpoint.load(path, "baseline")
    torch.save({**saved, "labels": [0, 1]}, path)
    with pytest.raises(PipelineError, match="it has 3 classes but 2 labels"):
        checkpoint.load(path, "baseline")
    torch.save({**saved, "hidden_joints": ["left_tail"]}, path)
    with pytest.raises(PipelineError, match="its hidden_joints names 'left_tail', not a COCO-17"):
        checkpoint.load(path, "baseline")


def test_a_model_file_from_before_train_nproc_still_loads(work: Path, tmp_path: Path) -> None:
    """Model files written before a params key existed load as they were trained (one process
    here), rather than asking for a retraining."""
    saved = torch.load(work / "models/baseline.pt", weights_only=True)
    path = tmp_path / "baseline.pt"
    torch.save({**saved, "train": {k: v for k, v in saved["train"].items() if k != "nproc"}}, path)
    assert checkpoint.load(path, "baseline").train.nproc == 1


def test_a_model_file_from_before_the_backbone_settings_still_loads(
    work: Path, tmp_path: Path
) -> None:
    """Files written when `pool` and `frame_pool` sat at the model section's top level (before
    each backbone had its own settings) load with those values under the backbones that read
    them, and give the same logits."""
    saved = torch.load(work / "models/baseline.pt", weights_only=True)
    config = {k: v for k, v in saved["config"].items() if k not in checkpoint.params.BACKBONES}
    old = {**config, "pool": "padded", "frame_pool": "mean_max"}
    path = tmp_path / "baseline.pt"
    torch.save({**saved, "config": old}, path)
    loaded = checkpoint.load(path, "baseline")
    assert loaded.config.net.pool == "padded"
    assert set(loaded.config.nets) == {"lstm", "tcn", "stgcn"}
    assert loaded.config.nets["tcn"].frame_pool == "mean_max"
    assert loaded.build_model().packed is False  # the notebook's padded LSTM, as trained


def test_fit_logs_without_the_stage_name_and_returns_the_best_epoch(work: Path) -> None:
    """The loop is the stage's minus its name: progress through `log`, the selected weights,
    epoch and history in the result; its validation scores are those of `scoring`."""
    cfg = section("baseline", epochs=2, hidden=8)
    train_cfg = section("train", threads=1, batch_size=8)
    shards = work / "data/shards"
    train_set, val_set = ShardSet(shards, "train"), ShardSet(shards, "val")
    device = runtime.setup(train_cfg)
    model = build_model(cfg, 2, train_set.persons, len(train_set.classes), 17)
    lines: list[str] = []
    resume = work / "fit.resume.pt"
    result = training.fit(
        model, cfg, train_cfg, train_set, val_set, device, resume, log=lines.append
    )
    resume.unlink()
    assert [line[:9] for line in lines] == ["epoch   1", "epoch   2"]
    assert [row.epoch for row in result.history] == [1, 2]
    best = max(result.history, key=lambda r: (r.val_acc, -r.val_loss))
    assert result.selected == best
    model.load_state_dict(result.weights)
    probs = inference.predict(model, val_set, cfg, device, 8)
    assert score(val_set.targets, probs).accuracy == best.val_acc


def test_every_stage_that_runs_a_model_flushes_denormals() -> None:
    """Validation inside train and the evaluate stage compute in one float mode."""
    torch.set_flush_denormal(False)
    assert torch.tensor([1e-40]).mul(1.0).item() != 0.0
    runtime.setup(section("train", device="cpu", threads=1))
    assert torch.tensor([1e-40]).mul(1.0).item() == 0.0
