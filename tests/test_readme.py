"""The README's commands, run as a user runs them: exactly as written, with the real `make`, `git`
and `dvc`, on tiny data, in fresh clones of this checkout (tests/usershell.py makes them).
Tests in a module build on each other in file order, as a user's session does.
"""

from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import readme
from conftest import make_dataset, write_pkl
from PIL import Image
from usershell import (
    ALL_STAGES,
    EVAL_ONLY,
    IMPROVED,
    fresh_clone,
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
# Every heading whose bash block is run here, and the test that runs it.
COVERED = {
    "Skeleton action recognition on UCF101, as a DVC pipeline": "test_make_demo_* (`make test` "
    "is this suite itself)",
    "Getting the data": "test_getting_the_data_on_a_fresh_clone",
    "Your own PYSKL pickle": "test_your_own_pickle_*",
    "Your own videos": "test_videos_readme.py (real footage, the real estimator)",
    "Everyday DVC commands": "test_everyday_dvc_commands_in_the_demo",
    "Backbones and late fusion": "test_backbones_and_late_fusion_in_the_demo",
    "See what the model does": "test_see_what_the_model_does_in_the_demo",
    "Training on several GPUs / machines": "test_ddp.py::test_torchrun_* (in its own workspace)",
    "The notebook's protocol": "test_the_notebooks_protocol_in_the_demo",
    "Working with a team": "test_team.py: test_a_teammate_*",
    "Use the model": "test_use_the_model_in_the_demo (its python block too)",
}


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
    assert set(readme.fenced("python")) <= set(COVERED)


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
    make_install, make_demo, make_test = readme.block(
        "Skeleton action recognition on UCF101, as a DVC pipeline"
    )
    assert (make_install, make_demo, make_test) == ("make install", "make demo", "make test")
    sh(make_install, clone)  # the clone's venv is installed already: nothing to do, no error
    assert (clone / ".venv" / "bin" / "dvc").is_file()

    def yours() -> dict[str, str]:  # "leaves your params.yaml and results alone"
        files = [clone / "params.yaml", *(clone / "metrics").rglob("*"), *clone.glob("models/*")]
        return {str(path): md5(path) for path in files if path.is_file()}

    before = yours()
    out = sh(make_demo, clone).stdout
    assert yours() == before
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
    sh(next(commands), demo)  # queue start -j 2
    status = wait_for_queue(demo)
    names = queue_names(status)
    assert len(names) == 2 and "Failed" not in status, status
    for name in names:  # train.threads=1: the baseline is retrained with it
        assert ran(sh(f"dvc queue logs {name}", demo).stdout) == ALL_STAGES - {"extract", "shards"}
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


def test_backbones_and_late_fusion_in_the_demo(clone: Path) -> None:
    demo = clone / ".demo"
    arch, bone, diff = readme.block("Backbones and late fusion")
    assert ran(sh(arch, demo).stdout) == IMPROVED  # the ensemble does not read `model`
    joint = md5(demo / "models" / "stream-joint.pt")
    assert ran(sh(bone, demo).stdout) == {"stream@bone", "fuse"}  # one stream retrained
    assert md5(demo / "models" / "stream-joint.pt") == joint
    shown = sh(diff, demo).stdout
    assert "metrics/ensemble.json" in shown and "metrics/improved.json" in shown
    assert "metrics/baseline.json" not in shown
    ensemble = json.loads((demo / "metrics" / "ensemble.json").read_text())
    assert sum(ensemble[f"weight_{s}"] for s in ("joint", "bone", "motion", "bone_motion")) == (
        pytest.approx(1.0)
    )
    sh("git checkout params.yaml && dvc checkout -q", demo)  # the committed run, for what follows


def test_a_typo_added_with_plus_stops_the_run(clone: Path) -> None:
    """`+` adds a key that no stage reads: the check stage names the nearest known one, and no
    experiment is recorded."""
    demo = clone / ".demo"
    before, params = sh("dvc exp list --name-only", demo).stdout, (demo / "params.yaml").read_text()
    done = sh("dvc exp run -S +model.hiden=64", demo, ok=False)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    line = "error: params.yaml: model: unknown key 'hiden' (did you mean 'hidden'?)"
    assert line in (done.stdout + done.stderr).splitlines()
    assert sh("dvc exp list --name-only", demo).stdout == before
    (demo / "params.yaml").write_text(params)  # as the everyday commands left it


def test_see_what_the_model_does_in_the_demo(clone: Path) -> None:
    demo = clone / ".demo"
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


def test_the_notebooks_protocol_in_the_demo(clone: Path) -> None:
    demo = clone / ".demo"
    (command,) = readme.block("The notebook's protocol")
    assert command.count("-S ") >= 20 and "model.lstm.pool=padded" in command
    out = sh(command, demo).stdout
    assert ran(out) == ALL_STAGES  # data.val_by=clip: a new validation split, so from extract
    manifest = json.loads((demo / "data" / "shards" / "manifest.json").read_text())
    assert manifest["shape"][1] == 1  # one person, as the notebook
    improved = json.loads((demo / "metrics" / "improved.json").read_text())
    assert improved["epochs_run"] == 15 and improved["views"] == 1


def test_use_the_model_in_the_demo(clone: Path) -> None:
    """After the notebook's protocol and an eval-only experiment: the model file stores the eval
    params it was trained with (1 view, no flip), evaluate used the experiment's, and so must
    predict, for p.csv to equal predictions.csv."""
    demo = clone / ".demo"
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


# --- Your own PYSKL pickle ---------------------------------------------------------------------

MIME = ("boxing", "drums", "guitar")


@pytest.fixture(scope="module")
def own(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A second fresh clone, and a mime5-like pickle of the user's (subjects, train/test)."""
    clone = fresh_clone(tmp_path_factory.mktemp("own"))
    incoming = tmp_path_factory.mktemp("incoming") / "mime5_2d.pkl"
    write_pkl(
        make_dataset(
            labels=(1, 2, 3),
            split_names=("train", "test"),  # one-based labels
            name=lambda label, group, clip: f"p{group:02d}_{MIME[label - 1]}_{clip:02d}",
        ),
        incoming,
    )
    return {"clone": clone, "incoming": incoming, "md5": md5(incoming)}


def test_your_own_pickle_first_command_keeps_it(own: dict) -> None:
    """The pickle is in place and `dvc exp run` is the very first DVC command (no dvc add)."""
    clone = own["clone"]
    cp, add, exp_run, commit = readme.block("Your own PYSKL pickle")
    sh(cp.replace("/path/to/mime5_2d.pkl", str(own["incoming"])), clone)
    pkl = clone / "data" / "raw" / "mime5_2d.pkl"
    out = sh(exp_run, clone).stdout
    assert ran(out) == ALL_STAGES
    assert md5(pkl) == own["md5"]
    per_class = (clone / "metrics" / "improved" / "per_class.csv").read_text()
    assert all(name in per_class for name in MIME)
    assert_draws_offline(sh("dvc plots show", clone), clone)  # a clone, no `make`: still offline


def assert_draws_offline(done: subprocess.CompletedProcess[str], repo: Path) -> None:
    """The page `dvc plots show` / `dvc plots diff` wrote has Vega inlined, no CDN link."""
    html = (repo / "dvc_plots" / "index.html").read_text()
    assert "cdn.jsdelivr.net" not in html and "window.vegaEmbed" in html, done.stdout


def test_your_own_pickle_tracked_then_queued(own: dict) -> None:
    clone = own["clone"]
    _, add, exp_run, commit = readme.block("Your own PYSKL pickle")
    pkl = clone / "data" / "raw" / "mime5_2d.pkl"
    sh(add, clone)
    assert md5(pkl) == own["md5"]
    sh(exp_run, clone)
    assert md5(pkl) == own["md5"]
    sh(commit, clone)  # the run, as the README says, before the queue
    assert sh("git status --porcelain params.yaml dvc.lock metrics", clone).stdout == ""
    sh("dvc exp run --queue -S model.hidden=12 --name h12 && dvc queue start", clone)
    status = wait_for_queue(clone)
    assert queue_names(status) == ["h12"], status
    assert ran(sh("dvc queue logs h12", clone).stdout) == IMPROVED  # the baseline is reused
    assert_draws_offline(sh("dvc plots diff HEAD h12", clone), clone)
    assert md5(pkl) == own["md5"]
    for command in ("dvc exp apply h12", "dvc checkout", "dvc repro"):
        sh(command, clone)
        assert md5(pkl) == own["md5"], command
