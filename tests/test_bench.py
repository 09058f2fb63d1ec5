"""Smoke test of `python -m bench --quick`: every benchmark runs and reports its figures.

One quick run on a tiny clip list written here (10 classes, the groups --quick keeps) feeds
every test. Timings are never asserted: only that each row is there, with positive numbers.
"""

from __future__ import annotations

import csv
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from usershell import ALL_STAGES

from bench import context, demo, measure, report
from bench.__main__ import BENCHMARKS, main
from pipeline.dataset import ucf101

pytestmark = pytest.mark.slow  # stages in subprocesses or trained workspaces

CLASSES = 10


def write_clip_list(path: Path) -> Path:
    """Clip 1 of every --quick group for the first CLASSES classes; short clips, 1-3 persons."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["frame_dir", "label", "total_frames", "persons"])
        for label in range(CLASSES):
            for i, group in enumerate(context.QUICK_GROUPS):
                frames, persons = 20 + 7 * ((label + i) % 6), 1 + (label + i) % 3
                writer.writerow([ucf101.frame_dir(label, group, 1), label, frames, persons])
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("bench")
    clips = write_clip_list(tmp / "clips.csv")
    results = tmp / "results"
    args = ["--quick", "--csv", str(clips)]
    # Every benchmark but the demo's, whose rows are checked against the session's own `make
    # demo` below: a second whole demo here would only repeat it.
    rows = main(
        [*args, "--only", *(b for b in BENCHMARKS if b != "demo"), "--results", str(results)]
    )
    return {
        "rows": {r.name: r for r in rows},
        "results": results,
        "clips": clips,
        "benchmarks": len(rows),
    }


def positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def rows_named(run: dict, prefix: str) -> list[report.Row]:
    found = [row for name, row in run["rows"].items() if name.startswith(prefix)]
    assert found, f"no row starting {prefix!r} in {list(run['rows'])}"
    for row in found:
        assert row.skipped is None, row.skipped
        assert positive(row.wall_s) and positive(row.rss_bytes), row
    return found


def test_extract_rows_against_pickle_load(run: dict) -> None:
    rows = rows_named(run, "extract")
    assert [r.name for r in rows] == ["extract, 8 classes", "extract, 101 classes"]
    for row in rows:
        assert positive(row.ratio) and positive(row.throughput)
        assert {c.label for c in row.checks} == {"time", "RSS/file"}
        assert all(positive(c.value) for c in row.checks)


def test_shards_row(run: dict) -> None:
    (row,) = rows_named(run, "shards")
    assert positive(row.throughput) and positive(row.ratio)
    assert "workers" in row.note


def test_train_rows_for_both_models_with_the_notebook_reference(run: dict) -> None:
    rows = rows_named(run, "train")
    assert {r.name.split(" (")[0] for r in rows} == {"train baseline", "train improved"}
    for row in rows:
        assert positive(row.throughput) and positive(row.ratio)
        share = next(c for c in row.checks if c.label == "data share")
        assert 0 < share.value < 100
        assert "notebook loop" in row.reference


def test_evaluate_rows(run: dict) -> None:
    for row in rows_named(run, "evaluate"):
        assert positive(row.throughput)


def test_predict_rows_for_both_models_torch_against_onnx_runtime(run: dict) -> None:
    rows = rows_named(run, "predict")
    assert [r.name.split(" (")[0] for r in rows] == [
        "predict baseline, batch 1",
        "predict baseline, batch 8",  # --quick: 8, not 64
        "predict improved, batch 1",
        "predict improved, batch 8",
    ]
    for row in rows:
        assert positive(row.throughput) and positive(row.ratio)
        assert row.reference.startswith("ONNX Runtime ") and "clips/s" in row.reference
    assert "Predictor.predict" in rows[0].note


def test_demo_and_noop_repro_rows(made: dict, tmp_path: Path, monkeypatch) -> None:
    """bench.demo's rows from a real demo: the run of `python -m pipeline.demo` is the
    session's `make demo` (conftest's `made`, which the README tests check), handed over as if
    just measured; the no-op `dvc repro` really runs, in a copy of that workspace."""
    calls: list[list[str]] = []
    real = measure.run_measured

    def measured(args: list[str], cwd: Path | None = None, timeout: float = 1800):
        calls.append(list(args))
        if args[1:3] != ["-m", "pipeline.demo"]:
            return real(args, cwd, timeout)
        shutil.copytree(made["clone"] / ".demo", args[3], symlinks=True)
        return 0, made["out"], 60.0, 1 << 28

    monkeypatch.setattr(demo, "run_measured", measured)
    ctx = context.Context(csv=tmp_path / "unused.csv", results=tmp_path, quick=True)
    rows = {row.name: row for row in demo.run(ctx)}
    assert calls[0] == [
        sys.executable,
        "-m",
        "pipeline.demo",
        calls[0][3],
        *demo.demo_params(),
        *demo.QUICK,
    ]
    assert calls[1] == ["dvc", "repro"]
    # every stage the session's demo ran: dvc.yaml's, foreach expanded on the clone's params
    # (TINY's streams; no pose@, as the demo names no videos)
    ran = len(ALL_STAGES)
    assert rows["make demo"].note.startswith(f"{ran} stages; python -m pipeline.demo DIR")
    noop = rows["no-op dvc repro"]
    assert positive(noop.wall_s) and positive(noop.rss_bytes)
    rerun = next(c for c in noop.checks if c.label == "stages rerun")
    assert rerun.value == 0
    assert not Path(calls[0][3]).parent.exists()  # the benchmark's workspace is removed


def test_demo_params_come_from_the_makefile() -> None:
    params = demo.demo_params()
    assert "data.source=synthetic" in params and all("=" in p for p in params)


def test_gpu_rows_skip_without_cuda_and_time_the_cpu_epoch(run: dict) -> None:
    names = [name for name in run["rows"] if name.startswith(("GPU", "epoch improved"))]
    gpu_rows = [run["rows"][name] for name in names if "cpu" not in name]
    if gpu_rows[0].skipped is not None:
        assert "torch.cuda.is_available() is False" in gpu_rows[0].skipped
    else:
        assert all(positive(r.wall_s) and positive(r.ratio) for r in gpu_rows)
    (cpu,) = rows_named(run, "epoch improved, cpu")
    assert positive(cpu.throughput)


def test_ddp_rows_time_one_and_two_processes_and_skip_gpus_without_cuda(run: dict) -> None:
    one, two = rows_named(run, "DDP: epoch improved, CPU")
    assert (one.name, two.name) == (
        "DDP: epoch improved, CPU, 1 process",
        "DDP: epoch improved, CPU, 2 processes",
    )
    assert positive(one.throughput) and positive(two.throughput) and positive(two.ratio)
    assert "1 each" in two.note and "gloo" in two.note
    if not torch.cuda.is_available():
        assert (
            "torch.cuda.is_available() is False"
            in run["rows"]["DDP: epoch improved on GPUs"].skipped
        )


def test_unpickle_rows_for_legit_and_hostile_files(run: dict) -> None:
    rows = rows_named(run, "unpickle, ")
    names = {row.name for row in rows}
    assert {"unpickle, legit PYSKL", "unpickle, tiny instructions"} <= names
    assert all("loaded" in row.note or "refused" in row.note for row in rows)


def test_the_sweep_is_left_to_make_bench(run: dict) -> None:
    row = run["rows"]["sweep of 4 improved experiments"]
    assert row.skipped is not None and "--quick" in row.skipped


def test_table_and_saved_results(run: dict) -> None:
    text = (run["results"] / "bench.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith("|")]
    assert lines[0].startswith("| benchmark | wall | peak RSS | throughput |")
    assert len(lines) == 2 + run["benchmarks"]
    assert "load average" in text


def test_a_missing_clip_list_skips_with_a_message(tmp_path: Path, capsys) -> None:
    assert main(["--quick", "--csv", str(tmp_path / "absent.csv")]) == []
    assert "skipped: the clip list" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here: make gpu-check would run")
def test_gpu_check_without_cuda_is_one_line_and_exit_2(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.gpu_check"],
        cwd=tmp_path,
        env=measure.child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stdout == "", done
    assert done.stderr == (
        "error: gpu-check: no CUDA device here (torch.cuda.is_available() is "
        "False); run it on a machine with a GPU and a CUDA build of torch\n"
    )
    assert list(tmp_path.iterdir()) == []  # no workspace was made


def test_pose_rows_frames_per_second_on_real_videos(run: dict) -> None:
    """--quick: the estimator at 640x480 on one process (skipped without ../shared/videos or
    the video extra, saying which)."""
    rows = [row for name, row in run["rows"].items() if name.startswith("pose")]
    assert len(rows) == 1, list(run["rows"])
    (row,) = rows
    if row.skipped is not None:
        assert "no real videos" in row.skipped or "video extra" in row.skipped, row.skipped
        return
    assert row.name == "pose 640x480, 1 process" and row.unit == "frames/s"
    assert positive(row.throughput) and positive(row.rss_bytes)
    assert "640x480, 72 frames" in row.note
