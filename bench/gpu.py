"""Benchmark 6: one epoch of improved on the 101-class shards, GPU vs CPU, with and without AMP.

Each run is the training benchmark's own loop (`bench.train.child_ours`) over a whole epoch
(--quick: a few batches), on `cuda` with `train.amp` false and true, against the same on CPU
(where autocast does nothing, so CPU is timed once). Skipped with a message when
torch.cuda.is_available() is False. No target: the speed-ups are for the record.
"""

from __future__ import annotations

import subprocess
import sys

from bench import shards as bench_shards
from bench.common import Context, Row, child_env, measure

SECTION = "model"


def cuda_available() -> bool:
    """Asked of a child, so this process never imports torch or touches a GPU."""
    code = "import torch; print(torch.cuda.is_available())"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=child_env())  # fmt: skip
    return done.returncode == 0 and done.stdout.strip() == "True"


def run(ctx: Context, devices: tuple[str, ...] | None = None) -> list[Row]:
    """`devices` overrides the CUDA check (the tests run the CPU path alone)."""
    if devices is None:
        if not cuda_available():
            return [Row(name="GPU: improved epoch", skipped="no CUDA device "
                        "(torch.cuda.is_available() is False); GPU vs CPU not measured")]
        devices = ("cuda", "cpu")
    shards = str(bench_shards.ensure_shards(ctx))
    batches = ctx.batches if ctx.quick else 0
    runs = [(d, amp) for d in devices for amp in ((False, True) if d == "cuda" else (False,))]
    timed = {}
    for device, amp in runs:
        got = measure("bench.train:child_ours",
                      {"shards": shards, "section": SECTION, "batches": batches,
                       "device": device, "amp": amp, "settle": False,
                       "threads": ctx.thread_counts()[0]})  # fmt: skip
        timed[device, amp] = got
    cpu = timed.get(("cpu", False))
    rows = []
    for (device, amp), got in timed.items():
        r = got.result
        speedup = cpu.result["seconds"] / r["seconds"] if cpu and device != "cpu" else None
        rows.append(Row(
            name=f"epoch improved, {device}{', amp' if amp else ''}", wall_s=r["seconds"],
            rss_bytes=got.rss_bytes, throughput=r["clips"] / r["seconds"],
            reference=f"CPU epoch {cpu.result['seconds']:.1f} s" if speedup else "—",
            ratio=speedup,
            note=f"{r['batches']} batches of {r['batch_size']}"
                 + ("; ratio = CPU time / this" if speedup else ""),
        ))  # fmt: skip
    return rows
