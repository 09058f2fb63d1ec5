"""The compact subset that `extract` writes and `shards` reads.

Ragged clips are stored flat and without pickle, so the next stage can memory-map them:
`keypoints.npy` float16 [rows, 17, 2] and `scores.npy` float16 [rows, 17] hold every clip's
persons x frames rows back to back; `index.csv` gives each clip's offset, persons and frames
(clip i is rows offset .. offset + persons * frames, reshaped to [persons, frames, ...]);
`meta.json` holds the class names and counts.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.atomic import atomic_dir
from pipeline.skeleton import NUM_JOINTS

INDEX_COLUMNS = [
    "frame_dir", "label", "target", "class_name", "group", "split",
    "frames", "persons", "offset", "img_h", "img_w",
]  # fmt: skip
SPLITS = ("train", "val", "test")


def write_npy(path: Path, dtype: str, shape: tuple[int, ...], parts: Iterable[np.ndarray]) -> None:
    """Write a .npy array of known shape piece by piece, so no full copy is ever in memory."""
    with open(path, "wb") as handle:
        header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(handle, header)
        for part in parts:
            handle.write(np.ascontiguousarray(part, dtype=dtype).data)


def write(
    out_dir: str | Path,
    rows: list[dict[str, Any]],
    annotations: list[Mapping[str, Any]],
    meta: dict[str, Any],
) -> None:
    """Write the subset atomically: `rows` (index.csv columns, no offset yet) and their clips."""
    offsets = np.cumsum([0] + [r["persons"] * r["frames"] for r in rows])
    for row, offset in zip(rows, offsets[:-1], strict=False):
        row["offset"] = int(offset)
    total = int(offsets[-1])
    with atomic_dir(out_dir) as tmp:
        write_npy(
            tmp / "keypoints.npy", "<f2", (total, NUM_JOINTS, 2),
            (a["keypoint"].reshape(-1, NUM_JOINTS, 2) for a in annotations),
        )  # fmt: skip
        write_npy(
            tmp / "scores.npy", "<f2", (total, NUM_JOINTS),
            (a["keypoint_score"].reshape(-1, NUM_JOINTS) for a in annotations),
        )  # fmt: skip
        pd.DataFrame(rows, columns=INDEX_COLUMNS).to_csv(tmp / "index.csv", index=False)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")


class _FlatReader:
    """Rows of a flat .npy read with pread: unlike a memory map, pages read are not held in RSS."""

    def __init__(self, path: Path) -> None:
        with open(path, "rb") as handle:
            np.lib.format.read_magic(handle)
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            self._start = handle.tell()
        self._fd = os.open(path, os.O_RDONLY)
        self._dtype = dtype
        self._row_shape = shape[1:]
        self._row_bytes = dtype.itemsize * int(np.prod(shape[1:]))

    def rows(self, start: int, stop: int) -> np.ndarray:
        size = (stop - start) * self._row_bytes
        data = os.pread(self._fd, size, self._start + start * self._row_bytes)
        return np.frombuffer(data, self._dtype).reshape((stop - start, *self._row_shape))

    def close(self) -> None:
        os.close(self._fd)


class Subset:
    """A written subset: the index in memory, clips read from disk only when asked for."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.folder = folder
        # names stay text even when they look like numbers ('007' is not 7)
        text = {"frame_dir": str, "class_name": str, "group": str}
        self.index = pd.read_csv(folder / "index.csv", keep_default_na=False, dtype=text)
        self.meta = json.loads((folder / "meta.json").read_text())
        self.keypoints = _FlatReader(folder / "keypoints.npy")
        self.scores = _FlatReader(folder / "scores.npy")
        self._offset = self.index["offset"].to_numpy()
        self._persons = self.index["persons"].to_numpy()
        self._frames = self.index["frames"].to_numpy()

    @property
    def classes(self) -> list[str]:
        return list(self.meta["classes"])

    def rows(self, split: str) -> np.ndarray:
        """Positions in the index of one split's clips, in stored order."""
        return np.flatnonzero(self.index["split"].to_numpy() == split)

    def clip(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Clip i as (keypoint [M, T, 17, 2], keypoint_score [M, T, 17]), float16."""
        m, t, start = int(self._persons[i]), int(self._frames[i]), int(self._offset[i])
        stop = start + m * t
        return (
            self.keypoints.rows(start, stop).reshape(m, t, NUM_JOINTS, 2),
            self.scores.rows(start, stop).reshape(m, t, NUM_JOINTS),
        )

    def close(self) -> None:
        self.keypoints.close()
        self.scores.close()
