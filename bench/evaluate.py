"""Benchmark 4: evaluation throughput on the test split of the 101-class shards, batch 256.

A freshly initialised model of each params section (the speed of a forward pass does not
depend on the weights) goes through the evaluate stage's own `inference.predict`, with the
test-time views and flips of that section's `eval` params, over the first BATCHES batches of
the test split after a one-batch warm-up.
There is no target; the figure is for the record.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from bench import shards as bench_shards
from bench import train as bench_train
from bench.common import plural
from bench.context import Context
from bench.measure import measure
from bench.report import Row
from pipeline.core.params import STAGE_SECTION

BATCH = 256
BATCHES = 4  # timed, after the warm-up: 1,024 of the 3,783 test clips keep it quick


def child_evaluate(
    shards: str, section: str, batches: int = 0, threads: int | None = None
) -> dict[str, Any]:
    """Seconds to predict the test split (its first `batches` batches; 0 = all)."""
    import torch

    from pipeline.dataset.shardset import ShardSet
    from pipeline.learning import inference
    from pipeline.learning.checkpoint import model_for

    cfg, train, device = bench_train.setup(section, threads=threads)
    test = ShardSet(shards, "test")
    model = model_for(cfg, test.manifest).to(device)
    views, flip = cfg.eval.clips, cfg.eval.flip
    every = test.batches
    limit = batches or len(range(0, len(test), BATCH))

    def predict(count: int) -> tuple[float, int]:
        test.batches = lambda *a, **k: itertools.islice(every(*a, **k), count)
        start = time.perf_counter()
        probs = inference.predict(model, test, cfg, device, BATCH, views, flip, train.amp)
        return time.perf_counter() - start, len(probs)

    predict(1)
    seconds, clips = predict(limit)
    return {
        "seconds": seconds,
        "clips": clips,
        "views": views * (2 if flip else 1),
        "threads": torch.get_num_threads(),
    }


def run(ctx: Context) -> list[Row]:
    shards = str(bench_shards.ensure_shards(ctx))
    rows = []
    for threads in ctx.thread_counts():
        for name, section in STAGE_SECTION.items():
            got = measure(
                "bench.evaluate:child_evaluate",
                {
                    "shards": shards,
                    "section": section,
                    "threads": threads,
                    "batches": 2 if ctx.quick else BATCHES,
                },
            )
            r = got.result
            used, views = plural(r["threads"], "thread"), plural(r["views"], "view")
            rows.append(
                Row(
                    name=f"evaluate {name} (CPU, {used})",
                    wall_s=r["seconds"],
                    rss_bytes=got.rss_bytes,
                    throughput=r["clips"] / r["seconds"],
                    note=f"{r['clips']:,} test clips at batch {BATCH}, {views} each, fresh weights",
                )
            )
    return rows
