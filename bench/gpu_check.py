"""`make gpu-check`: the CUDA paths of training in one go, on a machine with GPUs.

Usage: python -m bench.gpu_check [DEST]

In a demo workspace (the Makefile's DEMO_PARAMS with EPOCHS; DEST, or a temporary folder that
is removed after), extract and shards run once; then both models are trained and evaluated with
`train.device: cuda`, again with `train.amp: true`, and again with `train.nproc` = every visible
GPU (DDP over nccl; left out with a single GPU). One table follows: stage, device, epoch time
(the median gap between the stage's epoch lines, so start-up and the first epoch's warm-up are
left out) and test accuracy. About 2 minutes on one GPU. Without CUDA it says so in one line and
exits with code 2.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.demo import demo_params
from bench.measure import child_env
from pipeline.core.errors import cli, fail
from pipeline.project import workspace

EPOCHS = ["baseline.epochs=10", "model.epochs=10"]
BATCH = 32
EPOCH_LINE = re.compile(r"^train \w+: epoch +\d+:")
DEVICE = re.compile(r"^train \w+: \w+ on (.+), [\d,]+ parameters$")


def stage(dest: Path, *args: str) -> list[tuple[float, str]]:
    """`python -m pipeline.<args>` in the workspace: its output lines with their arrival times."""
    process = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=dest,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    lines = [(time.perf_counter(), line.rstrip("\n")) for line in process.stdout]
    err = process.communicate()[1]
    if process.returncode:
        last = (err.strip().splitlines() or ["(no message)"])[-1]
        raise fail(
            "gpu-check", f"`python -m {' '.join(args)}` failed (exit {process.returncode}): {last}"
        )
    return lines


def train_and_evaluate(dest: Path, name: str) -> tuple[str, float, float]:
    """(device as the stage names it, median epoch seconds, test accuracy) of model `name`."""
    lines = stage(dest, "pipeline.train", name)
    device = next((m[1] for _, line in lines if (m := DEVICE.match(line))), "?")
    times = [t for t, line in lines if EPOCH_LINE.match(line)]
    epoch = statistics.median(b - a for a, b in zip(times, times[1:], strict=False))
    stage(dest, "pipeline.evaluate", name)
    metrics = json.loads((dest / "metrics" / f"{name}.json").read_text())
    return device, epoch, metrics["accuracy"]


def check(dest: Path, gpus: int) -> list[list[str]]:
    workspace.create(dest, workspace.parse_overrides(demo_params() + EPOCHS))
    for name in ("extract", "shards"):
        stage(dest, f"pipeline.{name}")
    runs = [
        ("cuda", {"train.device": "cuda"}),
        ("cuda, amp", {"train.device": "cuda", "train.amp": True}),
    ]
    if gpus > 1:  # the global batch must split evenly between the GPUs
        batch = math.lcm(BATCH, gpus)
        runs.append(
            (
                f"DDP, {gpus} GPUs, batch {batch}",
                {"train.device": "cuda", "train.nproc": gpus, "train.batch_size": batch},
            )
        )
    rows = []
    for label, overrides in runs:
        params = {
            "train.device": "auto",
            "train.amp": False,
            "train.nproc": 1,
            "train.batch_size": BATCH,
            **overrides,
        }
        workspace.override_file(dest / "params.yaml", params)
        for name in ("baseline", "improved"):
            device, epoch, accuracy = train_and_evaluate(dest, name)
            rows.append([f"train@{name} ({label})", device, f"{epoch:.3f} s", f"{accuracy:.3f}"])
    return rows


def table(rows: list[list[str]]) -> str:
    lines = ["| stage | device | epoch | test accuracy |", "|---|---|---|---|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


@cli
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    import torch

    if not torch.cuda.is_available():
        raise fail(
            "gpu-check",
            "no CUDA device here (torch.cuda.is_available() is False); "
            "run it on a machine with a GPU and a CUDA build of torch",
        )
    start = time.perf_counter()
    dest = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="gpu-check-")) / "demo"
    try:
        rows = check(dest, torch.cuda.device_count())
    finally:
        if not argv:
            shutil.rmtree(dest.parent, ignore_errors=True)
    print(table(rows))
    print(f"gpu-check: {time.perf_counter() - start:.0f} s, torch {torch.__version__}")


if __name__ == "__main__":
    main()
