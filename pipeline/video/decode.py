"""Reading a video's frames with OpenCV (the opencv-contrib build mediapipe installs).

Frames come out one at a time (memory does not grow with the video's length), every `stride`-th
one, in RGB, scaled down so that their longer side is at most `max_side` pixels (an 8K frame
is never handed to the estimator whole). Bad files are one line each: not a video OpenCV can
open, no frame decodable, or a file that ends before the frames its header declares.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import fail

# Extensions a videos folder is searched for (a CSV may name a video of any extension).
EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")
# A file is truncated when it decodes fewer frames than its header declares, by more than this
# share (containers' frame counts can be estimates, off by a frame or two).
TRUNCATED = 0.02


def _cv2():  # noqa: ANN202 (cv2 has no stubs)
    try:
        import cv2
    except ImportError as exc:
        raise fail(
            "opencv",
            f"cannot decode videos ({exc}); install the video extra: "
            f'`pip install -e ".[video]"` (make installs it)',
        ) from None
    return cv2


@dataclass(frozen=True)
class VideoInfo:
    path: str
    height: int  # of the frames as stored
    width: int
    fps: float  # as the container declares it (0 when it does not)
    declared_frames: int  # as the container declares it (0 when it does not)


def probe(path: str | Path) -> VideoInfo:
    """What the file's header says; a missing file, a folder or a file OpenCV cannot open as a
    video is one PipelineError line."""
    path = Path(path)
    if not path.exists():
        raise fail(str(path), "file not found")
    if path.is_dir():
        raise fail(str(path), "expected a video file, found a folder")
    if path.stat().st_size == 0:
        raise fail(str(path), "expected a video, found an empty file (0 bytes)")
    cv2 = _cv2()
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise fail(
                str(path),
                "not a video OpenCV can read (unknown format or codec, or a truncated file)",
            )
        return VideoInfo(
            str(path),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)),
            max(0.0, float(capture.get(cv2.CAP_PROP_FPS) or 0.0)),
            max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)),
        )
    finally:
        capture.release()


def scaled_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """(height, width) with the longer side at most max_side, the aspect ratio kept."""
    if not max_side or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def frames(path: str | Path, stride: int = 1, max_side: int | None = None) -> Iterator[np.ndarray]:
    """Every `stride`-th frame of the video, RGB uint8, at most `max_side` on its longer side.

    Raises a PipelineError when no frame decodes, or (after the last frame) when the file ended
    early: fewer frames than its header declares."""
    info = probe(path)
    cv2 = _cv2()
    capture = cv2.VideoCapture(str(path))
    decoded = 0
    try:
        while True:
            if decoded % stride == 0:
                ok, frame = capture.read()
                if not ok:
                    break
                height, width = frame.shape[:2]
                size = scaled_size(height, width, max_side)
                if size != (height, width):
                    frame = cv2.resize(frame, size[::-1], interpolation=cv2.INTER_AREA)
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            elif not capture.grab():  # skipped frames are not converted
                break
            decoded += 1
    finally:
        capture.release()
    if decoded == 0:
        raise fail(str(path), "no frame could be decoded (a truncated file or an unreadable codec)")
    if info.declared_frames and decoded < info.declared_frames * (1 - TRUNCATED) - 1:
        raise fail(
            str(path),
            f"truncated: its header declares {info.declared_frames} frames, "
            f"only {decoded} could be decoded",
        )
