"""The README's commands, run as a user runs them: exactly as written, with the real `make`, `git`
and `dvc`, on tiny data, in fresh clones of this checkout.

Each clone is this working tree's files in a new git repository (the venv linked in, so `make`
finds it installed), with params.yaml shrunk to tiny data and committed: what a user has after
`git clone`. Tests in a module build on each other in file order, as a user's session does.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import readme
from conftest import REPO, make_dataset, write_pkl

from pipeline import workspace

pytestmark = pytest.mark.e2e
Done = subprocess.CompletedProcess[str]

# Tiny data: every README command runs in seconds. Nothing else about the pipeline changes.
TINY = {
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
DEMO_PARAMS = " ".join(
    ["data.source=synthetic", "data.pkl=data/raw/synthetic_2d.pkl"]
    + [f"{key}={json.dumps(value).replace(' ', '')}" for key, value in TINY.items()]
)
ALL_STAGES = {
    "extract", "shards", "train@baseline", "train@improved",
    "evaluate@baseline", "evaluate@improved", "summary",
}  # fmt: skip
IMPROVED = {"train@improved", "evaluate@improved", "summary"}
# Every heading whose bash block is run here, and the test that runs it.
COVERED = {
    "Skeleton action recognition on UCF101, as a DVC pipeline": "test_make_demo_* (`make test` "
    "is this suite itself)",
    "Getting the data": "test_getting_the_data_on_a_fresh_clone",
    "Your own PYSKL pickle": "test_your_own_pickle_*",
    "Everyday DVC commands": "test_everyday_dvc_commands_in_the_demo",
    "Training on several GPUs / machines": "test_ddp.py::test_torchrun_* (in its own workspace)",
    "The notebook's protocol": "test_the_notebooks_protocol_in_the_demo",
}


def user_env() -> dict[str, str]:
    """A user's shell after `source .venv/bin/activate`, with a git identity, no proxy."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for who in ("AUTHOR", "COMMITTER"):
        env[f"GIT_{who}_NAME"], env[f"GIT_{who}_EMAIL"] = "user", "user@localhost"
    env["DEMO_PARAMS"] = DEMO_PARAMS  # make's `?=` takes it: `make demo` on tiny data
    return env


def sh(command: str, cwd: Path, ok: bool = True, timeout: float = 600) -> Done:
    """One README command, through bash, exactly as written."""
    done = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=user_env(), capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    if ok:
        assert done.returncode == 0, f"`{command}` failed:\n{done.stdout}\n{done.stderr}"
    return done


def ran(output: str) -> set[str]:
    """Stage names that `dvc repro` / `dvc exp run` actually ran."""
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def fresh_clone(dest: Path) -> Path:
    """This checkout's files (tracked and untracked-but-not-ignored) as a new committed repo."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split("\0")  # fmt: skip
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
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        status = sh("dvc queue status", repo).stdout
        if "Queued" not in status and "Running" not in status:
            return status
        time.sleep(2)
    sh("dvc queue stop --kill", repo, ok=False)
    raise AssertionError(f"the queue did not finish in {limit} s:\n{status}")


def queue_names(status: str, state: str = "Success") -> list[str]:
    return [line.split()[1] for line in status.splitlines() if line.split()[-1:] == [state]]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server standing in for the download site: (base URL, its folder)."""
    root = tmp_path_factory.mktemp("site")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One fresh clone that the data, demo and everyday-command tests share."""
    return fresh_clone(tmp_path_factory.mktemp("clone"))


def test_every_readme_block_is_run_by_a_test() -> None:
    assert set(readme.blocks()) == set(COVERED)


# --- Getting the data ------------------------------------------------------------------------


def test_getting_the_data_on_a_fresh_clone(clone: Path, server: tuple[str, Path]) -> None:
    base, site = server
    served = write_pkl(make_dataset(labels=(0, 1, 2)), site / "ucf101_2d.pkl")
    workspace.override_file(clone / "params.yaml", {"data.url": f"{base}/ucf101_2d.pkl"})
    workspace.commit(clone, "the download site of this test")
    make_data, commit, make_repro = readme.block("Getting the data")
    out = sh(make_data, clone).stdout
    pkl = clone / "data" / "raw" / "ucf101_2d.pkl"
    assert md5(pkl) == md5(served) and (clone / "data/raw/ucf101_2d.pkl.dvc").is_file(), out
    sh(commit, clone)
    assert sh("git status --porcelain data", clone).stdout == ""  # the .dvc file is committed
    assert ran(sh(make_repro, clone).stdout) == ALL_STAGES
    assert md5(pkl) == md5(served)
    assert json.loads((clone / "metrics" / "summary.json").read_text())["classes"] == 3
    again = sh(make_data, clone).stdout  # a valid file in place is kept, not fetched again
    assert "kept the valid file" in again and md5(pkl) == md5(served)


def test_fetch_never_downloads_into_a_name_the_url_does_not_name(clone: Path) -> None:
    (clone / "params.yaml").write_text(
        (clone / "params.yaml").read_text().replace("data/raw/ucf101_2d.pkl", "data/raw/own.pkl")
    )
    done = sh("python -m pipeline.fetch", clone, ok=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip() == (
        "error: data/raw/own.pkl: no such file, and it is not the file data.url names "
        "(ucf101_2d.pkl), so it is not downloaded: put your pickle there and track it with "
        "`dvc add data/raw/own.pkl && git add data/raw/own.pkl.dvc && git commit`"
    )
    assert not (clone / "data" / "raw" / "own.pkl").exists()
    sh("git checkout params.yaml", clone)


# --- make demo -------------------------------------------------------------------------------


def test_make_demo_runs_and_commits_the_pipeline(clone: Path) -> None:
    make_demo, make_test = readme.block("Skeleton action recognition on UCF101, as a DVC pipeline")
    assert (make_demo, make_test) == ("make demo", "make test")
    out = sh(make_demo, clone).stdout
    demo = clone / ".demo"
    assert ran(out) == ALL_STAGES
    assert "metrics/improved.json" in out and "metrics/baseline.json" in out  # the table
    log = workspace.git(demo, "log", "--format=%s").stdout.splitlines()
    assert log == ["demo: pipeline run", "pipeline workspace and its raw data"]
    assert workspace.git(demo, "status", "--porcelain").stdout == ""
    assert sh("dvc status", demo).stdout.strip() == "Data and pipelines are up to date."


def test_make_demo_again_reuses_the_workspace(clone: Path) -> None:
    demo = clone / ".demo"
    keep = demo / "my-notes.txt"
    keep.write_text("mine")
    out = sh("make demo", clone).stdout
    assert "reusing the workspace" in out and ran(out) == set()
    assert keep.read_text() == "mine"


def test_make_demo_refuses_a_folder_it_did_not_make(clone: Path) -> None:
    theirs = clone / "theirs"
    theirs.mkdir()
    (theirs / "thesis.tex").write_text("years of work")
    done = sh("make demo DEMO_DIR=theirs", clone, ok=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "exists and is not an empty folder or a pipeline workspace" in done.stderr
    assert [p.name for p in theirs.iterdir()] == ["thesis.tex"]


# --- Everyday DVC commands, in the demo's workspace ------------------------------------------


def test_everyday_dvc_commands_in_the_demo(clone: Path) -> None:
    demo = clone / ".demo"
    pkl = demo / "data" / "raw" / "synthetic_2d.pkl"
    before = md5(pkl)
    baseline_model = md5(demo / "models" / "baseline.pt")
    commands = iter(readme.block("Everyday DVC commands"))

    repro = sh(next(commands), demo).stdout
    assert ran(repro) == set() and "up to date" in repro
    assert ran(sh(next(commands), demo).stdout) == IMPROVED  # -S model.hidden=128
    improved_model = md5(demo / "models" / "improved.pt")
    assert ran(sh(next(commands), demo).stdout) == {"evaluate@improved", "summary"}  # eval only
    assert md5(demo / "models" / "improved.pt") == improved_model  # not retrained
    assert "model.hidden" in sh(next(commands), demo).stdout  # exp show --only-changed
    shown = sh(next(commands), demo).stdout  # metrics show
    assert "metrics/baseline.json" in shown and "metrics/summary.json" in shown
    diff = sh(next(commands), demo).stdout  # metrics diff: improved changed, baseline did not
    assert "metrics/improved.json" in diff and "metrics/baseline.json" not in diff
    sh(next(commands), demo)  # plots show
    html = (demo / "dvc_plots" / "index.html").read_text()
    assert "Improved confusion (test)" in html and "ApplyEyeMakeup" in html

    assert "Queued" in sh(next(commands), demo).stdout  # two experiments queued
    sh(next(commands), demo)  # queue start -j 2
    status = wait_for_queue(demo)
    names = queue_names(status)
    assert len(names) == 2 and "Failed" not in status, status
    for name in names:  # train.threads=1: the baseline is retrained with it
        assert ran(sh(f"dvc queue logs {name}", demo).stdout) == ALL_STAGES - {"extract", "shards"}
    shown = sh(next(commands), demo).stdout  # exp show: the swept params and accuracy alone
    header = next(line for line in shown.splitlines() if "Experiment" in line).split()
    assert header == ["Experiment", "metrics/improved.json:accuracy", "model.hidden",
                      "model.layers"], shown  # fmt: skip
    assert all(name in shown for name in names)
    assert md5(demo / "models" / "baseline.pt") == baseline_model
    assert md5(pkl) == before


def test_the_notebooks_protocol_in_the_demo(clone: Path) -> None:
    demo = clone / ".demo"
    (command,) = readme.block("The notebook's protocol")
    assert command.count("-S ") >= 20 and "model.pool=padded" in command
    out = sh(command, demo).stdout
    assert ran(out) == ALL_STAGES  # data.val_by=clip: a new validation split, so from extract
    manifest = json.loads((demo / "data" / "shards" / "manifest.json").read_text())
    assert manifest["shape"][1] == 1  # one person, as the notebook
    improved = json.loads((demo / "metrics" / "improved.json").read_text())
    assert improved["epochs_run"] == 15 and improved["views"] == 1


# --- Your own PYSKL pickle ---------------------------------------------------------------------

MIME = ("boxing", "drums", "guitar")


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A second fresh clone, and a mime5-like pickle of the user's (subjects, train/test)."""
    clone = fresh_clone(tmp_path_factory.mktemp("own"))
    incoming = tmp_path_factory.mktemp("incoming") / "mime5_2d.pkl"
    write_pkl(
        make_dataset(
            labels=(1, 2, 3), split_names=("train", "test"),  # one-based labels
            name=lambda label, group, clip: f"p{group:02d}_{MIME[label - 1]}_{clip:02d}",
        ),
        incoming,
    )  # fmt: skip
    return {"clone": clone, "incoming": incoming, "md5": md5(incoming)}


def test_your_own_pickle_first_command_keeps_it(own: dict) -> None:
    """The pickle is in place and `dvc exp run` is the very first DVC command (no dvc add)."""
    clone = own["clone"]
    cp, add, exp_run = readme.block("Your own PYSKL pickle")
    sh(cp.replace("/path/to/mime5_2d.pkl", str(own["incoming"])), clone)
    pkl = clone / "data" / "raw" / "mime5_2d.pkl"
    out = sh(exp_run, clone).stdout
    assert ran(out) == ALL_STAGES
    assert md5(pkl) == own["md5"]
    per_class = (clone / "metrics" / "improved" / "per_class.csv").read_text()
    assert all(name in per_class for name in MIME)


def test_your_own_pickle_tracked_then_queued(own: dict) -> None:
    clone = own["clone"]
    _, add, exp_run = readme.block("Your own PYSKL pickle")
    pkl = clone / "data" / "raw" / "mime5_2d.pkl"
    sh(add, clone)
    assert md5(pkl) == own["md5"]
    sh(exp_run, clone)
    assert md5(pkl) == own["md5"]
    sh("git add -A && git commit -qm 'first run on my data'", clone)
    sh("dvc exp run --queue -S model.hidden=12 --name h12 && dvc queue start", clone)
    status = wait_for_queue(clone)
    assert queue_names(status) == ["h12"], status
    assert ran(sh("dvc queue logs h12", clone).stdout) == IMPROVED
    assert md5(pkl) == own["md5"]
    for command in ("dvc exp apply h12", "dvc checkout", "dvc repro"):
        sh(command, clone)
        assert md5(pkl) == own["md5"], command
