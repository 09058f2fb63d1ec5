"""Benchmark 7: an epoch of improved trained by several processes (DDP) against one process.

On CPU, `train.nproc` 1 and 2 with the same threads in all (params' train.threads, 0 = one per
core), which the stage splits between its processes, over gloo. With CUDA, 1 and all visible
GPUs (nccl, one each), with train.amp false and true. Each configuration runs in a fresh child
that starts its processes with `pipeline.learning.distributed.spawn`, as the train stage does; each
process builds the model as the stage does (`distributed.wrap`) and runs the training
benchmark's loop (`bench.train.timed_epoch`): a warm-up, then a whole epoch timed (--quick: a
few batches), rank 0 reporting. No target: the speed-ups are for the record.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from bench import shards as bench_shards
from bench.common import plural
from bench.context import Context, load_params
from bench.gpu import ask_torch
from bench.measure import Measurement, measure
from bench.report import Row

SECTION = "model"
NO_CUDA = Row(
    name="DDP: epoch improved on GPUs",
    skipped="no CUDA device (torch.cuda.is_available() is False); 1 and all GPUs not measured",
)


def child_epoch(
    shards: str, nproc: int, device: str, amp: bool, threads: int, batches: int
) -> dict[str, Any]:
    """The measured child: `nproc` processes (this one alone for 1) train; rank 0's figures."""
    import torch

    from pipeline.learning import distributed

    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        out = str(Path(tmp) / "rank0.json")
        args = (shards, amp, threads, batches, out)
        if nproc == 1:
            with distributed.joined(distributed.SINGLE, torch.device(device)) as world:
                rank_epoch(world, *args)
        else:
            distributed.spawn(rank_epoch, nproc, torch.device(device), *args)
        return json.loads(Path(out).read_text())


def rank_epoch(world: Any, shards: str, amp: bool, threads: int, batches: int, out: str) -> None:
    """One process: the improved model as the train stage builds it, an epoch timed."""
    import dataclasses

    import torch

    from bench.train import timed_epoch
    from pipeline.dataset.shardset import ShardSet
    from pipeline.learning import distributed, runtime
    from pipeline.learning.checkpoint import model_for

    loaded = load_params("train", SECTION)
    cfg = loaded[SECTION]
    train = dataclasses.replace(loaded["train"], amp=amp, threads=threads, nproc=world.size)
    runtime.setup(train, world.local_size)
    dev = torch.device(world.device)
    data = ShardSet(shards, "train")
    model = model_for(cfg, data.manifest).to(dev)
    result = timed_epoch(distributed.wrap(model, world, dev), data, cfg, train, dev, batches, world)
    if world.main:
        Path(out).write_text(json.dumps(result))


def _run(
    ctx: Context,
    shards: str,
    nproc: int,
    device: str,
    amp: bool,
    threads: int,
) -> Measurement:
    return measure(
        "bench.ddp:child_epoch",
        {
            "shards": shards,
            "nproc": nproc,
            "device": device,
            "amp": amp,
            "threads": threads,
            "batches": ctx.batches if ctx.quick else 0,
        },
    )


def _row(name: str, got: Measurement, first: Measurement, note: str) -> Row:
    r, one = got.result, first.result
    return Row(
        name=name,
        wall_s=r["seconds"],
        rss_bytes=got.rss_bytes,
        throughput=r["clips"] / r["seconds"],
        reference=f"1 process {one['seconds']:.2f} s" if got is not first else "—",
        ratio=one["seconds"] / r["seconds"] if got is not first else None,
        note=f"{r['batches']} of {r['steps']} batches of {r['batch_size']} (the global batch); "
        f"{note}" + ("; ratio = 1-process time / this" if got is not first else ""),
    )


def run(ctx: Context) -> list[Row]:
    shards = str(bench_shards.ensure_shards(ctx))
    threads = load_params("train")["train"].threads or os.cpu_count() or 1
    cpu = {n: _run(ctx, shards, n, "cpu", False, threads) for n in (1, 2)}
    rows = [
        _row(
            f"DDP: epoch improved, CPU, {_processes(n)}",
            got,
            cpu[1],
            f"gloo; {plural(threads, 'thread')} in all, {got.result['threads']} each",
        )
        for n, got in cpu.items()
    ]
    if not cpu[1].result["cuda"]:
        return [*rows, NO_CUDA]
    gpus = _gpu_count()
    for amp in (False, True):
        timed = {n: _run(ctx, shards, n, "cuda", amp, threads) for n in sorted({1, gpus})}
        rows += [
            _row(
                f"DDP: epoch improved, {plural(n, 'GPU')}{', amp' if amp else ''}",
                got,
                timed[1],
                "nccl, one GPU per process",
            )
            for n, got in timed.items()
        ]
    return rows


def _gpu_count() -> int:
    return int(ask_torch("torch.cuda.device_count()") or 1)


def _processes(count: int) -> str:
    return "1 process" if count == 1 else f"{count} processes"
