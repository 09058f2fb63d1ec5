"""Benchmark 1: the extract stage against a bare `pickle.load` of the same file.

Both run in fresh children on the warm page cache; each is timed from just before it opens the
pickle to its end (extract: load through the restricted reader, checks, selection, writing the
subset), so interpreter start and imports are left out of both (the note gives them).
Targets: time <= 1.2x (8 classes) / 2x (101) the load's; peak RSS <= 1.5x / 2.5x the file size.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from bench.common import GB, MB, fresh
from bench.context import Context, load_params
from bench.measure import cpu_seconds, measure_best
from bench.report import Check, Row

CASES = (
    ("extract, 8 classes", [0, 1, 2, 3, 4, 5, 6, 7], 1.2, 1.5),
    ("extract, 101 classes", "all", 2.0, 2.5),
)


def child_pickle_load(pkl: str) -> dict[str, Any]:
    import pickle

    start, cpu = time.perf_counter(), cpu_seconds()
    with open(pkl, "rb") as handle:
        data = pickle.load(handle, encoding="latin1")  # as the notebook loads it
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "cpu": cpu_seconds() - cpu, "clips": len(data["annotations"])}


def child_extract(pkl: str, out: str, classes: Any) -> dict[str, Any]:
    imports = time.perf_counter()
    from pipeline import extract

    cfg = dataclasses.replace(load_params("data")["data"], pkl=pkl, classes=classes)
    start, cpu = time.perf_counter(), cpu_seconds()
    meta = extract.extract(cfg, pkl, out)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "cpu": cpu_seconds() - cpu,
        "imports": start - imports,
        "clips": sum(meta.counts.values()),
        "classes": len(meta.classes),
    }


def subset_dir(ctx: Context) -> Path:
    """Where the 101-class subset lands; the shards benchmark reads it."""
    return ctx.work / "subset-all"


def run(ctx: Context) -> list[Row]:
    pkl = ctx.mirror()
    size = pkl.stat().st_size
    ref = measure_best(ctx, "bench.extract:child_pickle_load", {"pkl": str(pkl)})
    ref_s = ref.result["seconds"]
    reference = (
        f"pickle.load {ref_s:.2f} s ({ref.result['cpu']:.2f} s CPU), {ref.rss_bytes / GB:.2f} GiB"
    )
    rows = []
    for name, classes, time_limit, rss_limit in CASES:
        out = subset_dir(ctx) if classes == "all" else ctx.work / "subset-8"
        got = measure_best(
            ctx,
            "bench.extract:child_extract",
            {"pkl": str(pkl), "out": str(out), "classes": classes},
            prepare=lambda out=out: fresh(out),
        )
        seconds = got.result["seconds"]
        rows.append(
            Row(
                name=name,
                wall_s=seconds,
                rss_bytes=got.rss_bytes,
                throughput=size / seconds / MB,
                unit="MiB/s",
                reference=reference,
                ratio=seconds / ref_s,
                checks=[
                    Check("time", seconds / ref_s, time_limit, unit="x"),
                    Check("RSS/file", got.rss_bytes / size, rss_limit, unit="x"),
                ],
                note=f"{got.result['cpu']:.2f} s CPU; {got.result['clips']:,} clips kept of "
                f"{ref.result['clips']:,}; file {size / GB:.2f} GiB; imports "
                f"{got.result['imports']:.1f} s not timed",
            )
        )
    return rows
