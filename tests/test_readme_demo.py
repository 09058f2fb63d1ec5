"""The README's demo journeys that start from `make demo` (the command itself, then the everyday
DVC commands), as a user runs them. `make demo` runs once per test run in a fresh clone
(conftest's session-wide `made`, shared with test_readme_models and test_team); each test that
changes the demo works on a copy of it, so the tests pass alone and in any order. The model's
journeys are in test_readme_models.py: two modules, so `make test`'s workers share them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import readme
from conftest import REPO
from usershell import (
    ALL_STAGES,
    EVAL_ONLY,
    IMPROVED,
    TINY,
    md5,
    queue_names,
    ran,
    sh,
    wait_for_queue,
)

from pipeline.project import workspace

pytestmark = pytest.mark.e2e


@pytest.fixture
def clone(made: dict, tmp_path: Path) -> Path:
    """A copy of the clone with its demo, for a test that changes either."""
    return Path(shutil.copytree(made["clone"], tmp_path / "clone", symlinks=True))


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


def test_a_typo_added_with_plus_stops_the_run(demo: Path) -> None:
    """`+` adds a key that no stage reads: the check stage names the nearest known one, and no
    experiment is recorded."""
    before = sh("dvc exp list --name-only", demo).stdout
    done = sh("dvc exp run -S +model.hiden=64", demo, ok=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    line = "error: params.yaml: model: unknown key 'hiden' (did you mean 'hidden'?)"
    assert line in (done.stdout + done.stderr).splitlines()
    assert sh("dvc exp list --name-only", demo).stdout == before
