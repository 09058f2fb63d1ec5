"""The compact subset that `extract` writes and `shards` reads.

Ragged clips are stored flat and without pickle, so the next stage can memory-map them:
`keypoints.npy` float16 [rows, 17, 2] and `scores.npy` float16 [rows, 17] hold every clip's
persons x frames rows back to back; `index.csv` gives each clip's offset, persons and frames
(clip i is rows offset .. offset + persons * frames, reshaped to [persons, frames, ...]);
`meta.json` holds the class names and counts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.skeleton import MAX_IMAGE_SIDE, NUM_JOINTS
from pipeline.files.atomic import atomic_dir
from pipeline.files.readers import check_range, damaged, npy_layout, read_csv, read_json

INDEX = {
    "frame_dir": str,
    "label": int,
    "target": int,
    "class_name": str,
    "group": str,
    "split": str,
    "frames": int,
    "persons": int,
    "offset": int,
    "img_h": int,
    "img_w": int,
}
INDEX_COLUMNS = list(INDEX)
SPLITS = ("train", "val", "test")
# Keypoints and scores are stored as float16: half the size, and precise enough for pixel
# coordinates. Models learn from the rounded values, so predicting rounds a raw clip the same way.
DTYPE = "<f2"
STAGE = "extract"  # the stage that writes every file read here
META = {
    "source": str,
    "splits": {"train": str, "test": str},
    "labels": [int],
    "classes": [str],
    "validation": str,
    "counts": {split: int for split in SPLITS},
    "skipped_no_person": int,
    "skipped": [str],
    "warnings": [str],
}


@dataclasses.dataclass(frozen=True)
class Meta:
    """meta.json: what `extract` chose and how, typed, read and checked once."""

    source: str  # the pickle
    train_split: str  # its split names
    test_split: str
    labels: list[int]  # the pickle's label of each class, by target
    classes: list[str]  # class names, by target
    validation: str  # how validation was held out, in words
    counts: dict[str, int]  # clips per split (train, val, test)
    skipped: list[str]  # chosen clips with no person, left out
    warnings: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "splits": {"train": self.train_split, "test": self.test_split},
            "labels": self.labels,
            "classes": self.classes,
            "validation": self.validation,
            "counts": self.counts,
            "skipped_no_person": len(self.skipped),
            "skipped": self.skipped,
            "warnings": self.warnings,
        }

    @classmethod
    def read(cls, path: Path) -> Meta:
        raw = read_json(path, STAGE, META)
        return cls(
            source=raw["source"],
            train_split=raw["splits"]["train"],
            test_split=raw["splits"]["test"],
            labels=raw["labels"],
            classes=raw["classes"],
            validation=raw["validation"],
            counts=raw["counts"],
            skipped=raw["skipped"],
            warnings=raw["warnings"],
        )


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
    meta: Meta,
) -> None:
    """Write the subset atomically: `rows` (index.csv columns, no offset yet) and their clips."""
    offsets = np.cumsum([0] + [r["persons"] * r["frames"] for r in rows])
    for row, offset in zip(rows, offsets[:-1], strict=False):
        row["offset"] = int(offset)
    total = int(offsets[-1])
    with atomic_dir(out_dir) as tmp:
        write_npy(
            tmp / "keypoints.npy",
            DTYPE,
            (total, NUM_JOINTS, 2),
            (a["keypoint"].reshape(-1, NUM_JOINTS, 2) for a in annotations),
        )
        write_npy(
            tmp / "scores.npy",
            DTYPE,
            (total, NUM_JOINTS),
            (a["keypoint_score"].reshape(-1, NUM_JOINTS) for a in annotations),
        )
        pd.DataFrame(rows, columns=INDEX_COLUMNS).to_csv(tmp / "index.csv", index=False)
        (tmp / "meta.json").write_text(json.dumps(meta.to_json(), indent=2) + "\n")


@dataclass(frozen=True)
class Clips:
    """Ragged clips laid out as the subset stores them: clip i is rows start[i] ..
    start[i] + persons[i] * frames[i] of `keypoint` and `score`, persons after persons."""

    keypoint: np.ndarray  # float16 [rows, 17, 2]
    score: np.ndarray  # float16 [rows, 17]
    start: np.ndarray  # int64 [clips]
    persons: np.ndarray  # int64 [clips]
    frames: np.ndarray  # int64 [clips]
    img_hw: np.ndarray  # int64 [clips, 2]: image height and width

    def __len__(self) -> int:
        return len(self.start)

    @classmethod
    def one(
        cls, keypoint: np.ndarray, keypoint_score: np.ndarray, img_hw: tuple[int, int]
    ) -> Clips:
        """One clip [M, T, 17, 2] + scores [M, T, 17], rounded to the subset's float16."""
        m, t = keypoint.shape[:2]
        return cls(
            keypoint=np.ascontiguousarray(keypoint, DTYPE).reshape(m * t, NUM_JOINTS, 2),
            score=np.ascontiguousarray(keypoint_score, DTYPE).reshape(m * t, NUM_JOINTS),
            start=np.zeros(1, np.int64),
            persons=np.array([m], np.int64),
            frames=np.array([t], np.int64),
            img_hw=np.array([img_hw], np.int64),
        )


class _FlatReader:
    """Rows of a flat .npy read with pread: unlike a memory map, pages read are not held in RSS."""

    def __init__(self, path: Path, row_shape: tuple[int, ...]) -> None:
        shape, self._dtype, self._start = npy_layout(path, STAGE, DTYPE, 1 + len(row_shape))
        if shape[1:] != row_shape:
            raise damaged(path, STAGE, f"expected rows of shape {row_shape}, found {shape[1:]}")
        self._path = path
        self._fd: int | None = None  # opened on first read, so a failed check leaks nothing
        self.count = shape[0]
        self._row_shape = row_shape
        self._row_bytes = self._dtype.itemsize * math.prod(row_shape)

    def rows(self, start: int, stop: int) -> np.ndarray:
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDONLY)
        size = (stop - start) * self._row_bytes
        data = os.pread(self._fd, size, self._start + start * self._row_bytes)
        return np.frombuffer(data, self._dtype).reshape((stop - start, *self._row_shape))

    def read_into(self, start: int, out: np.ndarray) -> None:
        """Rows start .. start + len(out) into `out` (C-contiguous, of this file's rows)."""
        if self._fd is None:
            self._fd = os.open(self._path, os.O_RDONLY)
        view = memoryview(out).cast("B")
        offset = self._start + start * self._row_bytes
        while len(view):  # a regular file reads whole; a short read would only be retried
            done = os.preadv(self._fd, [view], offset)
            if done == 0:
                raise damaged(self._path, STAGE, f"ends before row {start + len(out)}")
            view, offset = view[done:], offset + done

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Subset:
    """A written subset: the index in memory, clips read from disk only when asked for."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        self.folder = folder
        self.index = read_csv(folder / "index.csv", STAGE, INDEX)
        self.meta = Meta.read(folder / "meta.json")
        self.keypoints = _FlatReader(folder / "keypoints.npy", (NUM_JOINTS, 2))
        self.scores = _FlatReader(folder / "scores.npy", (NUM_JOINTS,))
        self._check()
        self._offset = self.index["offset"].to_numpy()
        self._persons = self.index["persons"].to_numpy()
        self._frames = self.index["frames"].to_numpy()
        self._img_hw = self.index[["img_h", "img_w"]].to_numpy(np.int64)
        self._buffers = (np.empty((0, NUM_JOINTS, 2), DTYPE), np.empty((0, NUM_JOINTS), DTYPE))

    def _check(self) -> None:
        """The index and the arrays agree, so every clip it names reads back whole."""
        rows = self.keypoints.count
        if self.scores.count != rows:
            raise damaged(
                self.folder / "scores.npy",
                STAGE,
                f"holds {self.scores.count} rows, keypoints.npy {rows}",
            )
        path, index = self.folder / "index.csv", self.index
        limits = {
            "frames": (1, rows),
            "persons": (1, rows),
            "offset": (0, rows),
            "target": (0, len(self.classes) - 1),
            "img_h": (1, MAX_IMAGE_SIDE),
            "img_w": (1, MAX_IMAGE_SIDE),
        }
        for column, (lo, hi) in limits.items():
            check_range(path, STAGE, index, column, lo, hi)
        beyond = np.flatnonzero(index["offset"] + index["persons"] * index["frames"] > rows)
        if len(beyond):
            raise damaged(
                path,
                STAGE,
                f"row {beyond[0] + 1}: its clip runs past the {rows} rows of keypoints.npy",
            )
        unknown = np.flatnonzero(~index["split"].isin(SPLITS))
        if len(unknown):
            found = index["split"].iloc[unknown[0]]
            raise damaged(
                path,
                STAGE,
                f"column 'split', row {unknown[0] + 1}: expected one of "
                f"{list(SPLITS)}, found {found!r}",
            )

    @property
    def classes(self) -> list[str]:
        return list(self.meta.classes)

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

    def clips(self, rows: np.ndarray, reuse: bool = False) -> Clips:
        """Clips `rows` in one batch: each run of clips stored back to back is one read.

        With `reuse`, the clips are read into buffers this subset keeps for the next such call
        (valid until then): a batch of clips is tens of MB, and fresh arrays that large cost
        a page fault per 4 KiB on every batch."""
        rows = np.asarray(rows, np.int64)
        offset, persons, frames = self._offset[rows], self._persons[rows], self._frames[rows]
        sizes = persons * frames
        stops = offset + sizes
        cuts = [0, *(np.flatnonzero(offset[1:] != stops[:-1]) + 1).tolist(), len(rows)]
        starts = np.cumsum(sizes) - sizes
        total = int(sizes.sum())
        if reuse:
            if len(self._buffers[1]) < total:
                grown = total + total // 4  # room for the next batches' differing lengths
                self._buffers = (
                    np.empty((grown, NUM_JOINTS, 2), DTYPE),
                    np.empty((grown, NUM_JOINTS), DTYPE),
                )
            keypoint, score = (b[:total] for b in self._buffers)
        else:
            keypoint = np.empty((total, NUM_JOINTS, 2), DTYPE)
            score = np.empty((total, NUM_JOINTS), DTYPE)
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            if b > a:  # one read per run of clips stored back to back, straight into place
                first, stop = int(starts[a]), int(starts[b - 1] + sizes[b - 1])
                self.keypoints.read_into(int(offset[a]), keypoint[first:stop])
                self.scores.read_into(int(offset[a]), score[first:stop])
        return Clips(
            keypoint=keypoint,
            score=score,
            start=starts,
            persons=persons.astype(np.int64),
            frames=frames.astype(np.int64),
            img_hw=self._img_hw[rows],
        )

    def close(self) -> None:
        self.keypoints.close()
        self.scores.close()
