"""Every registered backbone goes the whole way: train, evaluate, predict and export to ONNX,
each on tiny data, the exported model giving torch's probabilities. The backbones come from the
registry, so a new one is tested here without a line changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import call_stage, make_dataset, run_stages, write_params, write_pkl

from pipeline.files import clipfiles
from pipeline.models.registry import REGISTRY
from pipeline.predict import Predictor

PKL = "data/raw/ucf101_2d.pkl"

pytestmark = [pytest.mark.usefixtures("torch_state_kept"), pytest.mark.slow]


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Extract and shards once, for every backbone."""
    work = tmp_path_factory.mktemp("backbones")
    data = make_dataset(labels=(0, 1, 2), groups=range(1, 7), persons=(1, 2), frames=(8, 30))
    write_pkl(data, work / PKL)
    write_params(work, {"data.classes": [0, 1, 2], "shards.frames": 16, "shards.workers": 1})
    run_stages(work, "extract", "shards")
    return work


@pytest.mark.parametrize("arch", list(REGISTRY))
def test_a_backbone_trains_evaluates_predicts_and_exports(
    shards: Path, tmp_path: Path, arch: str
) -> None:
    import onnxruntime as ort

    work = tmp_path / arch
    shutil.copytree(shards, work)
    overrides = {
        "shards.frames": 16,
        "shards.workers": 1,
        "data.classes": [0, 1, 2],
        "train.threads": 1,
        "train.batch_size": 4,
        "model.arch": arch,
        "model.hidden": 8,
        "model.layers": 3,  # graph nets: one stage of doubled width and halved frame rate
        "model.epochs": 1,
        "model.eval": {"clips": 2, "flip": True},
    }
    write_params(work, overrides)
    run_stages(work, ("train", "improved"), ("evaluate", "improved"))
    done = call_stage(
        "predict", work, "models/improved.pt", PKL, "--split", "test1", "--out", "p.csv"
    )
    assert done.returncode == 0, done.stderr
    got = pd.read_csv(work / "p.csv")
    want = pd.read_csv(work / "metrics/improved/predictions.csv")
    assert (got[["frame_dir", "predicted"]] == want[["frame_dir", "predicted"]]).all().all()
    np.testing.assert_allclose(got["confidence"], want["confidence"], rtol=0, atol=1e-6)

    done = call_stage("export", work, "models/improved.pt", "--format", "onnx", "--out", "m.onnx")
    assert done.returncode == 0, done.stderr
    predictor = Predictor.load(work / "models/improved.pt", device="cpu")
    clips, _ = clipfiles.read(work / PKL, "test1")
    prepared = [predictor.preprocess(clip) for clip in clips]
    x = np.stack([views[: predictor.views] for views, _ in prepared])
    lengths = np.array([n for _, n in prepared])
    session = ort.InferenceSession(work / "m.onnx", providers=["CPUExecutionProvider"])
    (probs,) = session.run(["probabilities"], {"x": x, "lengths": lengths})
    np.testing.assert_allclose(probs, predictor.probabilities(clips), rtol=0, atol=1e-4)
