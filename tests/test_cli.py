"""Every `python -m pipeline.<command>`: `--help` prints usage and does nothing else; Ctrl-C at
any moment is one line and exit code 130, with the earlier outputs kept."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    REPO,
    call_stage,
    make_dataset,
    run_stage,
    run_stages,
    stage_env,
    write_params,
    write_pkl,
)

pytestmark = pytest.mark.slow  # stages in subprocesses or trained workspaces

COMMANDS = sorted(
    path.stem
    for path in (REPO / "pipeline").glob("*.py")
    if "__main__" in path.read_text() and 'if __name__ == "__main__"' in path.read_text()
)


def test_the_commands_are_found() -> None:
    assert {"fetch", "extract", "shards", "train", "evaluate", "summary", "demo"} <= set(COMMANDS)


def mains_are_wrapped(module: str) -> bool:
    tree = ast.parse((REPO / "pipeline" / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "main":
            return any(getattr(d, "id", None) == "cli" for d in node.decorator_list)
    return False


@pytest.mark.parametrize("module", COMMANDS)
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_usage_and_does_nothing_else(tmp_path: Path, module: str, flag: str) -> None:
    """`--help` as a user types it, in a process of its own; `-h`, the same parser, in this
    process (a second torch start-up per command would only cost time)."""
    assert mains_are_wrapped(module), f"pipeline/{module}.py: main() is not wrapped in @cli"
    args = ["baseline", flag] if module in ("train", "evaluate") else [flag]
    if flag == "-h":
        done = call_stage(module, tmp_path, *args)
    else:
        done = run_stage(module, tmp_path, *args, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m pipeline.{module}\n"), done.stdout
    assert len(done.stdout.splitlines()) > 2 and done.stderr == ""
    assert list(tmp_path.iterdir()) == []  # no folder named --help, no download, no output


# A stage that receives Ctrl-C (SIGINT to its whole process group, as a terminal sends it) the
# first time it calls `function`: the moment is chosen, not raced.
_INTERRUPT_AT = """
import importlib, os, runpy, signal, sys

signal.signal(signal.SIGINT, signal.default_int_handler)  # even if the test runner ignores it
function, stage, *args = sys.argv[1:]
module_name, name = function.rsplit(".", 1)
owner = importlib.import_module(module_name)
real = getattr(owner, name)
def patched(*a, **k):
    os.killpg(os.getpgid(0), signal.SIGINT)
    return real(*a, **k)
setattr(owner, name, patched)
sys.argv = [f"pipeline.{stage}", *args]
runpy.run_module(f"pipeline.{stage}", run_name="__main__", alter_sys=True)
"""


def interrupt(cwd: Path, function: str, stage: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _INTERRUPT_AT, function, stage, *args],
        cwd=cwd,
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace where extract, shards and the baseline's train and evaluate ran once on tiny
    data (in this process: a second each, where four stage processes took ten)."""
    work = tmp_path_factory.mktemp("interrupt")
    write_pkl(make_dataset(labels=(0, 1, 2), groups=range(1, 9)), work / "data/raw/ucf101_2d.pkl")
    write_params(
        work,
        {
            "data.classes": [0, 1, 2],
            "shards.frames": 8,
            "shards.test_views": 2,
            "shards.workers": 2,
            "model.eval.clips": 2,
            "baseline.epochs": 1,
            "model.epochs": 1,
            "model.hidden": 8,
        },
    )
    run_stages(work, "extract", "shards", ("train", "baseline"), ("evaluate", "baseline"))
    return work


@pytest.mark.parametrize(
    ("function", "stage", "args"),
    [
        ("pipeline.files.pklio.load_pickle", "fetch", ()),
        ("pipeline.files.pklio.load_pickle", "extract", ()),
        ("pipeline.dataset.preprocess.build_table", "shards", ()),  # in the pool's workers' time
        ("pipeline.models.build_model", "train", ("baseline",)),  # start-up, before any epoch
        ("pipeline.learning.inference.predict", "evaluate", ("baseline",)),
        (
            "pipeline.learning.inference.predict",
            "predict",
            ("models/baseline.pt", "data/raw/ucf101_2d.pkl", "--out", "p.csv"),
        ),
    ],
)
def test_ctrl_c_is_one_line_and_exit_130_with_outputs_kept(
    work: Path, function: str, stage: str, args: tuple[str, ...]
) -> None:
    before = snapshot(work)
    done = interrupt(work, function, stage, *args)
    assert done.returncode == 130, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(("interrupted: ", "train baseline: interrupted"))
    assert snapshot(work) == before
