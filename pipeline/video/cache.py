"""A per-video cache of estimated poses, keyed by the video's content and the estimator's settings.

Adding 10 videos to a folder of 1,000 estimates only the 10; renaming or moving a video, or
relabelling it, estimates nothing again; a run stopped halfway resumes where it stopped (each
video's entry is written whole, atomically, as soon as it is done). A change of estimator,
stride or max side changes the key, so stale poses are never reused.

Entries are .npz files (read with pickle disabled) under `$XDG_CACHE_HOME/skeleton-pose` (else
`~/.cache/skeleton-pose`), or the folder `--cache` names; deleting the folder is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.files.atomic import atomic_open

CHUNK = 1 << 20


def default_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "skeleton-pose"


def content_hash(path: str | Path) -> str:
    """sha256 of the file's bytes: the video's identity, whatever its name."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def settings_hash(settings: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Poses:
    """One video's estimate: keypoint [M, T, 17, 2] and keypoint_score [M, T, 17] in the pixels
    of the original frames (img_shape, height and width), and the video's declared fps."""

    keypoint: np.ndarray
    keypoint_score: np.ndarray
    img_shape: tuple[int, int]
    fps: float


class Cache:
    def __init__(self, folder: str | Path | None, settings: dict[str, Any]) -> None:
        self.folder = None if folder is None else Path(folder)
        self.key = settings_hash(settings)

    def path(self, video_hash: str) -> Path | None:
        if self.folder is None:
            return None
        return self.folder / video_hash[:2] / f"{video_hash}-{self.key}.npz"

    def get(self, video_hash: str) -> Poses | None:
        """The cached estimate, or None (also for an entry that cannot be read: it is redone)."""
        path = self.path(video_hash)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as npz:
                return Poses(
                    npz["keypoint"],
                    npz["keypoint_score"],
                    (int(npz["img_shape"][0]), int(npz["img_shape"][1])),
                    float(npz["fps"]),
                )
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None

    def put(self, video_hash: str, poses: Poses) -> None:
        path = self.path(video_hash)
        if path is None:
            return
        with atomic_open(path) as handle:
            np.savez(
                handle,
                keypoint=poses.keypoint,
                keypoint_score=poses.keypoint_score,
                img_shape=np.array(poses.img_shape),
                fps=np.array(poses.fps),
            )
