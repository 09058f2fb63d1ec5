"""Training in two processes (DistributedDataParallel, gloo on CPU), launched both ways: by the
stage itself (`train.nproc: 2`) and by torchrun, as the README runs it.

Every process writes a digest of its parameters once training is done, through a probe that
the tests put on PYTHONPATH (a `sitecustomize` wrapping `training.fit`; the pipeline has no
hook for it), so that "the processes end with the same weights" is seen from outside.

How close a 2-process run comes to a 1-process run of the same params, measured on this
module's data (2 classes; 83 train, 23 val, 42 test clips; 4 epochs; seeds 0-4):
- baseline (LSTM, no dropout, no augmentation, no BatchNorm): the same global batches and the
  gradient of the same global mean loss, so only float summation order differs: test accuracy
  and loss equal to 6 decimals, validation loss within 1e-7.
- improved (TCN): each process draws its own dropout and augmentation, and on CPU BatchNorm
  normalizes each process's half batch (torch has SyncBatchNorm for GPUs only). Over the seeds
  one process scores test accuracy 0.67-0.76 (std 0.04) and loss 0.46-0.66 (std 0.08); two
  processes differ from one by 0.04 in accuracy on average (at most 0.14) and 0.08 in loss (at
  most 0.13). The tolerance is 3 standard deviations of the difference of two runs, 3 * sqrt(2)
  * std: 0.17 in accuracy (a run that learnt nothing, at 0.5, falls outside), 0.35 in loss.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import readme
import torch
from conftest import (
    call_stage,
    error_line,
    finish,
    run_stages,
    stage_env,
    torch_state_restored,
    write_params,
)

from pipeline import train
from pipeline.core.paths import model_path, resume_path
from pipeline.dataset import synthetic

pytestmark = pytest.mark.slow  # stages in subprocesses or trained workspaces

README_HEADING = "Training on several GPUs / machines"
# 2 classes that a 4-epoch TCN tells apart (test accuracy about 0.8, chance 0.5): a run that
# did not learn would be far outside the tolerance below.
DATA = {"labels": [0, 1], "clips_per_group": (3, 3), "frames": (20, 50), "seed": 0}
PARAMS = {
    "data.pkl": "data/raw/tiny.pkl",
    "data.classes": [0, 1],
    "shards.frames": 16,
    "shards.workers": 1,
    "shards.test_views": 2,
    "shards.persons": 1,
    "train.threads": 2,
    "train.batch_size": 16,
    "baseline.hidden": 16,
    "baseline.epochs": 4,
    "baseline.lr": 0.01,
    "model.hidden": 16,
    "model.epochs": 4,
    "model.lr": 0.01,
    "model.eval.clips": 2,
}
TOLERANCE = {"accuracy": 0.17, "loss": 0.35}  # improved: from the seed noise (see above)

# Installed as sitecustomize in every Python process of a run: when `pipeline.learning.training` is
# first imported, its `fit` is wrapped to write the digest of the trained parameters to
# $DDP_PROBE/rank<r>; with $DDP_INTERRUPT, saving epoch 1's resume file sends SIGINT to the
# process that started this one (the stage). A lazy hook: the launcher never imports pipeline.
PROBE = """
import hashlib, importlib.abc, importlib.machinery, os, signal, sys, time
from pathlib import Path


def interrupting(save):
    def wrapper(state, path):
        save(state, path)
        if os.environ.get("DDP_INTERRUPT") and state.get("epoch") == 1:
            from pipeline.core import errors
            noted = len(errors._received)  # the stop signals this process's handlers noted
            os.kill(os.getppid(), signal.SIGINT)
            # Epoch 2 must not start before the stage has passed the signal on to this
            # process, however long a loaded machine takes: wait for it, not a guessed time.
            deadline = time.monotonic() + 60
            while len(errors._received) == noted and time.monotonic() < deadline:
                time.sleep(0.01)
    return wrapper

def probed(fit):
    def wrapper(model, *args, **kwargs):
        result = fit(model, *args, **kwargs)
        import torch.distributed as dist
        rank = dist.get_rank() if dist.is_initialized() else 0
        digest = hashlib.sha256()
        for name, tensor in model.named_parameters():
            name = name.removeprefix("module.")  # DDP's wrapper
            digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
        Path(os.environ["DDP_PROBE"], f"rank{rank}").write_text(digest.hexdigest())
        return result
    return wrapper

class Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name != "pipeline.learning.training":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            module.fit = probed(module.fit)
            module.save_atomic = interrupting(module.save_atomic)
        spec.loader.exec_module = exec_module
        return spec

if os.environ.get("DDP_PROBE"):
    sys.meta_path.insert(0, Finder())
"""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """params.yaml and the shards of a small learnable synthetic set."""
    root = tmp_path_factory.mktemp("ddp") / "prepared"
    synthetic.write(root / PARAMS["data.pkl"], **DATA)
    write_params(root, PARAMS)
    run_stages(root, "extract", "shards")
    return root


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("probe")
    (folder / "sitecustomize.py").write_text(PROBE)
    return folder


def copy(prepared: Path, dest: Path, **params: Any) -> Path:
    shutil.copytree(prepared, dest)
    write_params(dest, {**PARAMS, **params})
    return dest


def probed_env(probe: Path, digests: Path) -> dict[str, str]:
    digests.mkdir()
    env = stage_env()
    env["PYTHONPATH"] = f"{probe}:{env['PYTHONPATH']}"
    env["DDP_PROBE"] = str(digests)
    return env


def digests(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir())}


def one_process(ws: Path, name: str) -> dict[str, Any]:
    """Train and evaluate `name` in this process (train.nproc 1); the test metrics."""
    run_stages(ws, ("train", name))
    return evaluated(ws, name)


def evaluated(ws: Path, name: str) -> dict[str, Any]:
    run_stages(ws, ("evaluate", name))
    return json.loads((ws / "metrics" / f"{name}.json").read_text())


def weights(ws: Path, name: str) -> dict[str, torch.Tensor]:
    return torch.load(ws / model_path(name), map_location="cpu", weights_only=True)["model"]


def val_loss(ws: Path) -> float:
    """The baseline's validation loss at its selected epoch, from its checkpoint."""
    return torch.load(ws / model_path("baseline"), weights_only=True)["val_loss"]


@pytest.fixture(scope="module")
def torchrun(prepared: Path, probe: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The README's torchrun command, as written, in a copy of the prepared folder."""
    tmp = tmp_path_factory.mktemp("torchrun")
    ws = copy(prepared, tmp / "ws")
    (command,) = readme.block(README_HEADING)
    env = probed_env(probe, tmp / "digests")
    done = subprocess.run(
        ["bash", "-c", command], cwd=ws, env=env, capture_output=True, text=True, timeout=300
    )
    return {"ws": ws, "done": done, "digests": digests(tmp / "digests"), "command": command}


def test_torchrun_trains_improved_in_two_processes_that_end_with_the_same_weights(torchrun):
    done, ws = torchrun["done"], torchrun["ws"]
    assert (
        torchrun["command"].startswith("torchrun ")
        and "-m pipeline.train improved" in (torchrun["command"])
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("train improved: tcn on 2 processes (gloo), each on cpu (1 thread)")
    assert sum("kept epoch" in line for line in lines) == 1  # rank 0 alone logs
    assert len([line for line in lines if re.match(r"train improved: epoch +\d+:", line)]) == 4
    assert list(torchrun["digests"]) == ["rank0", "rank1"]
    assert len(set(torchrun["digests"].values())) == 1
    assert (ws / model_path("improved")).is_file() and not (ws / resume_path("improved")).exists()
    saved = torch.load(ws / model_path("improved"), weights_only=True)
    assert saved["train"]["nproc"] == 2  # the world torchrun made, not params.yaml's 1
    curves = ws / "metrics" / "train" / "improved"
    assert len((curves / "plots" / "metrics" / "val" / "loss.tsv").read_text().splitlines()) == 5


def test_two_processes_score_as_one_within_the_seed_noise(torchrun, prepared, tmp_path):
    two = evaluated(torchrun["ws"], "improved")
    one = one_process(copy(prepared, tmp_path / "one"), "improved")
    assert abs(two["accuracy"] - one["accuracy"]) <= TOLERANCE["accuracy"], (one, two)
    assert abs(two["loss"] - one["loss"]) <= TOLERANCE["loss"], (one, two)
    assert two["test_clips"] == one["test_clips"] == 42


def test_nproc_2_baseline_stopped_by_ctrl_c_resumes_and_ends_as_one_process(
    prepared, probe, tmp_path, monkeypatch, capfd
):
    """The stage starts the processes itself. SIGINT reaches it alone (the probe in rank 0
    sends it once epoch 1 is saved, as `kill -INT` or a supervisor would; a terminal sends it
    to every process): it passes it on, the processes stop together, one line and exit 130.
    The rerun resumes. The LSTM baseline has nothing random and no BatchNorm, so two processes
    on the same global batches end as one process does; with `select: last` the saved weights
    are the trained ones, so the probe's digest is theirs."""
    last = {"baseline.select": "last"}
    ws = copy(prepared, tmp_path / "two", **{"train.nproc": 2}, **last)
    env = probed_env(probe, tmp_path / "digests")
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.train", "baseline"],
        cwd=ws,
        env={**env, "DDP_INTERRUPT": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    code, out, err = finish(process, timeout=120)
    assert code == 130, (code, err)
    assert re.fullmatch(
        r"train baseline: interrupted in epoch [12]; epochs up to 1 are saved in "
        r"models/baseline\.resume\.pt; run `dvc repro` \(or python -m "
        r"pipeline\.train baseline\) to resume\n",
        err,
    ), err
    assert not (ws / model_path("baseline")).exists() and digests(tmp_path / "digests") == {}

    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])  # the spawned processes read it
    monkeypatch.setenv("DDP_PROBE", env["DDP_PROBE"])
    with torch_state_restored(), contextlib.chdir(ws):
        assert train.run("baseline") is None  # this process only started the others
    out = capfd.readouterr().out
    assert "lstm on 2 processes (gloo)" in out and "resuming after epoch 1" in out, out
    assert out.count("kept epoch") == 1, out  # rank 0 alone logs
    found = digests(tmp_path / "digests")
    assert list(found) == ["rank0", "rank1"] and len(set(found.values())) == 1
    digest = hashlib.sha256()
    for name, tensor in weights(ws, "baseline").items():  # an LSTM has no buffers
        digest.update(name.encode() + tensor.numpy().tobytes())
    assert found["rank0"] == digest.hexdigest()
    two = evaluated(ws, "baseline")
    one = one_process(copy(prepared, tmp_path / "one", **last), "baseline")
    # "the baseline matches to 1e-5" (README); measured: 1e-7
    assert two["accuracy"] == one["accuracy"] and abs(two["loss"] - one["loss"]) < 1e-5
    assert abs(val_loss(ws) - val_loss(tmp_path / "one")) < 1e-5


def spawned(parent: int) -> list[int]:
    """The processes `torch.multiprocessing.spawn` started for `parent` (by their command)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == parent and (
                b"spawn_main" in (stat.parent / "cmdline").read_bytes()
            ):
                found.append(int(stat.parent.name))
    return found


def catches(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler for `signum` now (its SigCgt mask in /proc)."""
    status = Path(f"/proc/{pid}/status").read_text()
    mask = int(re.search(r"^SigCgt:\s*([0-9a-f]+)$", status, re.M).group(1), 16)
    return bool(mask >> (signum - 1) & 1)


def test_ctrl_c_while_the_processes_start_is_one_line_and_exit_130(prepared, tmp_path):
    """Ctrl-C (the terminal signals the whole process group) as soon as both processes exist,
    while they are still importing torch: no traceback from each, the stage's one line."""
    ws = copy(prepared, tmp_path / "ws", **{"train.nproc": 2})
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "pipeline.train", "baseline"],
        cwd=ws,
        env={**stage_env(), "TMPDIR": str(tmp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while len(spawned(process.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(spawned(process.pid)) == 2, "the stage did not start its processes"
    # The stage ignores SIGINT while it starts them; once it is back, its handler passes the
    # signal on: wait for that, not for a guessed time.
    while not catches(process.pid, signal.SIGINT) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert catches(process.pid, signal.SIGINT), "the stage never took SIGINT back"
    os.killpg(process.pid, signal.SIGINT)
    code, out, err = finish(process, timeout=120)
    assert (code, err) == (130, "interrupted: train stopped; its previous outputs are kept\n")
    assert not (ws / model_path("baseline")).exists()
    assert list(tmp.iterdir()) == []  # the processes' shared folder is gone too


def test_a_diverging_run_ends_as_one_line_and_exit_2_from_the_stage(prepared, tmp_path, capfd):
    """The processes agree on each batch's loss, so all see it diverge; the one line is the
    stage's own (the processes print nothing, no traceback)."""
    ws = copy(
        prepared,
        tmp_path / "ws",
        **{"train.nproc": 2, "model.lr": 10.0, "model.optimizer": "sgd", "model.warmup_epochs": 0},
    )
    line = error_line(call_stage("train", ws, "improved"))
    assert re.match(
        r"error: params\.yaml: train improved diverged in epoch \d+, batch \d+ of "
        r"\d+ \(loss (nan|inf)\): lower model\.lr \(now 10\.0\)",
        line,
    ), line
    assert capfd.readouterr().err == ""
    assert not (ws / "models" / "improved.pt").exists()
    assert not (ws / resume_path("improved")).exists()  # removed: it would diverge again


def test_a_batch_that_does_not_split_is_refused_before_any_process_starts(prepared, tmp_path):
    ws = copy(prepared, tmp_path / "ws", **{"train.nproc": 3})
    line = error_line(call_stage("train", ws, "improved"))
    assert line == (
        "error: params.yaml: train.nproc: expected a divisor of train.batch_size "
        "(16), the global batch that the processes share equally, found 3"
    )
