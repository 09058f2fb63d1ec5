"""Benchmark: `python -m pipeline.pose`'s estimator (MediaPipe Pose, two passes a frame for two
persons, its default) on the real clips in ../shared/videos, in frames per second.

Rows: one process at 640x480 (the NTU clip scaled to it), the same on two processes (two
copies of the clip, one each: the issue's target is >= 20 frames/s on 2 cores at 640x480), and
one process at 1080p (the upscaled NTU clip, scaled down to pose's --max-side 1280 first).
Frames/s count decoding, estimation and tracking, not interpreter start or model loading; peak
RSS is the whole process tree's (workers included), and does not grow with a video's length
(frames are decoded one at a time). The load average is printed with the table.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, Check, Context, Row, load_average, measure

VIDEOS = ROOT.parent / "shared" / "videos"
TARGET = 20.0  # frames/s on 2 cores at 640x480 (issue 26)


def child_pose(paths: list[str], workers: int) -> dict[str, Any]:
    """Estimate `paths` (no cache) in `workers` processes, after one warm-up frame."""
    from pipeline.video import decode
    from pipeline.video.cache import Cache
    from pipeline.video.estimate import Settings, estimate_all

    settings = Settings()
    # the workers start (and load their model) inside the timing: a pool lives for one run
    start = time.perf_counter()
    poses, _ = estimate_all(paths, settings, Cache(None, {}), workers=workers, progress=False)
    seconds = time.perf_counter() - start
    frames = sum(p.keypoint.shape[1] for p in poses)
    found = sum(int((p.keypoint_score.max(-1) > 0).any(0).sum()) for p in poses)
    shape = decode.probe(paths[0])
    return {
        "seconds": seconds,
        "frames": frames,
        "found": found,
        "size": f"{shape.width}x{shape.height}",
    }


def scaled_copy(source: Path, dest: Path, size: tuple[int, int], copies: int = 1) -> None:
    import cv2

    capture = cv2.VideoCapture(str(source))
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.resize(frame, size, interpolation=cv2.INTER_AREA))
    for k in range(copies):
        name = dest.with_name(f"{dest.stem}{k}{dest.suffix}")
        writer = cv2.VideoWriter(str(name), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        for frame in frames:
            writer.write(frame)
        writer.release()


def run(ctx: Context) -> list[Row]:
    if not VIDEOS.is_dir():
        return [Row(name="pose", skipped=f"no real videos at {VIDEOS}")]
    try:
        import cv2  # noqa: F401
        import mediapipe  # noqa: F401
    except ImportError:
        return [Row(name="pose", skipped="the video extra is not installed")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-pose-") as tmp:
        vga = Path(tmp) / "ntu_640x480.mp4"
        scaled_copy(VIDEOS / "ntu_hugging.avi", vga, (640, 480), copies=2)
        copies = [str(vga.with_name(f"ntu_640x480{k}.mp4")) for k in range(2)]
        cases = [
            ("pose 640x480, 1 process", [copies[0]], 1),
            ("pose 640x480, 2 processes", copies, 2),
            ("pose 1080p, 1 process", [str(VIDEOS / "ntu_hugging_1080p.mp4")], 1),
        ]
        if ctx.quick:
            cases = cases[:1]
        for name, paths, workers in cases:
            before = load_average()
            got = measure("bench.pose:child_pose", {"paths": paths, "workers": workers})
            result = got.result
            rate = result["frames"] / result["seconds"]
            checks = []
            if workers == 2:
                checks.append(Check("frames/s", rate, TARGET, at_most=False))
            rows.append(
                Row(
                    name=name,
                    wall_s=result["seconds"],
                    rss_bytes=got.rss_bytes,
                    throughput=rate,
                    unit="frames/s",
                    checks=checks,
                    note=(
                        f"{result['size']}, {result['frames']} frames, a person in "
                        f"{result['found']}; {rate / workers:.1f} frames/s per process; "
                        f"load {before} before"
                    ),
                )
            )
    return rows
