"""Videos to poses: decode, estimate, track, in one process per core, through the cache.

`estimate_video` is one video (frames in, keypoint [M, T, 17, 2] and scores out, in the pixels
of the original frames); `estimate_all` runs many, one worker process per core (each with its
own estimator), showing one progress bar in frames with frames/s and the time left.
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import queue
import sys
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from pipeline.core.errors import PipelineError, fail
from pipeline.video import decode, tracking
from pipeline.video.cache import Cache, Poses, content_hash
from pipeline.video.estimator import Estimator

DEFAULT_ESTIMATOR = "pipeline.video.mediapipe_pose:MediaPipePose"
TICK = 8  # frames between progress reports from a worker


@dataclass(frozen=True)
class Settings:
    """Everything that changes a video's poses (with the estimator's own settings)."""

    estimator: str = DEFAULT_ESTIMATOR  # module:callable, called with persons=
    persons: int = 2
    stride: int = 1  # every stride-th frame
    max_side: int | None = 1280  # frames are scaled down to this longer side first
    # the estimator's own keyword arguments (params.yaml's pose.options); its `settings()`
    # names them, so the cache key holds them
    options: Mapping[str, Any] = field(default_factory=dict)

    def key(self, estimator: Estimator) -> dict[str, Any]:
        return {**estimator.settings(), "stride": self.stride, "max_side": self.max_side}


def make_estimator(settings: Settings) -> Estimator:
    """The estimator `settings.estimator` names (`module:callable`), built with persons= and
    the options."""
    module, _, name = settings.estimator.partition(":")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise fail(
            "--estimator",
            f"expected module:callable naming a pose estimator, found "
            f"{settings.estimator!r} ({exc})",
        ) from None
    try:
        return factory(persons=settings.persons, **settings.options)
    except TypeError as exc:  # an option it does not take
        raise fail(
            "pose.options",
            f"expected settings that {settings.estimator} takes, found "
            f"{dict(settings.options)} ({exc})",
        ) from None


def estimate_video(
    path: str,
    estimator: Estimator,
    settings: Settings,
    progress: Callable[[int], None] = lambda n: None,
) -> Poses:
    """One video's poses, in the pixels of its original frames."""
    info = decode.probe(path)
    estimator.start()
    people = []
    shape = None
    pending = 0
    for frame in decode.frames(path, settings.stride, settings.max_side):
        shape = frame.shape[:2]
        people.append(np.asarray(estimator.detect(frame), np.float32).reshape(-1, 17, 3))
        pending += 1
        if pending == TICK:
            progress(pending)
            pending = 0
    progress(pending)
    keypoint, score = tracking.track(people, settings.persons)
    if shape is not None and shape != (info.height, info.width):
        keypoint *= np.array([info.width / shape[1], info.height / shape[0]], np.float32)
    return Poses(keypoint, score, (info.height, info.width), info.fps)


def expected_frames(path: str, stride: int) -> int:
    """Frames the progress bar expects of a video (its header's count, strided)."""
    return -(-decode.probe(path).declared_frames // stride)


# --- worker processes: each builds its estimator once and reports progress on a queue ---

_worker: dict[str, Any] = {}


def _init(settings: Settings, cache: Cache, ticks: Any) -> None:
    # The estimator's libraries log to stderr from their own threads (mediapipe: TensorFlow
    # Lite and absl lines on every start); a worker's errors come back as values instead.
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    _worker.update(estimator=make_estimator(settings), settings=settings, cache=cache, ticks=ticks)


def _run(task: tuple[int, str, str]) -> tuple[int, Poses | str]:
    index, path, digest = task
    try:
        poses = estimate_video(
            path, _worker["estimator"], _worker["settings"], lambda n: _worker["ticks"].put(n)
        )
    except PipelineError as exc:
        return index, str(exc)
    _worker["cache"].put(digest, poses)
    return index, poses


def workers_for(workers: int, videos: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(workers or cores or 1, videos))


def estimate_all(
    paths: Sequence[str],
    settings: Settings,
    cache: Cache,
    workers: int = 0,
    estimator: Estimator | None = None,
    progress: bool = True,
) -> tuple[list[Poses], int]:
    """Every video's poses, in order, and how many were estimated (the rest came from the
    cache). A bad video stops the run with its PipelineError, after the videos already done
    are cached. The estimator runs in `workers` processes (0: one per core), or, when
    `estimator` (an object) is given, in this process (tests, the Python API)."""
    digests = [content_hash(path) for path in paths]
    found: list[Poses | None] = [cache.get(d) for d in digests]
    todo = [i for i, poses in enumerate(found) if poses is None]
    total = sum(expected_frames(paths[i], settings.stride) for i in todo)
    bar = tqdm(
        total=total,
        unit="frame",
        desc=f"pose: {len(todo)} video{'s' * (len(todo) != 1)}",
        disable=None if progress else True,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    with bar:
        if estimator is not None:
            for i in todo:
                found[i] = estimate_video(paths[i], estimator, settings, bar.update)
                cache.put(digests[i], found[i])
        elif todo:
            _pool(paths, digests, todo, found, settings, cache, workers, bar)
    return [poses for poses in found if poses is not None], len(todo)


def _pool(
    paths: Sequence[str],
    digests: Sequence[str],
    todo: list[int],
    found: list[Poses | None],
    settings: Settings,
    cache: Cache,
    workers: int,
    bar: tqdm,
) -> None:
    context = multiprocessing.get_context("spawn")  # mediapipe's threads do not survive fork
    ticks = context.Queue()
    count = workers_for(workers, len(todo))
    # ProcessPoolExecutor, not Pool: a worker that dies (killed, out of memory, a crash in
    # the estimator's native code) breaks the pool, where Pool would wait for it forever.
    pool = ProcessPoolExecutor(count, context, _init, (settings, cache, ticks))
    try:
        # longest first, so that one long video does not start last and run alone
        order = sorted(todo, key=lambda i: -os.path.getsize(paths[i]))
        pending = {pool.submit(_run, (i, paths[i], digests[i])) for i in order}
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in done:
                try:
                    index, poses = future.result()
                except BrokenProcessPool:
                    raise fail(
                        "pose",
                        "a worker process died (out of memory, or killed); the videos done "
                        "so far are cached: run again to go on",
                    ) from None
                if isinstance(poses, str):
                    raise PipelineError(poses)
                found[index] = poses
            while True:
                try:
                    bar.update(ticks.get_nowait())
                except queue.Empty:
                    break
    except BaseException:
        # Ctrl-C or a bad video: stop the other workers now, not after their current video
        # (ProcessPoolExecutor has no public way before Python 3.14).
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
