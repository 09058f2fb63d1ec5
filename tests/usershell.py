"""A user's shell for the end-to-end tests: commands run through bash exactly as written, with
the real `make`, `git` and `dvc`, in fresh clones of this checkout shrunk to tiny data.

Each clone is this working tree's files in a new git repository (the venv linked in, so `make`
finds it installed), with params.yaml shrunk to tiny data and committed: what a user has after
`git clone`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from conftest import REPO

from pipeline.project import workspace

Done = subprocess.CompletedProcess[str]

# Tiny data: every README command runs in seconds. Nothing else about the pipeline changes but
# the threads: one per stage process, as `make test` runs two tests at a time on two cores (with
# two each, torch's threads wait for each other spinning: a tiny training stage took 6-9 CPU s
# instead of 5).
TINY = {
    "train.threads": 1,
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
    "ensemble.epochs": 2,
    "ensemble.hidden": 8,
    "ensemble.eval.clips": 2,
    "fusion.streams": ["joint", "bone"],  # two stream models, not four, in every pipeline run
}
DEMO_PARAMS = " ".join(
    ["data.source=synthetic", "data.pkl=data/raw/synthetic_2d.pkl"]
    + [f"{key}={json.dumps(value).replace(' ', '')}" for key, value in TINY.items()]
)
ALL_STAGES = {
    "check",
    "extract",
    "shards",
    "train@baseline",
    "train@improved",
    "evaluate@baseline",
    "evaluate@improved",
    *(f"stream@{stream}" for stream in TINY["fusion.streams"]),
    "fuse",
    "summary",
    "plots",
}
# A params change runs `check` too (it depends on the whole params.yaml).
IMPROVED = {"check", "train@improved", "evaluate@improved", "summary", "plots"}
EVAL_ONLY = {"check", "evaluate@improved", "summary", "plots"}


def user_env() -> dict[str, str]:
    """A user's shell after `source .venv/bin/activate`, with a git identity, no proxy, and not
    inside `make test` (whose MAKELEVEL would make `make demo` a chattier sub-make)."""
    outer = ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")
    env = {
        k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and k not in outer
    }
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for who in ("AUTHOR", "COMMITTER"):
        env[f"GIT_{who}_NAME"], env[f"GIT_{who}_EMAIL"] = "user", "user@localhost"
    env["DEMO_PARAMS"] = DEMO_PARAMS  # make's `?=` takes it: `make demo` on tiny data
    return env


def sh(command: str, cwd: Path, ok: bool = True, timeout: float = 600) -> Done:
    """One README command, through bash, exactly as written."""
    done = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=user_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if ok:
        assert done.returncode == 0, f"`{command}` failed:\n{done.stdout}\n{done.stderr}"
    return done


def ran(output: str) -> set[str]:
    """Stage names that `dvc repro` / `dvc exp run` actually ran."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def yours(clone: Path) -> dict[str, str]:
    """What `make demo` must leave alone in a clone: its params.yaml and results, hashed."""
    files = [clone / "params.yaml", *(clone / "metrics").rglob("*"), *(clone / "models").rglob("*")]
    return {str(path): md5(path) for path in files if path.is_file()}


def fresh_clone(dest: Path) -> Path:
    """This checkout's files (tracked and untracked-but-not-ignored) as a new committed repo."""
    dest.mkdir(parents=True, exist_ok=True)
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    (dest / ".venv").symlink_to(REPO / ".venv")
    stamp = (REPO / ".venv" / ".installed").stat().st_mtime
    os.utime(dest / "pyproject.toml", (stamp - 1, stamp - 1))  # make: the venv is up to date
    workspace.override_file(dest / "params.yaml", TINY)
    workspace.git(dest, "init", "-q")
    workspace.commit(dest, "clone")
    return dest


def wait_for_queue(repo: Path, limit: float = 500) -> str:
    """The queue's status once no task is queued or running. While one runs, `dvc queue logs
    --follow` waits for it in one process (polling `dvc queue status`, a DVC start-up each,
    would take a core's share from the experiments themselves)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status = sh("dvc queue status", repo).stdout
        running = queue_names(status, "Running")
        if not running and not queue_names(status, "Queued"):
            return status
        if running:
            left = max(1.0, deadline - time.monotonic())
            sh(f"dvc queue logs --follow {running[0]}", repo, ok=False, timeout=left)
        else:
            time.sleep(2)
    sh("dvc queue stop --kill", repo, ok=False)
    raise AssertionError(f"the queue did not finish in {limit} s:\n{status}")


def queue_names(status: str, state: str = "Success") -> list[str]:
    return [line.split()[1] for line in status.splitlines() if line.split()[-1:] == [state]]
