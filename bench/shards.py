"""Benchmark 2: the shards stage on all 101 classes, 64 frames, 2 persons (params otherwise).

Reads the 101-class subset the extract benchmark wrote (built here if absent, untimed) and
leaves the shards for the training, evaluation and GPU benchmarks. Peak RSS is that of the
stage's whole process tree (the pool of workers included). Targets: >= 5,000 clips/s on
2 cores; peak RSS <= 1.5x the shards' size on disk.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

from bench import extract as bench_extract
from bench.common import GB, folder_bytes, fresh
from bench.context import Context, load_params
from bench.measure import cpu_seconds, measure, measure_best
from bench.report import Check, Row

OVERRIDES = {"frames": 64, "persons": 2}
MIN_CLIPS_PER_S = 5000.0


def config() -> Any:
    return dataclasses.replace(load_params("shards")["shards"], **OVERRIDES)


def child_shards(subset: str, out: str) -> dict[str, Any]:
    from pipeline import shards

    cfg = config()
    start, cpu = time.perf_counter(), cpu_seconds()
    manifest = shards.shards(cfg, subset, out)
    seconds = time.perf_counter() - start
    clips = sum(s.clips for s in manifest.splits.values())
    return {
        "seconds": seconds,
        "cpu": cpu_seconds() - cpu,
        "clips": clips,
        "workers": cfg.workers or os.cpu_count(),
    }


def shards_dir(ctx: Context) -> Path:
    return ctx.work / "shards-all"


def ensure_subset(ctx: Context) -> Path:
    subset = bench_extract.subset_dir(ctx)
    if not (subset / "meta.json").exists():
        ctx.log("bench: building the 101-class subset first (not timed)")
        measure(
            "bench.extract:child_extract",
            {"pkl": str(ctx.mirror()), "out": str(subset), "classes": "all"},
        )
    return subset


def ensure_shards(ctx: Context) -> Path:
    """The 101-class shards, built (untimed) when a benchmark needs them and they are absent."""
    out = shards_dir(ctx)
    if not (out / "manifest.json").exists():
        subset = ensure_subset(ctx)
        ctx.log("bench: building the 101-class shards first (not timed)")
        measure("bench.shards:child_shards", {"subset": str(subset), "out": str(out)})
    return out


def run(ctx: Context) -> list[Row]:
    subset, out = ensure_subset(ctx), shards_dir(ctx)
    got = measure_best(
        ctx,
        "bench.shards:child_shards",
        {"subset": str(subset), "out": str(out)},
        prepare=lambda: fresh(out),
    )
    seconds, clips = got.result["seconds"], got.result["clips"]
    size = folder_bytes(out)
    rate = clips / seconds
    cfg = config()
    # on a busy machine the wall time says little; CPU time (process and workers) says what
    # the stage would take on idle cores
    cpu, cores = got.result["cpu"], os.cpu_count() or 1
    return [
        Row(
            name="shards, 101 classes",
            wall_s=seconds,
            rss_bytes=got.rss_bytes,
            throughput=rate,
            reference=f"shards on disk {size / GB:.2f} GiB",
            ratio=got.rss_bytes / size,
            checks=[
                Check("clips/s", rate, MIN_CLIPS_PER_S, at_most=False),
                Check("RSS/disk", got.rss_bytes / size, 1.5, unit="x"),
            ],
            note=f"{cpu:.1f} s CPU ({clips / cpu * cores:,.0f} clips/s on {cores} idle cores by "
            f"CPU time); {clips:,} clips, {got.result['workers']} workers on {cores} cores; "
            f"{cfg.frames} frames, {cfg.persons} persons, "
            f"{cfg.train_views}/{cfg.test_views} train/test views; "
            "ratio = peak RSS / size on disk",
        )
    ]
