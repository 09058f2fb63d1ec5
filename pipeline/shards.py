"""Stage `shards`: every split of the subset as padded float32 tensors in memory-mappable shards.

Writes `data/shards/<split>-NNNNN.npy` ([clips, views, frames, persons, 17, 3]), one
`<split>.csv` per split (frame_dir, label, target, class_name, length, in stored order) and
`manifest.json` (counts, shapes, class names and the params that built them). Shards are built
in parallel processes, each reading its own clips from the subset.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline import params, preprocess, skeleton
from pipeline.atomic import atomic_dir, write_json
from pipeline.errors import cli
from pipeline.paths import SHARDS_DIR, SUBSET_DIR
from pipeline.subset import SPLITS, Subset

_subset: Subset | None = None  # one open subset per worker process


def _worker_subset(folder: str) -> Subset:
    global _subset
    if _subset is None or str(_subset.folder) != folder:
        _subset = Subset(folder)
    return _subset


def build_shard(
    folder: str, rows: np.ndarray, cfg: Mapping[str, Any], views: int, out: str
) -> np.ndarray:
    """Build and save one shard of subset rows; return their sampled lengths."""
    data = _worker_subset(folder)
    img = data.index[["img_h", "img_w"]].to_numpy()
    shape = (len(rows), views, cfg["frames"], cfg["persons"], skeleton.NUM_JOINTS, 3)
    batch = np.empty(shape, np.float32)
    lengths = np.empty(len(rows), np.int64)
    for k, row in enumerate(rows):
        keypoint, score = data.clip(int(row))
        rng = np.random.default_rng([cfg["seed"], int(row)]) if views > 1 else None
        batch[k], lengths[k] = preprocess.build_clip(
            keypoint, score, tuple(img[row]), cfg, views, rng
        )
    np.save(out, batch)
    return lengths


def views_for(split: str, cfg: Mapping[str, Any]) -> int:
    """Test clips keep several sampled views for test-time averaging; head sampling has one."""
    return cfg["test_views"] if split == "test" and cfg["sampling"] == "uniform" else 1


def shards(cfg: Mapping[str, Any], subset_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Run the stage; return the manifest."""
    data = Subset(subset_dir)
    jobs = []
    for split in SPLITS:
        rows = data.rows(split)
        for number, start in enumerate(range(0, len(rows), cfg["size"])):
            jobs.append((split, number, rows[start : start + cfg["size"]]))
    workers = min(cfg["workers"] or os.cpu_count() or 1, len(jobs))
    manifest: dict[str, Any] = {
        "classes": data.classes,
        "channels": list(preprocess.CHANNELS),
        "joints": list(skeleton.JOINTS),
        "shape": [cfg["frames"], cfg["persons"], skeleton.NUM_JOINTS, len(preprocess.CHANNELS)],
        "layout": "clips, views, frames, persons, joints, channels",
        "splits": {},
        "data": {"source": data.meta["source"], **data.meta["splits"]},
        "params": dict(cfg),
    }
    with atomic_dir(out_dir) as tmp:
        names = [f"{split}-{number:05d}.npy" for split, number, _ in jobs]
        args = [
            (str(subset_dir), rows, dict(cfg), views_for(split, cfg), str(tmp / name))
            for (split, _, rows), name in zip(jobs, names, strict=True)
        ]
        if workers > 1:
            with ProcessPoolExecutor(workers) as pool:
                lengths = list(pool.map(build_shard, *zip(*args, strict=True)))
        else:
            lengths = [build_shard(*a) for a in args]
        columns = ["frame_dir", "label", "target", "class_name"]
        for split in SPLITS:
            mine = [i for i, (s, _, _) in enumerate(jobs) if s == split]
            table = data.index.iloc[data.rows(split)][columns].copy()
            table["length"] = np.concatenate([lengths[i] for i in mine])
            table.to_csv(tmp / f"{split}.csv", index=False)
            manifest["splits"][split] = {
                "clips": len(table),
                "views": views_for(split, cfg),
                "shards": [names[i] for i in mine],
            }
        write_json(tmp / "manifest.json", manifest)
    data.close()
    return manifest


@cli
def main() -> None:
    cfg = params.load("shards")["shards"]
    manifest = shards(cfg, SUBSET_DIR, SHARDS_DIR)
    counts = ", ".join(f"{s} {v['clips']}" for s, v in manifest["splits"].items())
    print(f"shards: {counts} clips of shape {manifest['shape']} -> {SHARDS_DIR}")


if __name__ == "__main__":
    main()
