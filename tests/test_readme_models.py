"""The README's journeys with the demo's models (backbones and late fusion, what the model does,
the notebook's protocol, using the model), as a user runs them, each on a copy of the session's
`make demo` workspace (conftest's `demo`), so the tests pass alone and in any order."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import readme
from PIL import Image
from usershell import (
    ALL_STAGES,
    EVAL_ONLY,
    IMPROVED,
    TINY,
    md5,
    ran,
    sh,
    user_env,
)

from pipeline.files import pklio
from pipeline.project import workspace

pytestmark = pytest.mark.e2e


def test_backbones_and_late_fusion_in_the_demo(demo: Path) -> None:
    arch, bone, diff = readme.block("Backbones and late fusion")
    assert ran(sh(arch, demo).stdout) == IMPROVED  # the ensemble does not read `model`
    joint = md5(demo / "models" / "streams" / "joint.pt")
    assert ran(sh(bone, demo).stdout) == {"check", "stream@bone", "fuse"}  # one stream
    assert md5(demo / "models" / "streams" / "joint.pt") == joint
    rows = [line.split() for line in sh(diff, demo).stdout.splitlines()[1:]]
    models = ("metrics/baseline.json", "metrics/improved.json", "metrics/ensemble.json")
    assert {row[0] for row in rows} == set(models)  # all three, changed or not (`--all`)
    assert {row[1] for row in rows if row[0] == models[2]} >= {"accuracy", "weight_bone"}
    # the baseline reads neither `model` nor `fusion`: not retrained, every change nothing
    assert all(row[-1] in ("0", "0.0", "-") for row in rows if row[0] == models[0])
    ensemble = json.loads((demo / "metrics" / "ensemble.json").read_text())
    weights = {k.removeprefix("weight_"): v for k, v in ensemble.items() if k.startswith("weight_")}
    assert list(weights) == TINY["fusion.streams"]  # the listed streams, in their order
    assert sum(weights.values()) == pytest.approx(1.0)


def test_a_stream_added_to_the_list_is_trained_alone_and_fused(demo: Path) -> None:
    """`fusion.streams` is dvc.yaml's `foreach`: adding a stream makes one new stage, and reruns
    fuse (which reads the list and the folder of models) and check (the whole params.yaml) but
    no stream already trained. In a copy of the demo, which `make demo` ran on TINY's streams."""
    listed = TINY["fusion.streams"]
    assert "motion" not in listed
    models = demo / "models" / "streams"
    assert sorted(p.name for p in models.glob("*.pt")) == sorted(f"{s}.pt" for s in listed)
    kept = {s: md5(models / f"{s}.pt") for s in listed}
    workspace.override_file(demo / "params.yaml", {"fusion.streams": [*listed, "motion"]})
    expected = {"check", "stream@motion", "fuse"}
    assert set(json.loads(sh("dvc status --json", demo).stdout)) == expected
    assert ran(sh("dvc repro", demo).stdout) == expected
    assert {s: md5(models / f"{s}.pt") for s in listed} == kept
    assert (models / "motion.pt").is_file()
    metrics = json.loads((demo / "metrics" / "ensemble.json").read_text())
    weights = [k.removeprefix("weight_") for k in metrics if k.startswith("weight_")]
    assert weights == [*listed, "motion"] and "accuracy_motion" in metrics
    assert sh("dvc status", demo).stdout.strip() == "Data and pipelines are up to date."


def test_a_backbone_file_added_reruns_the_model_stages_and_bytecode_nothing(demo: Path) -> None:
    """The model stages depend on the folder pipeline/models, so a backbone added there needs no
    line in dvc.yaml; the bytecode Python writes beside it is in .dvcignore, or every new Python
    (or first import of a module) would make them look changed. In a copy of the demo."""
    models = demo / "pipeline" / "models"
    (models / "__pycache__").mkdir(exist_ok=True)  # none where PYTHONDONTWRITEBYTECODE is set
    (models / "__pycache__" / "tcn.cpython-399.pyc").write_bytes(b"bytecode")
    assert sh("dvc status", demo).stdout.strip() == "Data and pipelines are up to date."
    (models / "mynet.py").write_text('"""A new backbone."""\n')
    streams = {f"stream@{s}" for s in TINY["fusion.streams"]}
    stale = {"check", "fuse", *streams} | {
        f"{s}@{m}" for s in ("train", "evaluate") for m in ("baseline", "improved")
    }
    assert set(json.loads(sh("dvc status --json", demo).stdout)) == stale


def test_see_what_the_model_does_in_the_demo(demo: Path) -> None:
    errors, one_clip = readme.block("See what the model does")
    predictions = pd.read_csv(demo / "metrics" / "improved" / "predictions.csv")
    wrong = predictions[predictions["actual"] != predictions["predicted"]]
    top = wrong.sort_values("confidence", ascending=False, kind="stable").head(4)
    sh(errors, demo)
    assert sorted(p.name for p in (demo / "renders").iterdir()) == sorted(
        f"{clip}.gif" for clip in top["frame_dir"]
    )
    sh(one_clip, demo)
    frames = pd.read_csv(demo / "data" / "subset" / "index.csv").set_index("frame_dir")["frames"]
    with Image.open(demo / "renders" / "v_ApplyEyeMakeup_g01_c01.gif") as gif:
        assert gif.n_frames == min(32, frames["v_ApplyEyeMakeup_g01_c01"])


def test_the_notebooks_protocol_in_the_demo(demo: Path) -> None:
    (command,) = readme.block("The notebook's protocol")
    assert command.count("-S ") >= 20 and "model.lstm.pool=padded" in command
    out = sh(command, demo).stdout
    assert ran(out) == ALL_STAGES  # data.val_by=clip: a new validation split, so from extract
    manifest = json.loads((demo / "data" / "shards" / "manifest.json").read_text())
    assert manifest["shape"][1] == 1  # one person, as the notebook
    improved = json.loads((demo / "metrics" / "improved.json").read_text())
    assert improved["epochs_run"] == 15 and improved["views"] == 1


def test_use_the_model_in_the_demo(demo: Path) -> None:
    """After an eval-only experiment: the model file stores the eval params it was trained with,
    evaluate used the experiment's, and so must predict, for p.csv to equal predictions.csv."""
    eval_only = sh("dvc exp run -S model.eval.flip=true", demo).stdout
    assert ran(eval_only) == EVAL_ONLY
    want = pd.read_csv(demo / "metrics" / "improved" / "predictions.csv")
    data = pklio.load_pickle(demo / "data" / "raw" / "synthetic_2d.pkl")
    ann = next(a for a in data["annotations"] if a["frame_dir"] == want["frame_dir"][0])
    np.savez(
        demo / "my_clip.npz",
        keypoint=ann["keypoint"],
        keypoint_score=ann["keypoint_score"],
        img_shape=ann["img_shape"],
    )
    on_pickle, on_clip, export = readme.block("Use the model")

    sh(on_pickle, demo)
    got = pd.read_csv(demo / "p.csv")
    assert got["frame_dir"].tolist() == want["frame_dir"].tolist()
    assert got["predicted"].tolist() == want["predicted"].tolist()
    assert (got["confidence"] - want["confidence"]).abs().max() <= 1e-6
    table = sh(on_clip, demo).stdout.splitlines()
    assert table[1].split()[:2] == ["my_clip", want["predicted"][0]], table
    assert sh(export, demo).stdout.startswith("export: models/improved.pt -> improved.onnx")

    done = subprocess.run(
        [sys.executable, "-c", readme.python_block("Use the model")],
        cwd=demo,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    printed = ast.literal_eval(done.stdout.strip())
    assert printed == want["predicted"].tolist()
