"""The README's "Your own PYSKL pickle" journey, as a user runs it, in a fresh clone of its own
(so it passes alone and in any order)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import readme
from conftest import make_dataset, write_pkl
from usershell import (
    ALL_STAGES,
    IMPROVED,
    fresh_clone,
    md5,
    queue_names,
    ran,
    sh,
    wait_for_queue,
)

pytestmark = pytest.mark.e2e
# --- Your own PYSKL pickle ---------------------------------------------------------------------

MIME = ("boxing", "drums", "guitar")


@pytest.fixture
def own(tmp_path: Path) -> dict:
    """A fresh clone, and a mime5-like pickle of the user's (subjects, train/test) outside it."""
    clone = fresh_clone(tmp_path / "own")
    incoming = tmp_path / "incoming" / "mime5_2d.pkl"
    incoming.parent.mkdir()
    write_pkl(
        make_dataset(
            labels=(1, 2, 3),
            split_names=("train", "test"),  # one-based labels
            name=lambda label, group, clip: f"p{group:02d}_{MIME[label - 1]}_{clip:02d}",
        ),
        incoming,
    )
    return {"clone": clone, "incoming": incoming, "md5": md5(incoming)}


def assert_draws_offline(done: subprocess.CompletedProcess[str], repo: Path) -> None:
    """The page `dvc plots show` / `dvc plots diff` wrote has Vega inlined, no CDN link."""
    html = (repo / "dvc_plots" / "index.html").read_text()
    assert "cdn.jsdelivr.net" not in html and "window.vegaEmbed" in html, done.stdout


def test_your_own_pickle_run_then_tracked_then_queued(own: dict) -> None:
    """The README's block in one clone: `dvc exp run` first (the README: it works without `dvc
    add`), then `dvc add`, which must not make the next run redo anything, the commit and a
    queued experiment. One full run instead of one per test: each costs every stage."""
    clone = own["clone"]
    cp, add, exp_run, commit = readme.block("Your own PYSKL pickle")
    pkl = clone / "data" / "raw" / "mime5_2d.pkl"
    sh(cp.replace("/path/to/mime5_2d.pkl", str(own["incoming"])), clone)
    assert ran(sh(exp_run, clone).stdout) == ALL_STAGES  # the very first DVC command
    assert md5(pkl) == own["md5"]
    per_class = (clone / "metrics" / "improved" / "per_class.csv").read_text()
    assert all(name in per_class for name in MIME)
    assert_draws_offline(sh("dvc plots show", clone), clone)  # a clone, no `make`: still offline
    sh(add, clone)
    assert md5(pkl) == own["md5"]
    assert ran(sh(exp_run, clone).stdout) == set()  # tracking the pickle changed nothing
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
