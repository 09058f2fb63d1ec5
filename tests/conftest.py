"""Shared test helpers: tiny PYSKL datasets, params files, and running stages.

- `make_dataset(...)` builds a small PYSKL-format dict in memory, deterministic from a seed;
  `write_pkl(data, path)` pickles it.
- `write_params(folder, overrides)` copies the project's params.yaml with dotted overrides;
  `section(name, **changes)` is one of its sections, typed, as a stage gets it.
- `run_stage(stage, cwd)` runs `python -m pipeline.<stage>` as a subprocess; `call_stage` runs
  the same `main()` in this process (much faster) and returns the same CompletedProcess shape.
- `start_stage(stage, cwd, kill_at=...)` starts a stage as a process a test can signal (`stop`)
  or have kill itself at a chosen call; `finish` waits for it with a time limit.
- `REALDATA` / `requires_realdata`: the real reference clips, present only beside the repo in CI.
- `made` (session-wide): a fresh clone where the README's `make demo` ran, built once for the
  whole run and shared by every xdist worker; tests that change it work on copies.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

# DVC reports each command's use from a detached process started for it (a DVC start-up, and a
# temporary file left behind when it cannot reach the internet): tests never phone home.
os.environ["DVC_NO_ANALYTICS"] = "1"

REPO = Path(__file__).resolve().parents[1]
PARAMS_YAML = REPO / "params.yaml"
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"
requires_realdata = pytest.mark.skipif(
    not REALDATA.is_dir(),
    reason=f"real reference data not found at {REALDATA} (it sits beside the repo only in CI)",
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--shuffle",
        type=int,
        metavar="SEED",
        help="run each module's tests, and the modules, in an order shuffled by SEED: a test "
        "must pass whatever ran before it (each builds or reuses its workspace by a fixture)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist, each worker's torch gets its share of the cores: with a thread per core in
    every worker, the workers' threads wait on each other spinning, which costs CPU time."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def _weight(item: pytest.Item) -> int:
    """0 for end-to-end tests, 2 for slow ones, 3 for the rest; 1 for end-to-end tests that use
    the session's `made` but do not build it first: started before it is ready, they would hold
    a worker idle on its lock."""
    marks = {mark.name for mark in item.iter_markers()}
    if "e2e" not in marks:
        return 2 if "slow" in marks else 3
    return 1 if "made" in item.fixturenames and "make_demo" not in item.nodeid else 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seed = config.getoption("--shuffle")
    if seed is None:
        # xdist hands out modules in this order: the end-to-end ones (minutes each) first, so
        # the last module a worker starts is a short one and the other worker does not sit idle
        # waiting for it. The order stays the same in every worker, as xdist requires.
        heaviest: dict[str, int] = {}
        for item in items:
            module = item.nodeid.split("::")[0]
            heaviest[module] = min(heaviest.get(module, 3), _weight(item))
        items.sort(key=lambda item: heaviest[item.nodeid.split("::")[0]])  # stable
        return
    rng = random.Random(seed)
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:  # grouped by module, so each module's fixtures are still built once
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    order = list(modules.values())
    rng.shuffle(order)
    for group in order:
        rng.shuffle(group)
    items[:] = [item for group in order for item in group]


IMG_SHAPE = (240, 320)
UCF_NAMES = (
    "ApplyEyeMakeup",
    "ApplyLipstick",
    "Archery",
    "BabyCrawling",
    "BalanceBeam",
    "BandMarching",
    "BaseballPitch",
    "Basketball",
)
DELETE = object()  # an override value that removes the key from params.yaml


def class_name(label: int) -> str:
    """The UCF101 name of the first labels, else `Action<label>` (still matches class_pattern)."""
    return UCF_NAMES[label] if label < len(UCF_NAMES) else f"Action{label}"


def ucf_name(label: int, group: int, clip: int) -> str:
    return f"v_{class_name(label)}_g{group:02d}_c{clip:02d}"


def _draw(rng: np.random.Generator, value: int | tuple[int, int]) -> int:
    return int(rng.integers(value[0], value[1] + 1)) if isinstance(value, tuple) else int(value)


@contextlib.contextmanager
def torch_state_restored() -> Iterator[None]:
    """runtime.setup, which every command that runs a model calls, changes process-wide torch
    state: the thread count and denormal flushing are put back afterwards (a flushing process
    breaks hypothesis' float strategies, and later tests would run on other threads)."""
    import torch

    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_flush_denormal(False)


@pytest.fixture
def torch_state_kept() -> Iterator[None]:
    """`torch_state_restored` around the test."""
    with torch_state_restored():
        yield


def make_annotation(
    frame_dir: str,
    label: int,
    persons: int = 1,
    frames: int = 20,
    seed: int = 0,
    img_shape: tuple[int, int] = IMG_SHAPE,
) -> dict[str, Any]:
    """One PYSKL annotation with random in-image keypoints (float16) and scores in [0.5, 1]."""
    rng = np.random.default_rng(seed)
    h, w = img_shape
    keypoint = rng.random((persons, frames, 17, 2)) * np.array([w, h])
    score = 0.5 + 0.5 * rng.random((persons, frames, 17))
    return {
        "frame_dir": frame_dir,
        "label": label,
        "img_shape": tuple(img_shape),
        "original_shape": tuple(img_shape),
        "total_frames": frames,
        "keypoint": keypoint.astype(np.float16),
        "keypoint_score": score.astype(np.float16),
    }


def make_dataset(
    labels: Iterable[int] = (0, 1),
    groups: Iterable[int] = range(1, 7),
    test_groups: Iterable[int] = (1, 2),
    clips_per_group: int = 2,
    persons: int | tuple[int, int] = 1,
    frames: int | tuple[int, int] = (12, 30),
    seed: int = 0,
    split_names: tuple[str, str] = ("train1", "test1"),
    name: Callable[[int, int, int], str] = ucf_name,
    img_shape: tuple[int, int] = IMG_SHAPE,
) -> dict[str, Any]:
    """A tiny PYSKL dataset: every (label, group) has `clips_per_group` clips named by `name`.

    Clips of `test_groups` go to the test split, the others to train (as UCF101 splits by group).
    `persons` and `frames` are fixed or drawn per clip from an inclusive (min, max) range.
    """
    rng = np.random.default_rng(seed)
    test_groups = set(test_groups)
    annotations, train, test = [], [], []
    for label in labels:
        for group in groups:
            for clip in range(1, clips_per_group + 1):
                frame_dir = name(label, group, clip)
                ann = make_annotation(
                    frame_dir,
                    label,
                    _draw(rng, persons),
                    _draw(rng, frames),
                    int(rng.integers(2**31)),
                    img_shape,
                )
                annotations.append(ann)
                (test if group in test_groups else train).append(frame_dir)
    return {"split": {split_names[0]: train, split_names[1]: test}, "annotations": annotations}


class ShellPayload:
    """Unpickling this would run a shell command (pickled as os.system) that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def write_pkl(data: Any, path: str | os.PathLike[str], protocol: int = 4) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


def write_params(
    folder: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None
) -> dict:
    """Write folder/params.yaml: the project's params with dotted overrides; return the dict.

    `{"data.classes": [0, 1]}` sets a value (a new key is created, for unknown-key tests) and
    `{"data.seed": DELETE}` removes one.
    """
    values = yaml.safe_load(PARAMS_YAML.read_text())
    for dotted, value in (overrides or {}).items():
        *parents, last = dotted.split(".")
        node = values
        for key in parents:
            node = node[key]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    Path(folder, "params.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
    return values


def section(name: str, **changes: Any) -> Any:
    """Section `name` of the project's params.yaml as the stages get it (typed, checked), with
    `changes` to its keys."""
    from pipeline.core import params

    values = yaml.safe_load(PARAMS_YAML.read_text())[name]
    return params.parse(name, {**values, **changes})


def run_stage(
    stage: str, cwd: str | os.PathLike[str], *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`python -m pipeline.<stage> args` in `cwd`, importing this checkout's `pipeline`."""
    return subprocess.run(
        [sys.executable, "-m", f"pipeline.{stage}", *args],
        cwd=cwd,
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def call_stage(
    stage: str, cwd: str | os.PathLike[str], *args: str
) -> subprocess.CompletedProcess[str]:
    """Run `pipeline.<stage>.main(args)` in this process from `cwd`, like `run_stage` but faster.

    Exit codes come from SystemExit as the CLI would give them (0 when main returns); torch's
    process-wide state is put back afterwards, as if the stage had run in its own process.
    """
    module = importlib.import_module(f"pipeline.{stage}")
    out, err = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    argv, sys.argv = sys.argv, [f"pipeline.{stage}", *args]  # as `python -m` sets it
    with (
        torch_state_restored(),
        contextlib.chdir(cwd),
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        try:
            module.main()
        except SystemExit as exc:
            code = exc.code
        finally:
            sys.argv = argv
    return subprocess.CompletedProcess([stage], code or 0, out.getvalue(), err.getvalue())


def run_stages(cwd: str | os.PathLike[str], *stages: str | tuple[str, ...]) -> None:
    """`call_stage` for each stage in turn ("extract", or ("train", "baseline") with its
    arguments); the test fails at the first that does not succeed, with its stderr."""
    for stage in stages:
        name, *args = (stage,) if isinstance(stage, str) else stage
        done = call_stage(name, cwd, *args)
        assert done.returncode == 0, (stage, done.stderr)


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single `error: ...` line of a failed stage; fails the test if it is not exactly that."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


# A stage run that SIGKILLs itself at a chosen moment: the n-th time it calls `function`, a
# dotted name like "json.dump" (for os.replace, only onto a name matching the glob `match`). Killing
# from inside hits exactly the moment that matters (everything written under a temporary name,
# nothing renamed yet), which polling from outside would catch only by luck on small data.
_KILL_AT = """
import fnmatch, os, runpy, signal, sys
function, match, nth, stage, *args = sys.argv[1:]
calls = 0
def wrap(owner, name, hits=lambda *a, **k: True):
    real = getattr(owner, name)
    def patched(*a, **k):
        global calls
        if hits(*a, **k):
            calls += 1
            if calls == int(nth):
                os.kill(os.getpid(), signal.SIGKILL)
        return real(*a, **k)
    setattr(owner, name, patched)
if function == "os.replace":
    name_of = lambda path: os.path.basename(os.fspath(path))
    wrap(os, "replace", lambda src, dst, *a, **k: fnmatch.fnmatch(name_of(dst), match))
else:  # a dotted name: module.function or module.Class.method
    import importlib
    parts = function.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
            break
        except ImportError:
            continue
    for part in parts[cut:-1]:
        owner = getattr(owner, part)
    wrap(owner, parts[-1])
sys.argv = [f"pipeline.{stage}", *args]
runpy.run_module(f"pipeline.{stage}", run_name="__main__", alter_sys=True)
"""


def stage_env() -> dict[str, str]:
    """The environment for a stage subprocess: this checkout's `pipeline` importable."""
    from pipeline.project import workspace

    return workspace.tool_env(importable=REPO)


def start_stage(
    stage: str,
    cwd: str | os.PathLike[str],
    *args: str,
    kill_at: tuple[str, str, int] | None = None,
) -> subprocess.Popen[str]:
    """Start `python -m pipeline.<stage> args` in its own session (so `stop` can end it and any
    worker it started); `kill_at=(function, match, n)` makes it SIGKILL itself, see _KILL_AT."""
    if kill_at is None:
        command = [sys.executable, "-m", f"pipeline.{stage}", *args]
    else:
        function, match, nth = kill_at
        command = [sys.executable, "-c", _KILL_AT, function, match, str(nth), stage, *args]
    return subprocess.Popen(
        command,
        cwd=cwd,
        env=stage_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[str], sig: int = signal.SIGKILL) -> None:
    """Send `sig` to a process from `start_stage` and everything in its session (its pool
    workers too); nothing happens if the group is already gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def finish(process: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    """Wait for a started stage (killing its session if it overruns); (code, stdout, stderr)."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(process)
        out, err = process.communicate()
        raise AssertionError(f"the stage ran for more than {timeout} s:\n{out}\n{err}") from None
    finally:
        stop(process)  # a pool worker orphaned by a kill must not outlive the test
    return process.returncode, out, err


@pytest.fixture(scope="session")
def shared_tmp(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """A folder of this test run that every xdist worker sees (each worker's own base temp sits
    in it); without xdist, the run's base temp."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@pytest.fixture(scope="session", autouse=True)
def temp_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The temporary folder of the tests and every process they start (TMPDIR): a folder of
    this run's, so what a tool leaves in its temporary folder (torchrun's logs, for one) stays
    with the run, and the run can show that ours leave nothing there."""
    folder = tmp_path_factory.mktemp("TMPDIR")
    before = os.environ.get("TMPDIR"), tempfile.tempdir
    os.environ["TMPDIR"], tempfile.tempdir = str(folder), str(folder)
    yield folder
    if before[0] is None:
        del os.environ["TMPDIR"]
    else:
        os.environ["TMPDIR"] = before[0]
    tempfile.tempdir = before[1]
    left = sorted(p.name for p in folder.iterdir() if not p.name.startswith(TOOLS_TEMP))
    assert not left, f"temporary files left behind in {folder}: {left}"


# What other tools keep in the temporary folder on purpose: torchrun's logs of each run (the
# README's torchrun command), torch's compile cache, onnxruntime's telemetry session id (the
# ONNX parity checks; it writes it whatever `disable_telemetry_events()` says).
TOOLS_TEMP = ("torchelastic_", "torchinductor_", ".ses")


@pytest.fixture(scope="session")
def made(shared_tmp: Path) -> dict[str, Any]:
    """A fresh clone where the README's `make demo` ran: built once per test run by the first
    worker that asks (the others wait on the lock, then read what it saved). Read-only: a test
    that runs anything in it works on a copy (`demo` below, `clone` in test_readme_demo), so tests
    pass alone, in any order and on any worker. `before`/`after`: what `make demo` must leave
    alone in the clone (its params.yaml and results), hashed before and after it ran."""
    from filelock import FileLock
    from usershell import fresh_clone, sh, yours

    root = shared_tmp / "made"
    saved = shared_tmp / "made.json"
    with FileLock(shared_tmp / "made.lock"):
        if not saved.is_file():
            shutil.rmtree(root, ignore_errors=True)  # what a worker that failed left behind
            clone = fresh_clone(Path(root))
            before = yours(clone)
            out = sh("make demo", clone).stdout
            facts = {"clone": str(clone), "out": out, "before": before, "after": yours(clone)}
            saved.write_text(json.dumps(facts))
    facts = json.loads(saved.read_text())
    return {**facts, "clone": Path(facts["clone"])}


@pytest.fixture
def demo(made: dict[str, Any], tmp_path: Path) -> Path:
    """A copy of the demo's workspace as `make demo` left it (a git + DVC repo of its own)."""
    return Path(shutil.copytree(made["clone"] / ".demo", tmp_path / "demo", symlinks=True))
