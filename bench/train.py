"""Benchmark 3: training throughput of baseline and improved on the 101-class shards (CPU).

Ours is the pipeline's own `training.train_epoch` (params.yaml sections as they stand), cut to a
fixed number of batches after a short warm-up, both by the epoch's own `training.EpochStats`:
the data-handling share is the time it spent gathering batches and building the model input
(augmentation and streams) over the epoch's time. After timing, the rest of the train split is
gathered and the validation split predicted (untimed), so the peak RSS is that of a whole
epoch with its validation, memory-mapped shard pages included.

The reference is the seed notebook's loop written out here: its per-clip `SkeletonDataset`
(person 0, float32, reshape, minus the clip mean, pad or cut to 64 frames) behind
`DataLoader(batch_size, shuffle=True)`, over the same train clips of the same mirror pickle,
into the same model at the same batch size. So that the model does the same work, each batch
is laid out as ours (person 0's x, y; the rest zero) and given the configured streams, which
counts as the reference's data handling; it does not augment, which ours does if params ask.
Both run at params' train.threads and, where that means several, again at 1 thread
(`Context.thread_counts` says why). Targets: data handling <= 5% of epoch time; peak RSS
< 2 GiB (no target for the ratio).
"""

from __future__ import annotations

import csv
import itertools
import time
from pathlib import Path
from typing import Any

from bench import shards as bench_shards
from bench.common import GB, plural
from bench.context import Context, load_params
from bench.measure import Stopwatch, measure
from bench.report import Check, Row
from pipeline.core.params import STAGE_SECTION

WARMUP = 2  # batches before timing: first calls allocate and pick kernels
MAX_SHARE, MAX_RSS = 0.05, 2 * GB


def setup(
    section: str, device: str = "cpu", amp: bool | None = None, threads: int | None = None
) -> tuple[Any, Any, Any]:
    """A model section and `train` as params.yaml has them, with the benchmark's overrides
    applied, and the device (torch threads and seeds set by the pipeline's own runtime)."""
    import dataclasses

    from pipeline.learning import runtime

    loaded = load_params("train", section)
    changes: dict[str, Any] = {"device": device}
    if amp is not None:
        changes["amp"] = amp
    if threads is not None:
        changes["threads"] = threads
    train = dataclasses.replace(loaded["train"], **changes)
    return loaded[section], train, runtime.setup(train)


def timed_epoch(
    model: Any,
    data: Any,
    cfg: Any,
    train: Any,
    dev: Any,
    batches: int,
    world: Any = None,
) -> dict[str, Any]:
    """The pipeline's own `training.train_epoch`, cut to WARMUP batches (epoch 1), then timed
    over `batches` (epoch 2; 0 = the whole epoch), cut and timed by the epoch's own
    `EpochStats`. With several processes (`world`), each trains its share of the same global
    batches."""
    import torch

    from pipeline.core.errors import StopFlag
    from pipeline.learning import distributed, training

    world = world or distributed.SINGLE
    optimizer = training.make_optimizer(model, cfg)
    steps = len(list(data.batches(train.batch_size, None, train.drop_last)))
    scheduler = training.make_schedule(optimizer, cfg, steps)
    criterion = training.make_criterion(cfg, world)
    limit = min(batches, steps) if batches else steps

    def epoch(number: int, count: int) -> tuple[float, Any]:
        stats = training.EpochStats(limit=count)
        world.sum([0.0])  # every process starts together
        if dev.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        training.train_epoch(
            model,
            data,
            cfg,
            train,
            dev,
            optimizer,
            scheduler,
            criterion,
            number,
            StopFlag(),
            "bench",
            world,
            stats,
        )
        if dev.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start, stats

    epoch(1, min(WARMUP, limit))
    seconds, stats = epoch(2, limit)
    clips = sum(
        len(i)
        for i in itertools.islice(data.batches(train.batch_size, None, train.drop_last), limit)
    )
    return {
        "seconds": seconds,
        "data_seconds": stats.data_seconds,
        "clips": clips,
        "batches": limit,
        "steps": steps,
        "batch_size": train.batch_size,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }


def child_ours(
    shards: str,
    section: str,
    batches: int,
    device: str = "cpu",
    amp: bool | None = None,
    threads: int | None = None,
    settle: bool = True,
) -> dict[str, Any]:
    """Our loop; `batches` 0 = one whole epoch. Returns seconds, clips and the data share."""
    import numpy as np

    from pipeline.dataset.shardset import ShardSet
    from pipeline.learning import training
    from pipeline.learning.checkpoint import model_for

    cfg, train, dev = setup(section, device, amp, threads)
    data, val = ShardSet(shards, "train"), ShardSet(shards, "val")
    model = model_for(cfg, data.manifest).to(dev)
    result = timed_epoch(model, data, cfg, train, dev, batches)
    result["share"] = result["data_seconds"] / result["seconds"]
    if settle:
        # untimed: touch what the rest of a real epoch and its validation would
        views = np.random.default_rng(0)
        for idx in data.batches(train.batch_size):
            data.gather(idx, views.integers(data.views, size=len(idx)))
        training.validate(model, val, cfg, train, dev)
    return result


def _train_names(shards: str) -> list[str]:
    with open(Path(shards) / "train.csv", newline="") as handle:
        return [row["frame_dir"] for row in csv.DictReader(handle)]


def child_notebook(
    pkl: str, shards: str, section: str, batches: int, threads: int | None = None
) -> dict[str, Any]:
    """The notebook's Dataset + DataLoader loop on the same clips, into the same model."""
    import pickle

    import numpy as np
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, Dataset

    from pipeline.dataset.manifest import Manifest
    from pipeline.learning import features, training
    from pipeline.learning.checkpoint import model_for

    cfg, train, _ = setup(section, threads=threads)
    max_len = 64
    with open(pkl, "rb") as handle:
        data = pickle.load(handle, encoding="latin1")
    wanted = set(_train_names(shards))
    anns = [a for a in data["annotations"] if a["frame_dir"] in wanted]
    del data
    label_map = {old: i for i, old in enumerate(sorted({a["label"] for a in anns}))}

    class SkeletonDataset(Dataset):  # the notebook's, as it was
        def __init__(self, samples: list[dict]) -> None:
            self.samples = samples

        def __len__(self) -> int:
            return len(self.samples)

        def __getitem__(self, idx: int) -> tuple[Any, Any, Any]:
            ann = self.samples[idx]
            label = label_map[ann["label"]]
            kp = ann["keypoint"][0]
            t = kp.shape[0]
            seq = kp.astype(np.float32).reshape(t, -1)
            seq = seq - seq.mean(axis=0, keepdims=True)
            if t >= max_len:
                seq, seq_len = seq[:max_len], max_len
            else:
                pad = np.zeros((max_len - t, seq.shape[1]), dtype=np.float32)
                seq, seq_len = np.concatenate([seq, pad], axis=0), t
            return torch.from_numpy(seq), torch.tensor(label).long(), torch.tensor(seq_len).long()

    loader = DataLoader(SkeletonDataset(anns), batch_size=train.batch_size, shuffle=True)
    manifest = Manifest.read(shards)
    persons, joints, channels = manifest.persons, manifest.joints, len(manifest.channels)
    model = model_for(cfg, manifest)
    optimizer = training.make_optimizer(model, cfg)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    watch = Stopwatch()
    model.train()

    def to_model(seq: Any, seq_len: Any) -> Any:
        """The notebook's [B, 64, 34] as the same model's input: person 0's x, y in the shards'
        layout (other persons and the score zero), then the configured streams."""
        x = torch.zeros(seq.shape[0], max_len, persons, joints, channels)
        x[:, :, 0, :, :2] = seq.view(seq.shape[0], max_len, joints, 2)
        return features.build_input(x, seq_len, cfg.streams, cfg.score)

    def run(count: int) -> tuple[float, int]:
        watch.seconds, seen = 0.0, 0
        start = time.perf_counter()
        for seq, labels, seq_len in itertools.islice(watch.iterate(loader), count):
            x = watch.wrap(to_model)(seq, seq_len)
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x, seq_len), labels)
            loss.backward()
            optimizer.step()
            loss.item()
            seen += len(labels)
        return time.perf_counter() - start, seen

    torch.manual_seed(train.seed)
    limit = min(batches, len(loader)) if batches else len(loader)
    run(min(WARMUP, limit))
    seconds, clips = run(limit)
    return {"seconds": seconds, "clips": clips, "share": watch.seconds / seconds}


def run(ctx: Context) -> list[Row]:
    shards = str(bench_shards.ensure_shards(ctx))
    pkl = str(ctx.mirror())
    rows = []
    for threads in ctx.thread_counts():
        for name, section in STAGE_SECTION.items():
            common = {
                "shards": shards,
                "section": section,
                "batches": ctx.batches,
                "threads": threads,
            }
            ours = measure("bench.train:child_ours", common)
            ref = measure("bench.train:child_notebook", {**common, "pkl": pkl})
            o, r = ours.result, ref.result
            rate, ref_rate = o["clips"] / o["seconds"], r["clips"] / r["seconds"]
            rows.append(
                Row(
                    name=f"train {name} (CPU, {plural(o['threads'], 'thread')})",
                    wall_s=o["seconds"],
                    rss_bytes=ours.rss_bytes,
                    throughput=rate,
                    reference=f"notebook loop {ref_rate:,.0f} clips/s",
                    ratio=rate / ref_rate,
                    checks=[
                        Check("data share", 100 * o["share"], 100 * MAX_SHARE, unit="%"),
                        Check("RSS", ours.rss_bytes / GB, MAX_RSS / GB, unit=" GiB"),
                    ],
                    note=f"{o['batches']} of {o['steps']} batches of {o['batch_size']} after "
                    f"{WARMUP} warm-up; notebook loop: data share {100 * r['share']:.0f}%, "
                    f"peak RSS {ref.rss_bytes / GB:.2f} GiB",
                )
            )
    return rows
