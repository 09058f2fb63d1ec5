"""The README's demo journeys (`make demo`, then the everyday DVC commands, the backbones, the
plots, the notebook's protocol and the model's use), as a user runs them. `make demo` runs once
per test run in a fresh clone (conftest's session-wide `made`, shared with test_team); each test
that changes the demo works on a copy of it, so the tests pass alone and in any order."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import readme
from conftest import REPO
from PIL import Image
from usershell import (
    ALL_STAGES,
    EVAL_ONLY,
    IMPROVED,
    TINY,
    md5,
    queue_names,
    ran,
    sh,
    user_env,
    wait_for_queue,
)

from pipeline.files import pklio
from pipeline.project import workspace

pytestmark = pytest.mark.e2e


@pytest.fixture
def clone(made: dict, tmp_path: Path) -> Path:
    """A copy of the clone with its demo, for a test that changes either."""
    return Path(shutil.copytree(made["clone"], tmp_path / "clone", symlinks=True))


@pytest.fixture
def demo(made: dict, tmp_path: Path) -> Path:
    """A copy of the demo's workspace as `make demo` left it (a git + DVC repo of its own)."""
    return Path(shutil.copytree(made["clone"] / ".demo", tmp_path / "demo", symlinks=True))


def test_make_demo_runs_and_commits_the_pipeline(made: dict, clone: Path) -> None:
    make_install, make_demo, make_test = readme.block(
        "Skeleton action recognition on UCF101, as a DVC pipeline"
    )
    assert (make_install, make_demo, make_test) == ("make install", "make demo", "make test")
    out = made["out"]  # `make demo` ran in the fixture; `clone` is a copy of its clone
    sh(make_install, clone)  # the clone's venv is installed already: nothing to do, no error
    assert (clone / ".venv" / "bin" / "dvc").is_file()
    assert made["after"] == made["before"]  # "leaves your params.yaml and results alone"
    demo = clone / ".demo"
    assert ran(out) == ALL_STAGES
    assert "metrics/improved.json" in out and "metrics/baseline.json" in out  # the table
    assert "dvc_plots/index.html" in out.splitlines()[-1]  # ends with the page of plots
    assert (demo / "dvc_plots" / "index.html").is_file()
    assert list((demo / "metrics" / "gallery").glob("*.gif"))  # pictures of skeletons
    log = workspace.git(demo, "log", "--format=%s").stdout.splitlines()
    assert log == ["demo: pipeline run", "pipeline workspace and its raw data"]
    assert workspace.git(demo, "status", "--porcelain").stdout == ""
    assert sh("dvc status", demo).stdout.strip() == "Data and pipelines are up to date."


def test_make_demo_again_reuses_the_workspace(clone: Path) -> None:
    demo = clone / ".demo"
    keep = [demo / "my-notes.txt", demo / ".dvc" / "plots" / "my-template.json"]
    for path in keep:
        path.write_text("mine")
    out = sh("make demo", clone).stdout
    assert "reusing the workspace" in out and ran(out) == set()
    assert all(path.read_text() == "mine" for path in keep)


def test_make_demo_refuses_a_folder_it_did_not_make(clone: Path) -> None:
    """(In a copy of the clone: nothing here needs the demo.)"""
    theirs = clone / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("years of work")
    done = sh("make demo DEMO_DIR=theirs", clone, ok=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "exists and is not an empty folder or a pipeline workspace" in done.stderr
    assert [p.name for p in theirs.iterdir()] == ["thesis.tex"]


# --- Everyday DVC commands, in the demo's workspace ------------------------------------------


def test_everyday_dvc_commands_in_the_demo(demo: Path) -> None:
    pkl = demo / "data" / "raw" / "synthetic_2d.pkl"
    before = md5(pkl)
    baseline_model = md5(demo / "models" / "baseline.pt")
    commands = iter(readme.block("Everyday DVC commands"))

    repro = sh(next(commands), demo).stdout
    assert ran(repro) == set() and "up to date" in repro
    assert ran(sh(next(commands), demo).stdout) == IMPROVED  # -S model.hidden=128
    improved_model = md5(demo / "models" / "improved.pt")
    assert ran(sh(next(commands), demo).stdout) == EVAL_ONLY
    assert md5(demo / "models" / "improved.pt") == improved_model  # not retrained
    shown = sh(next(commands), demo).stdout  # exp show --only-changed --drop ...
    header = next(line for line in shown.splitlines() if "Experiment" in line).split()
    assert header[:2] == ["Experiment", "Created"] and "model.hidden" in header, shown
    assert {"improved_accuracy", "error_reduction"} <= set(header), shown
    assert not any("/" in column for column in header), shown  # no hashes, no other metrics
    shown = sh(next(commands), demo).stdout  # metrics show: the two models
    lines = shown.splitlines()
    assert [line.split()[0] for line in lines[1:]] == [
        "metrics/baseline.json",
        "metrics/improved.json",
    ]
    assert "accuracy" in lines[0].split() and max(map(len, lines)) < 160, shown
    diff = sh(next(commands), demo).stdout  # metrics diff: improved changed, baseline did not
    assert "metrics/improved.json" in diff and "metrics/baseline.json" not in diff
    sh(next(commands), demo)  # plots show
    html = (demo / "dvc_plots" / "index.html").read_text()
    assert "Improved confusion (test clips)" in html and "ApplyEyeMakeup" in html
    assert "cdn.jsdelivr.net" not in html and "window.vegaEmbed" in html  # draws offline

    assert "Queued" in sh(next(commands), demo).stdout  # two experiments queued
    sh(next(commands), demo)  # queue start
    status = wait_for_queue(demo)
    names = queue_names(status)
    assert len(names) == 2 and "Failed" not in status, status
    for name in names:  # each retrains the improved model alone
        assert ran(sh(f"dvc queue logs {name}", demo).stdout) == IMPROVED
    shown = sh(next(commands), demo).stdout  # exp show: the swept params and accuracy alone
    header = next(line for line in shown.splitlines() if "Experiment" in line).split()
    assert header == [
        "Experiment",
        "metrics/improved.json:accuracy",
        "model.hidden",
        "model.layers",
    ], shown
    assert all(name in shown for name in names)
    assert next(commands, None) is None, "a command of the block that this test does not run"
    assert md5(demo / "models" / "baseline.pt") == baseline_model
    assert md5(pkl) == before


def test_a_threads_sweep_retrains_every_model_as_the_readme_warns(demo: Path) -> None:
    """The README: with `-S train.threads=1` in a sweep, "since every model reads `train`, such
    a sweep retrains the baseline and the stream models in every experiment too". (`dvc status`
    after the change names the stages an experiment would run from; the demo here already has 1
    thread, so 2 stands in for the change.)"""
    assert "such a sweep retrains the baseline and the stream models" in " ".join(
        (REPO / "README.md").read_text().split()
    )
    workspace.override_file(demo / "params.yaml", {"train.threads": 2})
    changed = set(json.loads(sh("dvc status --json", demo).stdout))
    models = {"train@baseline", "train@improved", "fuse"} | {
        f"stream@{s}" for s in TINY["fusion.streams"]
    }
    assert changed == {"check", "evaluate@baseline", "evaluate@improved"} | models, changed


def test_backbones_and_late_fusion_in_the_demo(demo: Path) -> None:
    arch, bone, diff = readme.block("Backbones and late fusion")
    assert ran(sh(arch, demo).stdout) == IMPROVED  # the ensemble does not read `model`
    joint = md5(demo / "models" / "streams" / "joint.pt")
    assert ran(sh(bone, demo).stdout) == {"check", "stream@bone", "fuse"}  # one stream
    assert md5(demo / "models" / "streams" / "joint.pt") == joint
    shown = sh(diff, demo).stdout
    assert "metrics/ensemble.json" in shown and "metrics/improved.json" in shown
    assert "metrics/baseline.json" not in shown
    ensemble = json.loads((demo / "metrics" / "ensemble.json").read_text())
    weights = {k.removeprefix("weight_"): v for k, v in ensemble.items() if k.startswith("weight_")}
    assert list(weights) == TINY["fusion.streams"]  # the listed streams, in their order
    assert sum(weights.values()) == pytest.approx(1.0)


def test_a_typo_added_with_plus_stops_the_run(demo: Path) -> None:
    """`+` adds a key that no stage reads: the check stage names the nearest known one, and no
    experiment is recorded."""
    before = sh("dvc exp list --name-only", demo).stdout
    done = sh("dvc exp run -S +model.hiden=64", demo, ok=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    line = "error: params.yaml: model: unknown key 'hiden' (did you mean 'hidden'?)"
    assert line in (done.stdout + done.stderr).splitlines()
    assert sh("dvc exp list --name-only", demo).stdout == before


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
