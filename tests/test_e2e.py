"""End to end: the real `dvc` CLI on tiny synthetic data, in one shared temporary git repo.

The tests run in file order and build on each other (repro, no-op repro, experiments, queue),
as a user's session would; the workspace is prepared once per module to keep the suite fast.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from pipeline import workspace

pytestmark = pytest.mark.e2e

TINY = {
    "data.source": "synthetic",
    "data.pkl": "data/raw/synthetic_2d.pkl",
    "data.classes": [0, 1, 2],
    "synthetic.clips_per_group": [1, 1],
    "synthetic.frames": [20, 60],
    "shards.frames": 16,
    "shards.test_views": 2,
    "baseline.epochs": 2,
    "baseline.hidden": 8,
    "model.epochs": 2,
    "model.hidden": 16,
    "model.eval.clips": 2,
}


def notebook_settings() -> list[str]:
    """The `-S` values of the README's notebook-protocol command, so the README stays true."""
    text = (Path(workspace.PROJECT) / "README.md").read_text()
    section = text.split("## The notebook's protocol", 1)[1].split("```bash", 1)[1]
    command = section.split("```", 1)[0].replace("\\\n", " ")
    return shlex.split(command)[3:]  # after `dvc exp run`


def dvc(repo: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    if shutil.which("dvc") is None:
        pytest.fail("the dvc CLI is not on PATH (run the tests through `make test`)")
    done = subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def ran(output: str) -> set[str]:
    """Stage names that `dvc repro` / `dvc exp run` actually ran."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> dict:
    path = workspace.create(tmp_path_factory.mktemp("e2e") / "repo", TINY)
    first = dvc(path, "repro")
    workspace.git(path, "add", "-A")
    workspace.git(path, "commit", "-q", "-m", "first run")
    return {"path": path, "first": first.stdout}


ALL_STAGES = {
    "fetch", "extract", "shards", "train@baseline", "train@improved",
    "evaluate@baseline", "evaluate@improved", "summary",
}  # fmt: skip


def test_repro_from_nothing_runs_every_stage(repo: dict) -> None:
    assert ran(repo["first"]) == ALL_STAGES
    path = repo["path"]
    for name in ("baseline", "improved"):
        metrics = json.loads((path / "metrics" / f"{name}.json").read_text())
        assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["test_clips"] > 0
        assert metrics["epochs_run"] == 2 and metrics["device"] == "cpu"
        assert (path / "models" / f"{name}.pt").stat().st_size > 0
        assert len((path / "metrics" / name / "predictions.csv").read_text().splitlines()) == (
            metrics["test_clips"] + 1
        )
    summary = json.loads((path / "metrics" / "summary.json").read_text())
    assert summary["test_split"] == "test1" and summary["classes"] == 3


def test_second_repro_runs_nothing(repo: dict) -> None:
    again = dvc(repo["path"], "repro")
    assert ran(again.stdout) == set()
    assert "up to date" in again.stdout


def test_metrics_show_has_both_models(repo: dict) -> None:
    table = dvc(repo["path"], "metrics", "show").stdout
    assert "metrics/baseline.json" in table and "metrics/improved.json" in table
    shown = json.loads(dvc(repo["path"], "metrics", "show", "--json").stdout)
    files = next(iter(shown.values()))["data"]
    assert {"metrics/baseline.json", "metrics/improved.json", "metrics/summary.json"} <= set(files)


def test_plots_show_renders_curves_and_confusion(repo: dict) -> None:
    dvc(repo["path"], "plots", "show", "-o", "plots_html")
    html = (repo["path"] / "plots_html" / "index.html").read_text()
    assert "Improved confusion (test)" in html and "Loss (train and validation)" in html
    assert "ApplyEyeMakeup" in html  # the confusion matrix is labelled with class names


def test_exp_run_with_hidden_reruns_only_improved(repo: dict) -> None:
    path = repo["path"]
    baseline_before = (path / "metrics" / "baseline.json").read_text()
    out = dvc(path, "exp", "run", "-S", "model.hidden=12").stdout
    assert ran(out) == {"train@improved", "evaluate@improved", "summary"}
    assert (path / "metrics" / "baseline.json").read_text() == baseline_before
    diff = json.loads(dvc(path, "metrics", "diff", "--json").stdout)
    assert "metrics/baseline.json" not in diff
    assert "metrics/improved.json" in diff or "metrics/train/improved/metrics.json" in diff
    shown = json.loads(dvc(path, "exp", "show", "--json").stdout)
    workspace_row = next(rev for rev in shown if rev["rev"] == "workspace")["data"]
    assert workspace_row["params"]["params.yaml"]["data"]["model"]["hidden"] == 12
    assert "metrics/improved.json" in workspace_row["metrics"]


def test_queued_sweep_runs_with_queue_start(repo: dict) -> None:
    path = repo["path"]
    dvc(path, "exp", "run", "--queue", "-S", "model.hidden=10", "--name", "h10")
    notebook = notebook_settings()
    assert notebook.count("-S") >= 20 and "model.pool=padded" in notebook
    small = ["-S", "model.hidden=8", "-S", "model.epochs=2"]  # the protocol, at test size
    dvc(path, "exp", "run", "--queue", *notebook, *small, "--name", "notebook")
    dvc(path, "queue", "start", "--jobs", "1")
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        status = dvc(path, "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        time.sleep(2)
    dvc(path, "queue", "stop", "--kill")
    assert "Failed" not in status, status
    table = json.loads(dvc(path, "exp", "show", "--json").stdout)
    names = {
        exp.get("name")
        for rev in table
        for group in (rev.get("experiments") or [])
        for exp in (group.get("revs") or [])
    }
    assert {"h10", "notebook"} <= names, names


def test_exp_run_on_another_fold_reruns_from_extract(repo: dict) -> None:
    path = repo["path"]
    out = dvc(path, "exp", "run", "-S", "data.folds=3", "-S", "data.fold=2").stdout
    assert ran(out) == ALL_STAGES - {"fetch"}
    meta = json.loads((path / "data" / "subset" / "meta.json").read_text())
    assert meta["validation"] == "group, fold 2 of 3"
