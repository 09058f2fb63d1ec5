"""The README's commands, run as a user runs them: exactly as written, with the real `make`, `git`
and `dvc`, on tiny data, in fresh clones of this checkout (tests/usershell.py makes them). Each
test builds or copies the workspace it needs by a fixture, so it passes alone and in any order
(`pytest --shuffle SEED`). The demo's journeys are in test_readme_demo.py and
test_readme_models.py, your own pickle's in test_readme_own.py, your own videos' in
test_videos_readme.py: separate files, so `make test`'s workers run them side by side.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import readme
from conftest import make_dataset, write_pkl
from usershell import (
    ALL_STAGES,
    fresh_clone,
    md5,
    ran,
    sh,
)

from pipeline.project import workspace

pytestmark = pytest.mark.e2e
# Every heading whose bash block is run here, and the test that runs it.
COVERED = {
    "Skeleton action recognition on UCF101, as a DVC pipeline": "test_readme_demo.py: "
    "test_make_demo_* (`make test` is this suite itself)",
    "Getting the data": "test_getting_the_data_on_a_fresh_clone",
    "Your own PYSKL pickle": "test_readme_own.py: test_your_own_pickle_*",
    "Your own videos": "test_videos_readme.py (real footage, the real estimator)",
    "Everyday DVC commands": "test_readme_demo.py::test_everyday_dvc_commands_in_the_demo",
    "Backbones and late fusion": "test_readme_models.py::test_backbones_and_late_fusion_*",
    "See what the model does": "test_readme_models.py::test_see_what_the_model_does_in_the_demo",
    "Training on several GPUs / machines": "test_ddp.py::test_torchrun_* (in its own workspace)",
    "The notebook's protocol": "test_readme_models.py::test_the_notebooks_protocol_in_the_demo",
    "Working with a team": "test_team.py: test_a_teammate_*",
    "Use the model": "test_readme_models.py::test_use_the_model_in_the_demo (its python block too)",
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


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    return fresh_clone(tmp_path / "clone")


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
