"""Reading one split of the shards: memory-mapped, gathered batch by batch.

Each batch is one fancy-indexed read per shard it touches, so training never does per-clip
Python work and never holds more than a batch of the split in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.errors import fail


def read_manifest(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / "manifest.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise fail(str(path), "not found: run the shards stage first (dvc repro)") from None


class ShardSet:
    """One split (`train`, `val` or `test`) of a shards folder."""

    def __init__(self, folder: str | Path, split: str) -> None:
        folder = Path(folder)
        self.manifest = read_manifest(folder)
        info = self.manifest["splits"][split]
        self.table = pd.read_csv(folder / f"{split}.csv", keep_default_na=False)
        self.shards = [np.load(folder / name, mmap_mode="r") for name in info["shards"]]
        sizes = [len(s) for s in self.shards]
        self._starts = np.cumsum([0] + sizes)
        self.views = int(info["views"])
        self.lengths = self.table["length"].to_numpy(np.int64)
        self.targets = self.table["target"].to_numpy(np.int64)
        if self._starts[-1] != len(self.table):
            raise fail(
                str(folder),
                f"{split}.csv lists {len(self.table)} clips, shards hold {self._starts[-1]}",
            )

    def __len__(self) -> int:
        return len(self.table)

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def persons(self) -> int:
        return int(self.manifest["shape"][1])

    def gather(self, idx: np.ndarray, view: int | np.ndarray = 0) -> np.ndarray:
        """Clips `idx` at one view, or one view each: float32 [len(idx), frames, persons, 17, 3]."""
        idx = np.asarray(idx, np.int64)
        views = np.broadcast_to(np.asarray(view, np.int64), idx.shape)
        shard = np.searchsorted(self._starts, idx, side="right") - 1
        local = idx - self._starts[shard]
        out = np.empty((len(idx), *self.shards[0].shape[2:]), np.float32)
        for s in np.unique(shard):
            mine = shard == s
            order = np.argsort(local[mine])  # sorted reads walk the file forwards
            rows = np.flatnonzero(mine)[order]
            out[rows] = self.shards[s][local[mine][order], views[mine][order]]
        return out

    def batches(
        self, batch_size: int, rng: np.random.Generator | None = None, drop_last: bool = False
    ) -> Iterator[np.ndarray]:
        """Index arrays of consecutive batches, shuffled when `rng` is given."""
        order = rng.permutation(len(self)) if rng is not None else np.arange(len(self))
        stop = len(order) - len(order) % batch_size if drop_last else len(order)
        for start in range(0, stop, batch_size):
            yield order[start : start + batch_size]
