"""Reading one split of the shards: memory-mapped, gathered batch by batch.

Each batch is one fancy-indexed read per shard it touches, so training never does per-clip
Python work and never holds more than a batch of the split in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pipeline.dataset.manifest import Manifest
from pipeline.files.readers import check_range, damaged, map_npy, read_csv

STAGE = "shards"  # the stage that writes every file read here
TABLE = {"frame_dir": str, "label": int, "target": int, "class_name": str, "length": int}


class ShardSet:
    """One split (`train`, `val` or `test`) of a shards folder."""

    def __init__(self, folder: str | Path, split: str) -> None:
        folder = Path(folder)
        self.manifest = Manifest.read(folder)
        info = self.manifest.split(split, folder)
        self.views = info.views
        table_path = folder / f"{split}.csv"
        self.table = read_csv(table_path, STAGE, TABLE)
        self.shards = [map_npy(folder / name, STAGE, "<f4", 6) for name in info.shards]
        clip = (self.views, *self.manifest.clip_shape)
        for name, shard in zip(info.shards, self.shards, strict=True):
            if shard.shape[1:] != clip:
                found = shard.shape[1:]
                raise damaged(
                    folder / name,
                    STAGE,
                    f"expected clips of shape {clip} (from manifest.json), found {found}",
                )
        self._starts = np.cumsum([0] + [len(s) for s in self.shards])
        if self._starts[-1] != len(self.table):
            raise damaged(
                table_path,
                STAGE,
                f"lists {len(self.table)} clips, the shards of "
                f"manifest.json hold {self._starts[-1]}",
            )
        check_range(table_path, STAGE, self.table, "length", 1, self.manifest.frames)
        check_range(table_path, STAGE, self.table, "target", 0, len(self.classes) - 1)
        self.lengths = self.table["length"].to_numpy(np.int64)
        self.targets = self.table["target"].to_numpy(np.int64)

    def __len__(self) -> int:
        return len(self.table)

    @property
    def classes(self) -> list[str]:
        return list(self.manifest.classes)

    @property
    def persons(self) -> int:
        return self.manifest.persons

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
