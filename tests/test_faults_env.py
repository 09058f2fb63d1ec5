"""Faults of the environment: outputs that cannot be written, damaged intermediates, kills.

A tiny workspace is run through every stage once per module; each case copies it, breaks one
thing and runs one stage. The stage must end with exit code 2 and one `error:` line naming the
file (and, for a damaged intermediate, the `dvc repro` that rebuilds it), no traceback, and
the workspace exactly as it was: the check comes before the work, nothing is half-written.
Killed stages must leave the old outputs, and their next run must remove the temporaries the
kill left (only those) and end with complete outputs, the same as an uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from conftest import (
    call_stage,
    finish,
    make_dataset,
    run_stage,
    stage_env,
    start_stage,
    write_params,
    write_pkl,
)

from pipeline.core.errors import PipelineError, cli
from pipeline.dataset.shardset import ShardSet
from pipeline.dataset.subset import INDEX_COLUMNS, SPLITS
from pipeline.files import atomic
from pipeline.learning import runtime

pytestmark = pytest.mark.slow  # stages in subprocesses or trained workspaces

TINY = {
    "data.pkl": "data/raw/tiny.pkl",
    "data.classes": [0, 1],
    "shards.frames": 8,
    "shards.workers": 1,
    "shards.size": 8,  # several shards per split, so a kill can land between two of them
    "shards.train_views": 1,
    "shards.test_views": 1,
    "train.threads": 1,
    "train.batch_size": 8,
    "baseline.hidden": 8,
    "baseline.epochs": 1,
    "baseline.eval.clips": 1,
    "model.hidden": 8,
    "model.epochs": 2,
    "model.eval.clips": 1,
}
STAGES = (
    ("extract",),
    ("shards",),
    ("train", "baseline"),
    ("train", "improved"),
    ("evaluate", "baseline"),
    ("evaluate", "improved"),
    ("summary",),
)
ROOT = os.geteuid() == 0
AS_ROOT = "runs as root, where a folder's mode does not stop writes (other cases cover the stage)"


def call(ws: Path, stage: str, *args: str) -> tuple[int, str, str]:
    """A stage's main() in this process, as `python -m pipeline.<stage> args` runs it.

    An exception other than the stage's own exit escapes and fails the test: a traceback."""
    result = call_stage(stage, ws, *args)
    return result.returncode, result.stdout, result.stderr


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file (its bytes) and folder (None) under `root`."""
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faults_env") / "ws"
    data = make_dataset(labels=(0, 1), groups=range(1, 7), clips_per_group=2, seed=3)
    write_pkl(data, root / TINY["data.pkl"])
    write_params(root, TINY)
    for stage in STAGES:
        code, _, err = call(root, *stage)
        assert code == 0, (stage, err)
    return root


@pytest.fixture
def ws(prepared: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "ws"
    shutil.copytree(prepared, dest)
    return dest


# --- setups: each breaks one thing in a workspace copy ------------------------------------------


def as_file(relative: str) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        path = ws / relative
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        path.write_text("not a folder\n")

    return setup


def as_folder(relative: str) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        (ws / relative).unlink()
        (ws / relative / "kept").mkdir(parents=True)

    return setup


def read_only(relative: str) -> Callable[[Path], None]:
    return lambda ws: (ws / relative).chmod(0o555)


def holding(relative: str, content: bytes | str) -> Callable[[Path], None]:
    data = content.encode() if isinstance(content, str) else content

    def setup(ws: Path) -> None:
        (ws / relative).write_bytes(data)

    return setup


def cut(relative: str, keep: int) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        with open(ws / relative, "r+b") as handle:
            handle.truncate(keep)

    return setup


def removed(relative: str) -> Callable[[Path], None]:
    return lambda ws: (ws / relative).unlink()


def rebuild(stage: str) -> str:
    return f"; run `dvc repro -f -s {re.escape(stage)}` to rebuild it"


SUBSET_ROW = "v_ApplyEyeMakeup_g03_c01,0,0,ApplyEyeMakeup,03,train,20,1,{offset},240,320\n"
FILE_FOUND = r"expected a file \(an output of this stage\), found a folder; remove it"
FOLDER_FOUND = r"expected a folder \(an output of this stage\), found a file; remove it"

# (case id, setup, stage and argument, expected exit code, regex for the last stderr line)
CASES = [
    # outputs that cannot be written: refused before any work
    (
        "extract: data/subset is a file",
        as_file("data/subset"),
        "extract",
        2,
        rf"data/subset: {FOLDER_FOUND}",
    ),
    (
        "extract: data/ not writable",
        read_only("data"),
        "extract",
        2,
        r"data: cannot write data/subset in this folder \(Permission denied\)",
    ),
    (
        "shards: data/shards is a file",
        as_file("data/shards"),
        "shards",
        2,
        rf"data/shards: {FOLDER_FOUND}",
    ),
    (
        "shards: data/ not writable",
        read_only("data"),
        "shards",
        2,
        r"data: cannot write data/shards in this folder \(Permission denied\)",
    ),
    (
        "train: models is a file",
        as_file("models"),
        "train baseline",
        2,
        r"models: expected a folder to hold models/baseline\.pt, found a file; move it away",
    ),
    (
        "train: models/baseline.pt is a folder",
        as_folder("models/baseline.pt"),
        "train baseline",
        2,
        rf"models/baseline\.pt: {FILE_FOUND}",
    ),
    (
        "train: metrics is a file",
        as_file("metrics"),
        "train baseline",
        2,
        r"metrics: expected a folder to hold metrics/train/baseline, found a file; move it away",
    ),
    (
        "train: models/ not writable",
        read_only("models"),
        "train baseline",
        2,
        r"models: cannot write models/baseline\.pt in this folder \(Permission denied\)",
    ),
    (
        "evaluate: metrics/baseline is a file",
        as_file("metrics/baseline"),
        "evaluate baseline",
        2,
        rf"metrics/baseline: {FOLDER_FOUND}",
    ),
    (
        "evaluate: metrics/baseline.json is a folder",
        as_folder("metrics/baseline.json"),
        "evaluate baseline",
        2,
        rf"metrics/baseline\.json: {FILE_FOUND}",
    ),
    (
        "evaluate: metrics/ not writable",
        read_only("metrics"),
        "evaluate baseline",
        2,
        r"metrics: cannot write metrics/baseline\.json in this folder \(Permission denied\)",
    ),
    (
        "summary: metrics/summary.json is a folder",
        as_folder("metrics/summary.json"),
        "summary",
        2,
        rf"metrics/summary\.json: {FILE_FOUND}",
    ),
    (
        "summary: metrics/ not writable",
        read_only("metrics"),
        "summary",
        2,
        r"metrics: cannot write metrics/summary\.json in this folder \(Permission denied\)",
    ),
    # damaged intermediates: the file, and the stage that rebuilds it
    (
        "summary: metrics/baseline.json holds {",
        holding("metrics/baseline.json", "{"),
        "summary",
        2,
        r"metrics/baseline\.json: not valid JSON \(.*\)" + rebuild("evaluate@baseline"),
    ),
    (
        "summary: metrics/improved.json accuracy is text",
        holding("metrics/improved.json", '{"accuracy": "high", "test_clips": 8}'),
        "summary",
        2,
        r"metrics/improved\.json: accuracy: expected a number, found a string"
        + rebuild("evaluate@improved"),
    ),
    (
        "train: manifest.json holds x",
        holding("data/shards/manifest.json", "x"),
        "train baseline",
        2,
        r"data/shards/manifest\.json: not valid JSON \(.*\)" + rebuild("shards"),
    ),
    (
        "train: manifest.json is a list",
        holding("data/shards/manifest.json", "[]"),
        "train improved",
        2,
        r"data/shards/manifest\.json: expected an object, found a list" + rebuild("shards"),
    ),
    (
        "train: a shard cut short",
        cut("data/shards/train-00000.npy", 1000),
        "train baseline",
        2,
        r"data/shards/train-00000\.npy: holds 1000 bytes, its header .* needs \d+ \(cut short or "
        r"damaged\)" + rebuild("shards"),
    ),
    (
        "train: train.csv of other columns",
        holding("data/shards/train.csv", "a,b\n1,2\n"),
        "train baseline",
        2,
        r"data/shards/train\.csv: no column 'frame_dir'" + rebuild("shards"),
    ),
    (
        "evaluate: test.csv missing",
        removed("data/shards/test.csv"),
        "evaluate baseline",
        2,
        r"data/shards/test\.csv: not found" + rebuild("shards"),
    ),
    (
        "evaluate: a test shard is not .npy",
        holding("data/shards/test-00000.npy", b"\x93NUMPX"),
        "evaluate improved",
        2,
        r"data/shards/test-00000\.npy: not a \.npy array \(.*\)" + rebuild("shards"),
    ),
    (
        "shards: keypoints.npy cut short",
        cut("data/subset/keypoints.npy", 1000),
        "shards",
        2,
        r"data/subset/keypoints\.npy: holds 1000 bytes, its header \(\d+, 17, 2\) needs \d+ "
        r"\(cut short or damaged\)" + rebuild("extract"),
    ),
    (
        "shards: index.csv of garbage bytes",
        holding("data/subset/index.csv", b'\xe5\x00"\x93,\n'),
        "shards",
        2,
        r"data/subset/index\.csv: not a readable CSV table \(.*\)" + rebuild("extract"),
    ),
    (
        "shards: index.csv names rows past keypoints.npy",
        holding(
            "data/subset/index.csv",
            ",".join(INDEX_COLUMNS) + "\n" + SUBSET_ROW.format(offset=10**6),
        ),
        "shards",
        2,
        r"data/subset/index\.csv: column 'offset', row 1: expected 0\.\.\d+, found "
        r"1000000" + rebuild("extract"),
    ),
    (
        "shards: meta.json cut short",
        holding("data/subset/meta.json", '{"source": "x", '),
        "shards",
        2,
        r"data/subset/meta\.json: not valid JSON \(.*\)" + rebuild("extract"),
    ),
]
ROOT_BLIND = {case[0] for case in CASES if "not writable" in case[0]}


def params_of(cases: list[tuple]) -> list:
    return [
        pytest.param(
            *case[1:],
            id=case[0],
            marks=[pytest.mark.skipif(ROOT, reason=AS_ROOT)] * (case[0] in ROOT_BLIND),
        )
        for case in cases
    ]


def test_every_stage_keeps_a_case_that_runs_as_root():
    stages = {case[2].split()[0] for case in CASES if case[0] not in ROOT_BLIND}
    assert stages >= {"extract", "shards", "train", "evaluate", "summary"}


def check_refused(
    ws: Path,
    code: int,
    out: str,
    err: str,
    expected: int,
    pattern: str,
    before: dict[str, bytes | None],
) -> None:
    assert code == expected, (code, out, err)
    assert "Traceback" not in out + err, err
    lines = err.strip().splitlines()
    assert lines, "nothing on stderr"
    assert re.fullmatch(f"error: {pattern}", lines[-1]), lines[-1]
    assert snapshot(ws) == before, "the failed stage changed the workspace"


@pytest.mark.parametrize(("setup", "stage", "expected", "pattern"), params_of(CASES))
def test_fault_is_one_line_and_changes_nothing(ws, setup, stage, expected, pattern):
    setup(ws)
    before = snapshot(ws)
    try:
        code, out, err = call(ws, *stage.split())
    finally:
        for path in (ws, *ws.rglob("*")):
            if path.is_dir():
                path.chmod(0o755)  # so tmp_path can be cleaned up
    check_refused(ws, code, out, err, expected, pattern, before)


# A real process for a few: exit code and stderr as the shell sees them, including anything
# printed at interpreter shutdown (dvclive and dulwich used to add their own tracebacks there).
AS_PROCESS = [
    case
    for case in CASES
    if case[0]
    in {
        "train: models/baseline.pt is a folder",
        "evaluate: test.csv missing",
        "shards: keypoints.npy cut short",
        "summary: metrics/baseline.json holds {",
    }
]


@pytest.mark.parametrize(("setup", "stage", "expected", "pattern"), params_of(AS_PROCESS))
def test_fault_as_a_process(ws, setup, stage, expected, pattern):
    setup(ws)
    before = snapshot(ws)
    name, *args = stage.split()
    result = run_stage(name, ws, *args)
    check_refused(ws, result.returncode, result.stdout, result.stderr, expected, pattern, before)


def test_writing_into_a_file_is_one_line_even_without_a_check_first(tmp_path):
    """A stage that writes without prepare_outputs (fetch's synthetic path) still gets a line."""
    (tmp_path / "raw").write_text("a file\n")
    with pytest.raises(PipelineError) as info:
        atomic.write_text(tmp_path / "raw" / "x.pkl", "data")
    assert str(info.value) == (
        f"{tmp_path / 'raw'}: expected a folder to hold {tmp_path / 'raw' / 'x.pkl'}, "
        "found a file; move it away"
    )


# --- kills: the next run removes what the killed one left, and only that ----------------------


def temps(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*.tmp")}


def test_shards_killed_mid_build_rerun_clears_its_temporaries(ws, prepared):
    old = snapshot(ws / "data" / "shards")
    # not this stage's temporaries: a user's files, and extract's temporary name
    others = {
        ".shards.mine.tmp",
        ".shards.mybackup.tmp",
        "shards.tmp",
        ".shards.old.tmp",
        ".subset.pipeline-abcd1234.tmp",
    }
    for name in others:
        (ws / "data" / name).write_text("keep me\n")
    process = start_stage("shards", ws, kill_at=("pipeline.dataset.subset.write_npy", "", 2))
    code, out, err = finish(process, timeout=60)
    assert code == -signal.SIGKILL, (code, out, err)
    left = temps(ws / "data") - others
    assert len(left) == 1 and re.fullmatch(r"\.shards\.pipeline-[a-z0-9_]{8}\.tmp", min(left)), left
    assert (ws / "data" / min(left) / "train-00000.npy").is_file(), "killed before any shard"
    assert snapshot(ws / "data" / "shards") == old

    code, out, err = call(ws, "shards")
    assert code == 0, err
    assert temps(ws / "data") == others, "the killed run's temporaries are gone, others kept"
    assert snapshot(ws / "data" / "shards") == snapshot(prepared / "data" / "shards")
    for split in SPLITS:
        ShardSet(ws / "data" / "shards", split).gather(range(3))


def test_train_killed_keeps_the_old_model_with_its_curves_and_rerun_matches(ws, prepared):
    """Killed with epoch 2's resume checkpoint written under its temporary name: the old model
    and its curves stay as they were; the rerun clears the temporary, resumes after epoch 1 and
    ends with the curves and metrics of the uninterrupted run."""
    outputs = ("models/improved.pt", "metrics/train/improved")
    old = {
        name: snapshot(ws / name) if (ws / name).is_dir() else (ws / name).read_bytes()
        for name in outputs
    }
    process = start_stage("train", ws, "improved", kill_at=("os.replace", "improved.resume.pt", 2))
    code, out, err = finish(process, timeout=120)
    assert code == -signal.SIGKILL, (code, out, err)
    assert any(
        re.fullmatch(r"\.improved\.resume\.pt\.pipeline-[a-z0-9_]{8}\.tmp", p)
        for p in temps(ws / "models")
    ), temps(ws / "models")
    assert (ws / "models" / "improved.resume.pt").exists()
    for name, content in old.items():
        now = snapshot(ws / name) if (ws / name).is_dir() else (ws / name).read_bytes()
        assert now == content, f"{name} changed though the run never finished"

    code, out, err = call(ws, "train", "improved")
    assert code == 0, err
    assert "resuming after epoch 1" in out
    assert not temps(ws), temps(ws)
    assert not (ws / "models" / "improved.resume.pt").exists()
    curves = ws / "metrics" / "train" / "improved"
    assert snapshot(curves) == snapshot(prepared / "metrics" / "train" / "improved")
    new = torch.load(ws / "models" / "improved.pt", weights_only=True)
    ref = torch.load(prepared / "models" / "improved.pt", weights_only=True)
    assert new.keys() == ref.keys()
    for key, value in ref["model"].items():
        assert torch.equal(new["model"][key], value), key


# --- issue 24: a full disk, long names, SIGTERM, signals while starting, a closed stdout --------

NO_SPACE = r"\S+: cannot write this output \(No space left on device\); nothing was replaced"
TMPFS_REASON = "needs root and `mount -t tmpfs` to make a small full filesystem"


@pytest.fixture
def full(prepared: Path, tmp_path: Path) -> Iterator[Path]:
    """A copy of the workspace on a tmpfs with not a byte left: every write there fails with
    ENOSPC, as on a full disk (the filler lies beside the workspace, outside its snapshot)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    size = sum(p.stat().st_size for p in prepared.rglob("*") if p.is_file()) + (8 << 20)
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if not ROOT or made.returncode != 0:
        pytest.skip(TMPFS_REASON)
    try:
        ws = mount / "ws"
        shutil.copytree(prepared, ws)
        with contextlib.suppress(OSError), open(mount / "filler", "wb") as handle:
            while True:
                handle.write(bytes(1 << 20))
                handle.flush()
        with contextlib.suppress(OSError), open(mount / "filler", "ab") as handle:
            while True:  # the last pages, a byte at a time
                handle.write(b"\0")
                handle.flush()
        assert os.statvfs(mount).f_bavail == 0
        yield ws
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


PREDICT_OUT = ("predict", "--top", "1", "models/baseline.pt", TINY["data.pkl"], "--out", "p.csv")
EXPORT_OUT = ("export", "models/baseline.pt", "--format", "torchscript", "--out", "m.ts")
RENDER_OUT = ("render", TINY["data.pkl"], "--clips", "v_ApplyEyeMakeup_g03_c01", "--out", "gifs")


@pytest.mark.slow
@pytest.mark.parametrize(
    "command",
    [
        ("extract",),
        ("shards",),
        ("train", "baseline"),
        ("evaluate", "improved"),
        ("summary",),
        PREDICT_OUT,
        RENDER_OUT,
        EXPORT_OUT,  # a process: torch.jit.save on a full disk used to abort it from C++
    ],
    ids=" ".join,
)
def test_a_full_disk_is_one_line_and_changes_nothing(full: Path, command: tuple[str, ...]) -> None:
    before = snapshot(full)
    if command[0] == "export":
        done = run_stage(command[0], full, *command[1:])
        code, out, err = done.returncode, done.stdout, done.stderr
    else:
        code, out, err = call(full, *command)
    check_refused(full, code, out, err, 2, NO_SPACE, before)
    assert not temps(full), temps(full)


@pytest.mark.parametrize(
    "failure",
    [
        OSError(28, "No space left on device"),
        RuntimeError(
            "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
            "data/0: file write failed"
        ),
    ],
    ids=["OSError ENOSPC", "torch's writer"],
)
def test_a_failed_write_is_one_line_and_leaves_no_temporary(
    tmp_path: Path, failure: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same without a full filesystem (where none can be made): the failure injected where
    the write happens, inside atomic_path; statvfs says the disk is full for torch's case."""
    target = tmp_path / "out.pt"
    target.write_bytes(b"old")
    full_disk = os.statvfs_result((4096, 4096, 100, 0, 0, 100, 0, 0, 0, 255))
    monkeypatch.setattr(atomic.os, "statvfs", lambda path: full_disk)
    with pytest.raises(PipelineError) as info, atomic.atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise failure
    assert str(info.value) == (
        f"{target}: cannot write this output (No space left on device); nothing was replaced"
    )
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.pt"]


def test_an_os_error_that_reaches_cli_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    @cli
    def main(argv: list[str] | None = None) -> None:
        raise OSError(28, "No space left on device", "somewhere/file.bin")

    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert capsys.readouterr().err == "error: somewhere/file.bin: No space left on device\n"


@pytest.mark.parametrize("length", [255, 256])
def test_an_out_name_that_fits_is_written_one_that_does_not_is_one_line(
    ws: Path, length: int
) -> None:
    """A name of the filesystem's 255 bytes is written, though its temporary's name would be
    longer than that; one byte more is refused before any work, naming the limit."""
    name = "p" * (length - 4) + ".csv"
    before = snapshot(ws)
    code, out, err = call(ws, *PREDICT_OUT[:-1], name)
    if length == 255:
        assert code == 0, err
        assert (ws / name).read_text().startswith("frame_dir,")
        assert not [p for p in ws.iterdir() if p.name.endswith(".tmp")]
    else:
        shown = re.escape(name[:80]) + r"\.\.\."
        pattern = rf"{shown}: the file name is 256 bytes long; this filesystem allows at most 255"
        check_refused(ws, code, out, err, 2, pattern, before)


def test_a_long_name_has_its_killed_temporaries_cleaned_up(ws: Path) -> None:
    """The shortened temporary name of a 255-byte output is the same on every run, so the
    next run finds and removes what a killed run left."""
    target = ws / ("p" * 251 + ".csv")
    left = atomic._tmp_name(target)
    assert len(left.name) <= 255
    atomic.prepare_outputs(files=[target])
    assert not left.exists()


# A stage sent `sig` (to its process group, as `timeout`, a CI runner or `kill -- -PID` sends
# it) the first time it calls `function`, a dotted name like "module.function" or
# "module.Class.method": the moment is chosen, not raced.
_SIGNAL_AT = """
import importlib, os, runpy, signal, sys

sig, function, stage, *args = sys.argv[1:]
parts = function.split(".")
for cut in range(len(parts) - 1, 0, -1):
    try:
        owner = importlib.import_module(".".join(parts[:cut]))
        break
    except ImportError:
        continue
for part in parts[cut:-1]:
    owner = getattr(owner, part)
real = getattr(owner, parts[-1])
sent = []
def patched(*a, **k):
    if not sent:
        sent.append(1)
        os.killpg(os.getpgid(0), int(sig))
    return real(*a, **k)
setattr(owner, parts[-1], patched)
sys.argv = [f"pipeline.{stage}", *args]
runpy.run_module(f"pipeline.{stage}", run_name="__main__", alter_sys=True)
"""


def signalled(ws: Path, sig: int, function: str, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", _SIGNAL_AT, str(int(sig)), function, *command],
        cwd=ws,
        env=stage_env(),
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("function", "command"),
    [
        ("pipeline.files.pklio.load_pickle", ("fetch",)),
        ("pipeline.files.pklio.load_pickle", ("extract",)),
        ("pipeline.dataset.preprocess.build_table", ("shards",)),  # in the pool's workers
        ("pipeline.learning.training.train_epoch", ("train", "baseline")),
        ("pipeline.learning.inference.predict", ("evaluate", "baseline")),
        ("pipeline.files.readers.read_json", ("summary",)),
        ("pipeline.learning.inference.predict", PREDICT_OUT),
        ("PIL.Image.Image.save", RENDER_OUT),  # with the GIF's temporary made
        ("torch.jit.trace", EXPORT_OUT),
    ],
    ids=lambda v: v if isinstance(v, str) else " ".join(v),
)
def test_sigterm_is_one_line_exit_143_and_leaves_no_temporary(
    ws: Path, function: str, command: tuple[str, ...]
) -> None:
    write_params(ws, {**TINY, "shards.workers": 2})
    before = snapshot(ws)
    done = signalled(ws, signal.SIGTERM, function, *command)
    assert done.returncode == 143, (done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert re.fullmatch(
        rf"terminated: {command[0]} stopped; its previous outputs are kept|train baseline: "
        r"interrupted in epoch 1, before any epoch was saved; .*",
        lines[0],
    ), lines[0]
    assert snapshot(ws) == before
    assert not temps(ws), temps(ws)


def started(ws: Path, *command: str) -> subprocess.Popen[str]:
    """`python -m pipeline.<command>`, reporting each module it imports on stderr."""
    return subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", f"pipeline.{command[0]}", *command[1:]],
        cwd=ws,
        env=stage_env(),
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


STOPS = [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")]


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code", "word"), STOPS, ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_modules_import_is_one_line(
    ws: Path, sig: int, code: int, word: str
) -> None:
    """Ctrl-C (or SIGTERM) in the first second, while torch imports, before main() runs."""
    before = snapshot(ws)
    process = started(ws, "train", "baseline")
    assert process.stderr is not None
    seen = []
    for line in process.stderr:  # the signal goes once the first of torch's modules is in
        seen.append(line)
        if re.search(r"\|\s+torch\.", line):  # nested names are indented
            process.send_signal(sig)
            break
    rest = process.communicate(timeout=60)[1]
    lines = [line for line in rest.splitlines() if not line.startswith("import time:")]
    assert process.returncode == code, (seen[-3:], rest)
    assert "Traceback" not in rest
    assert lines == [f"{word}: train stopped while starting; nothing was written"], rest
    assert snapshot(ws) == before


@pytest.mark.slow
def test_a_closed_stdout_is_one_line(ws: Path) -> None:
    before = snapshot(ws)
    done = subprocess.run(
        ["sh", "-c", 'exec "$0" -m pipeline.summary >&-', sys.executable],
        cwd=ws,
        env=stage_env(),
        capture_output=False,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
        check=False,
    )
    check_refused(
        ws,
        done.returncode,
        "",
        done.stderr,
        2,
        r"stdout: closed, so the command's output would be lost; run it with stdout open "
        r"\(or redirected to a file or /dev/null\)",
        before,
    )


def test_train_nproc_above_the_cores_warns_and_far_above_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Processes beyond the cores take turns on them (13x slower, seen): one warning line;
    beyond 4 per core, refused. On CUDA each process has its GPU: no word."""
    monkeypatch.setattr(runtime, "cores", lambda: 2)
    cpu = torch.device("cpu")
    assert runtime.check_processes(2, cpu) is None
    assert runtime.check_processes(3, cpu) == (
        "warning: params.yaml: train.nproc: 3 processes share the 2 cores this process may use; "
        "training takes turns on them, slower than with at most 2"
    )
    with pytest.raises(PipelineError, match=r"train\.nproc: expected at most 8 processes on CPU"):
        runtime.check_processes(9, cpu)
    assert runtime.check_processes(9, torch.device("cuda")) is None
