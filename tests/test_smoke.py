"""Every stage and command once, in this process, on a few clips and one epoch: the fast lane's
end-to-end check (`make test-fast`), in the spirit of lightning's fast_dev_run. The thorough
tests of each stage live in their own modules; these check that the hand-offs agree."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import call_stage, make_dataset, run_stages, write_params, write_pkl

from pipeline.core import params
from pipeline.dataset.manifest import Manifest
from pipeline.learning import checkpoint

PKL = "data/raw/ucf101_2d.pkl"
MODELS = ("baseline", "improved")
TINY = {
    "data.classes": [0, 1, 2],
    "shards.frames": 8,
    "shards.test_views": 2,
    "shards.workers": 1,
    "train.threads": 1,
    "baseline.epochs": 1,
    "baseline.hidden": 8,
    "model.epochs": 1,
    "model.hidden": 8,
    "model.eval.clips": 2,
}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("smoke")
    data = make_dataset(labels=(0, 1, 2), groups=range(1, 7), test_groups=(1, 2), frames=(6, 14))
    write_pkl(data, work / PKL)
    write_params(work, TINY)
    run_stages(
        work,
        "check",
        "extract",
        "shards",
        *(("train", name) for name in MODELS),
        *(("evaluate", name) for name in MODELS),
        "summary",
        "plots",
    )
    return work


def test_the_stages_hand_each_other_what_they_promise(work: Path) -> None:
    manifest = Manifest.read(work / "data/shards")
    assert manifest.clip_shape == (8, 2, 17, 3) and len(manifest.classes) == 3
    test_clips = manifest.splits["test"].clips
    assert test_clips == 2 * 3 * 2  # 2 test groups, 3 classes, 2 clips a group
    summary = json.loads((work / "metrics/summary.json").read_text())
    for name in MODELS:
        ckpt = checkpoint.load(work / f"models/{name}.pt", params.model_section(name))
        assert ckpt.classes == manifest.classes and ckpt.epochs_run == 1
        metrics = json.loads((work / f"metrics/{name}.json").read_text())
        assert metrics["test_clips"] == test_clips and 0 <= metrics["accuracy"] <= 1
        assert summary[f"{name}_accuracy"] == metrics["accuracy"]
        confusion = pd.read_csv(work / f"metrics/plots/confusion_{name}.csv")
        assert len(confusion) == 3 * 3 and confusion["count"].sum() == test_clips
    assert list((work / "metrics/gallery").glob("*.gif"))


def test_predict_on_the_pickle_matches_evaluate(work: Path) -> None:
    done = call_stage(
        "predict", work, "models/improved.pt", PKL, "--split", "test1", "--out", "p.csv"
    )
    assert done.returncode == 0, done.stderr
    ours = pd.read_csv(work / "p.csv").sort_values("frame_dir", ignore_index=True)
    theirs = pd.read_csv(work / "metrics/improved/predictions.csv")
    theirs = theirs.sort_values("frame_dir", ignore_index=True)
    assert list(ours["predicted"]) == list(theirs["predicted"])


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_render_and_export_read_the_model_file_alone(work: Path) -> None:
    done = call_stage("render", work, "data/subset", "--errors", "1", "--out", "gifs")
    assert done.returncode == 0, done.stderr
    assert len(list((work / "gifs").glob("*.gif"))) == 1
    done = call_stage(
        "export", work, "models/baseline.pt", "--format", "torchscript", "--out", "b.pt"
    )
    assert done.returncode == 0, done.stderr
    exported = torch.jit.load(str(work / "b.pt"))  # as a user of the file loads it
    manifest = Manifest.read(work / "data/shards")
    x = torch.zeros(2, 1, *manifest.clip_shape)
    probs = exported(x, torch.tensor([8, 8]))
    assert probs.shape == (2, 3) and torch.allclose(probs.sum(1), torch.ones(2), atol=1e-5)
