"""Benchmark 6: one epoch of improved on the 101-class shards, GPU vs CPU, with and without AMP.

Each run is the training benchmark's own loop (`bench.train.child_ours`) over a whole epoch
(--quick: a few batches), on `cuda` with `train.amp` false and true, against the same on CPU
(where autocast does nothing, so CPU is timed once). Without CUDA (torch.cuda.is_available()
is False) the GPU rows are skipped with a message; --quick still times its CPU run, so the
smoke test goes through this code, and that run is what tells whether CUDA is there.
No target: the speed-ups are for the record.
"""

from __future__ import annotations

import subprocess
import sys

from bench import shards as bench_shards
from bench.context import Context
from bench.measure import Measurement, child_env, measure
from bench.report import Row

SECTION = "model"
NO_CUDA = Row(
    name="GPU: improved epoch",
    skipped="no CUDA device (torch.cuda.is_available() is False); GPU vs CPU not measured",
)


def ask_torch(expression: str) -> str:
    """What `expression` prints in a child that imported torch, so this process never
    imports torch or touches a GPU ("" if the child failed)."""
    code = f"import torch; print({expression})"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=child_env()
    )
    return done.stdout.strip() if done.returncode == 0 else ""


def cuda_available() -> bool:
    return ask_torch("torch.cuda.is_available()") == "True"


def _epoch(ctx: Context, shards: str, device: str, amp: bool) -> Measurement:
    return measure(
        "bench.train:child_ours",
        {
            "shards": shards,
            "section": SECTION,
            "device": device,
            "amp": amp,
            "batches": ctx.batches if ctx.quick else 0,
            "settle": False,
            "threads": ctx.thread_counts()[0],
        },
    )


def run(ctx: Context) -> list[Row]:
    if not ctx.quick and not cuda_available():
        return [NO_CUDA]
    shards = str(bench_shards.ensure_shards(ctx))
    cpu = _epoch(ctx, shards, "cpu", False)
    timed = {}
    if cpu.result["cuda"]:
        timed = {("cuda", amp): _epoch(ctx, shards, "cuda", amp) for amp in (False, True)}
    timed["cpu", False] = cpu
    rows = []
    for (device, amp), got in timed.items():
        r = got.result
        speedup = cpu.result["seconds"] / r["seconds"] if device != "cpu" else None
        rows.append(
            Row(
                name=f"epoch improved, {device}{', amp' if amp else ''}",
                wall_s=r["seconds"],
                rss_bytes=got.rss_bytes,
                throughput=r["clips"] / r["seconds"],
                reference=f"CPU epoch {cpu.result['seconds']:.1f} s" if speedup else "—",
                ratio=speedup,
                note=f"{r['batches']} batches of {r['batch_size']}"
                + ("; ratio = CPU time / this" if speedup else ""),
            )
        )
    return rows if cpu.result["cuda"] else [NO_CUDA, *rows]
