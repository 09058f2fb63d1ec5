"""Test helpers for the video path: small videos written with OpenCV, and a fake pose estimator
that finds a "person" in the bright pixels of a frame (fast, deterministic, no model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SHARED_VIDEOS = Path(__file__).resolve().parents[2] / "shared" / "videos"


def write_video(
    path: Path,
    frames: int = 12,
    size: tuple[int, int] = (64, 48),
    person: bool = True,
    fps: float = 25.0,
    shift: int = 0,
) -> Path:
    """An mp4 (mp4v) of a bright box moving right over a dark background (none: no person);
    `shift` moves the box, so that videos differ in content."""
    import cv2

    width, height = size
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for t in range(frames):
        frame = np.zeros((height, width, 3), np.uint8)
        if person:
            x = (shift + t * 2) % (width // 2)
            frame[height // 4 : 3 * height // 4, x + width // 8 : x + width // 4 + width // 8] = 255
        writer.write(frame)
    writer.release()
    return path


class BrightBox:
    """A stand-in estimator: the box of the frame's bright pixels is one person, its 17 joints
    spread over the box on a fixed pattern, each scored 0.9. Counts the frames it has seen."""

    frames_seen = 0

    def __init__(self, persons: int = 1, threshold: int = 128) -> None:
        self.persons = persons
        self.threshold = threshold  # an option (pose.options), like MediaPipe's confidences
        self.pattern = np.random.default_rng(0).uniform(0, 1, (17, 2)).astype(np.float32)

    def settings(self) -> dict[str, Any]:
        return {"estimator": "bright-box", "persons": self.persons, "threshold": self.threshold}

    def start(self) -> None:
        pass

    def detect(self, frame: np.ndarray) -> np.ndarray:
        BrightBox.frames_seen += 1
        ys, xs = np.nonzero(frame.max(-1) > self.threshold)
        if len(xs) == 0:
            return np.zeros((0, 17, 3), np.float32)
        lo = np.array([xs.min(), ys.min()], np.float32)
        hi = np.array([xs.max(), ys.max()], np.float32)
        joints = lo + self.pattern * (hi - lo)
        return np.concatenate([joints, np.full((17, 1), 0.9, np.float32)], 1)[None]

    def close(self) -> None:
        pass


class StopsAtThirdVideo(BrightBox):
    """BrightBox that, on starting its third video (counted in the file $VIDEO_FAKES_COUNTER,
    shared by the worker processes), is stopped as $VIDEO_FAKES_STOP says: `interrupt` sends
    SIGINT to the parent (Ctrl-C reaches it so) and waits, `die` ends the worker process."""

    def start(self) -> None:
        import os
        import signal
        import time

        counter = Path(os.environ["VIDEO_FAKES_COUNTER"])
        count = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(count))
        if count == 3:
            if os.environ["VIDEO_FAKES_STOP"] == "die":
                os._exit(9)
            os.kill(os.getppid(), signal.SIGINT)
            time.sleep(60)
