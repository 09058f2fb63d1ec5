"""Training that is killed or interrupted resumes exactly; runs are reproducible; outputs atomic.

Tiny shards are built once per module. The reference run trains `improved` uninterrupted; every
other run (a second clean run, a run killed with SIGKILL, one stopped with SIGINT, runs that
kill themselves at the moment an output is being published) must end, after a rerun, with the
same train curves, metrics and weights, and evaluate must then give the same metrics JSON.
Epochs are made slow enough to interrupt by the amount of data, not by sleeping in the code.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import finish, make_dataset, run_stages, start_stage, write_params, write_pkl

from pipeline import evaluate
from pipeline import train as train_stage

pytestmark = pytest.mark.slow  # stages in subprocesses or trained workspaces

EPOCHS = 6
TINY = {
    "data.pkl": "data/raw/tiny.pkl",
    "data.classes": [0, 1, 2],
    "shards.frames": 16,
    "shards.workers": 1,
    "train.threads": 1,
    "train.batch_size": 8,
    "model.hidden": 16,
    "model.epochs": EPOCHS,
    # augmentation and dropout draw random numbers every epoch: resuming must replay them
    "model.augment.scale": 0.1,
    "model.augment.rotate": 10.0,
    "model.augment.flip": 0.5,
}
MODEL = Path("models/improved.pt")
RESUME = Path("models/improved.resume.pt")
TRAIN_METRICS = Path("metrics/train/improved")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """params.yaml and data/shards for 3 classes, about 0.2 s per epoch on one CPU thread."""
    root = tmp_path_factory.mktemp("resume") / "prepared"
    data = make_dataset(
        labels=(0, 1, 2),
        groups=range(1, 11),
        test_groups=(1, 2),
        clips_per_group=6,
        frames=(16, 40),
        seed=1,
    )
    write_pkl(data, root / TINY["data.pkl"])
    write_params(root, TINY)
    run_stages(root, "extract", "shards")
    return root


def workspace(prepared: Path, dest: Path) -> Path:
    """A fresh copy of the prepared folder (params and shards, nothing trained)."""
    dest.mkdir(parents=True)
    shutil.copy2(prepared / "params.yaml", dest / "params.yaml")
    shutil.copytree(prepared / "data" / "shards", dest / "data" / "shards")
    return dest


def train(ws: Path, kill_at: tuple[str, str, int] | None = None) -> tuple[int, str, str]:
    """`python -m pipeline.train improved` as a process; (exit code, stdout, stderr)."""
    return finish(start_stage("train", ws, "improved", kill_at=kill_at), timeout=120)


def train_here(ws: Path) -> tuple[int, str, str]:
    """The same stage in this process, as its __main__ runs it: faster (torch is loaded)."""
    threads = torch.get_num_threads()
    out, err = io.StringIO(), io.StringIO()
    code: Any = 0
    torch.set_flush_denormal(True)
    try:
        with contextlib.chdir(ws), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            train_stage.main(["improved"])
    except SystemExit as exc:
        code = exc.code
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads)
    return code or 0, out.getvalue(), err.getvalue()


def evaluate_here(ws: Path) -> dict[str, Any]:
    """The evaluate stage in this process (torch is loaded already); its metrics JSON."""
    threads = torch.get_num_threads()
    out = io.StringIO()
    try:
        with contextlib.chdir(ws), contextlib.redirect_stdout(out):
            evaluate.main(["improved"])
    finally:
        torch.set_flush_denormal(False)  # runtime.setup turned it on; hypothesis needs it off
        torch.set_num_threads(threads)
    return json.loads((ws / "metrics" / "improved.json").read_text())


def outcome(ws: Path) -> dict[str, Any]:
    """Everything a finished train + evaluate leaves: curves, metrics, weights, predictions."""
    ckpt = torch.load(ws / MODEL, map_location="cpu", weights_only=True)
    weights = ckpt.pop("model")
    return {
        "train metrics": (ws / TRAIN_METRICS / "metrics.json").read_text(),
        "curves": {
            str(p.relative_to(ws)): p.read_text()
            for p in sorted((ws / TRAIN_METRICS / "plots").rglob("*.tsv"))
        },
        "checkpoint": ckpt,
        "weights": {k: v.tolist() for k, v in weights.items()},
        "evaluate": evaluate_here(ws),
        "predictions": (ws / "metrics" / "improved" / "predictions.csv").read_text(),
    }


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    for key in want:
        assert got[key] == want[key], f"{key} differs from the uninterrupted run"


@pytest.fixture(scope="module")
def reference(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    ws = workspace(prepared, tmp_path_factory.mktemp("reference") / "ws")
    code, out, err = train_here(ws)
    assert code == 0, err
    assert "resuming" not in out
    assert not (ws / RESUME).exists(), "the resume file is removed once the run completes"
    result = outcome(ws)
    assert len(result["curves"]) == 5
    assert all(len(text.splitlines()) == EPOCHS + 1 for text in result["curves"].values())
    assert result["evaluate"]["epochs_run"] == EPOCHS
    return result


def resume_epoch(ws: Path) -> int:
    """The last epoch saved in the resume file, 0 while there is none (or it is mid-rename)."""
    try:
        return int(torch.load(ws / RESUME, map_location="cpu", weights_only=True)["epoch"])
    except Exception:
        return 0


def wait_until(ready: Callable[[], bool], process: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the run ended before the moment it was to be stopped"
        assert time.monotonic() < deadline, "the run never reached the moment to stop it"
        time.sleep(0.01)


def assert_no_partial_outputs(ws: Path) -> None:
    """Outputs are complete or absent; temporaries only under a '.<name>.*.tmp' name."""
    if (ws / MODEL).exists():
        torch.load(ws / MODEL, map_location="cpu", weights_only=True)
    if (ws / TRAIN_METRICS / "metrics.json").exists():
        json.loads((ws / TRAIN_METRICS / "metrics.json").read_text())
    for path in (ws / "models").iterdir():
        assert path.name in ("improved.pt", "improved.resume.pt") or (
            path.name.startswith(".") and path.name.endswith(".tmp")
        ), path


# --- reproducible ------------------------------------------------------------------------------


def test_two_runs_with_the_same_params_give_identical_metrics(prepared, reference, tmp_path):
    """The reference ran in this process; this one runs as `python -m pipeline.train`."""
    ws = workspace(prepared, tmp_path / "ws")
    code, out, err = train(ws)
    assert code == 0, err
    assert_same(outcome(ws), reference)


# --- SIGKILL and SIGINT mid-run ----------------------------------------------------------------


def signal_mid_run(ws, signum: int, after_epoch: int) -> tuple[int, str, str, float]:
    """Train in a subprocess, send `signum` once epoch `after_epoch` is saved; return its exit
    code, output and the seconds it took to stop after the signal."""
    process = start_stage("train", ws, "improved")
    try:
        wait_until(lambda: resume_epoch(ws) >= after_epoch, process)
        sent = time.monotonic()
        process.send_signal(signum)
        code, out, err = finish(process, timeout=30)
    finally:
        finish(process)
    return code, out, err, time.monotonic() - sent


def test_killed_mid_run_the_rerun_resumes_and_matches_the_uninterrupted_run(
    prepared, reference, tmp_path
):
    ws = workspace(prepared, tmp_path / "ws")
    code, _, _, _ = signal_mid_run(ws, signal.SIGKILL, after_epoch=2)
    assert code == -signal.SIGKILL
    saved = resume_epoch(ws)
    assert 2 <= saved < EPOCHS, f"killed after epoch {saved}: not mid-run"
    assert not (ws / MODEL).exists()
    assert_no_partial_outputs(ws)

    code, out, err = train_here(ws)
    assert code == 0, err
    assert f"train improved: resuming after epoch {saved} from {RESUME}" in out
    assert f"epoch {saved:3d}:" not in out and f"epoch {saved + 1:3d}:" in out
    assert not (ws / RESUME).exists()
    assert_same(outcome(ws), reference)


def test_sigint_stops_soon_saying_how_to_resume_and_the_rerun_completes(
    prepared, reference, tmp_path
):
    ws = workspace(prepared, tmp_path / "ws")
    code, out, err, seconds = signal_mid_run(ws, signal.SIGINT, after_epoch=1)
    assert seconds < 10, "Ctrl-C took more than 10 s to stop training"
    assert code == 130, (code, err)
    message = err.strip().splitlines()[-1]
    assert message.startswith("train improved: interrupted in epoch "), err
    assert "dvc repro" in message and str(RESUME) in message, message
    assert "Traceback" not in err
    saved = resume_epoch(ws)
    assert 1 <= saved < EPOCHS and f"epochs up to {saved} are saved" in message
    assert not (ws / MODEL).exists()
    assert_no_partial_outputs(ws)

    code, out, err = train_here(ws)
    assert code == 0, err
    assert f"resuming after epoch {saved}" in out
    assert_same(outcome(ws), reference)


# --- killed while publishing an output ----------------------------------------------------------


def test_killed_while_publishing_the_model_leaves_the_old_one_and_rerun_finishes(
    prepared, reference, tmp_path
):
    """The kill lands after the last epoch, when the new weights are fully written under a
    temporary name: the old model must still be at models/improved.pt, byte for byte."""
    ws = workspace(prepared, tmp_path / "ws")
    (ws / "models").mkdir()
    torch.save({"old": torch.zeros(2)}, ws / MODEL)
    old = (ws / MODEL).read_bytes()
    code, _, err = train(ws, kill_at=("os.replace", "improved.pt", 1))
    assert code == -signal.SIGKILL, err
    assert (ws / MODEL).read_bytes() == old
    assert resume_epoch(ws) == EPOCHS
    assert any(p.name.startswith(".improved.pt.") for p in (ws / "models").iterdir())
    assert_no_partial_outputs(ws)

    code, out, err = train_here(ws)
    assert code == 0, err
    assert f"resuming after epoch {EPOCHS}" in out
    assert_same(outcome(ws), reference)  # the restored curves are logged too


def test_killed_while_writing_the_curves_leaves_the_old_model_with_its_curves(
    prepared, reference, tmp_path
):
    """The curves are written from the history once training is done and published with the
    model; a kill while dvclive writes them (its metrics.json) leaves the old model and the old
    curves, byte for byte, and the rerun finishes from the resume file."""
    ws = workspace(prepared, tmp_path / "ws")
    (ws / "models").mkdir()
    torch.save({"old": torch.zeros(2)}, ws / MODEL)
    (ws / TRAIN_METRICS / "plots").mkdir(parents=True)
    (ws / TRAIN_METRICS / "metrics.json").write_text('{"step": 99}\n')
    old = {p: p.read_bytes() for p in (ws / MODEL, ws / TRAIN_METRICS / "metrics.json")}
    code, _, err = train(ws, kill_at=("json.dump", "", 1))
    assert code == -signal.SIGKILL, err
    assert {p: p.read_bytes() for p in old} == old
    assert not list((ws / TRAIN_METRICS / "plots").iterdir())
    assert resume_epoch(ws) == EPOCHS
    assert_no_partial_outputs(ws)

    code, out, err = train_here(ws)
    assert code == 0, err
    assert f"resuming after epoch {EPOCHS}" in out
    assert not list(ws.rglob("*.tmp")), "the killed run's temporaries are removed by the rerun"
    assert_same(outcome(ws), reference)
