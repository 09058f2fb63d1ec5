"""Benchmark: `python -m pipeline.pose`'s estimator (MediaPipe Pose, two passes a frame for two
persons, its default) on the real clips in ../shared/videos, in frames per second.

Rows: one process at 640x480 (the NTU clip scaled to it), the same on two processes (two
copies of the clip, one each: the issue's target is >= 20 frames/s on 2 cores at 640x480), and
one process at 1080p (the upscaled NTU clip, scaled down to pose's --max-side 1280 first).
Frames/s count decoding, estimation (two passes where a person is found) and tracking, from
the moment every process has its model loaded and warmed up on one frame: `pose` adds a few
seconds per worker for that. Peak RSS is the whole process tree's (workers included), and does
not grow with a video's length (frames are decoded one at a time). The load average before
each row is in its notes, with frames per CPU-second (the processes' own CPU time), which
other jobs on the machine change far less than frames per second of wall time.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import load_average
from bench.context import Context
from bench.measure import ROOT, measure
from bench.report import Check, Row

VIDEOS = ROOT.parent / "shared" / "videos"
TARGET = 20.0  # frames/s on 2 cores at 640x480 (issue 26)


def _estimate_one(path: str, barrier: Any = None) -> dict[str, Any]:
    """One video through the default estimator in this process, timed after the model is
    loaded and has seen one frame (and, with `barrier`, once every process is ready)."""
    from pipeline.video import decode
    from pipeline.video.estimate import Settings, estimate_video, make_estimator

    settings = Settings()
    estimator = make_estimator(settings)
    estimator.start()
    estimator.detect(next(decode.frames(path, 1, settings.max_side)))
    if barrier is not None:
        barrier.wait()
    start, cpu = time.time(), time.process_time()
    poses = estimate_video(path, estimator, settings)
    end, cpu = time.time(), time.process_time() - cpu
    estimator.close()
    return {
        "start": start,
        "end": end,
        "cpu": cpu,
        "frames": poses.keypoint.shape[1],
        "found": int((poses.keypoint_score.max(-1) > 0).any(0).sum()),
        "size": "{1}x{0}".format(*poses.img_shape),
    }


def child_pose(paths: list[str]) -> dict[str, Any]:
    """Each path in a process of its own (all at once), decoding, estimation and tracking
    timed from the moment every process has its model loaded to the last one done."""
    import multiprocessing
    import os

    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)  # mediapipe's log lines
    if len(paths) == 1:
        parts = [_estimate_one(paths[0])]
    else:
        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager, context.Pool(len(paths)) as pool:
            barrier = manager.Barrier(len(paths))
            parts = pool.starmap(_estimate_one, [(path, barrier) for path in paths])
    seconds = max(p["end"] for p in parts) - min(p["start"] for p in parts)
    return {
        "seconds": seconds,
        "cpu": sum(p["cpu"] for p in parts),
        "frames": sum(p["frames"] for p in parts),
        "found": sum(p["found"] for p in parts),
        "size": parts[0]["size"],
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
            got = measure("bench.pose:child_pose", {"paths": paths})
            result = got.result
            rate = result["frames"] / result["seconds"]
            per_cpu = result["frames"] / result["cpu"]
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
                        f"{result['found']}; {rate / workers:.1f} frames/s per process, "
                        f"{per_cpu:.1f} per CPU-second; load {before} before"
                    ),
                    extra={
                        "frames per CPU-second": per_cpu,
                        "frames/s per process": rate / workers,
                        "load before": float(before.split()[0]),
                    },
                )
            )
    return rows
