"""One video as a clip to classify: its poses (through the estimator, in a worker process, and
the per-video cache) with the fields a pickle's clip has."""

from __future__ import annotations

from pathlib import Path

from pipeline.core.errors import fail
from pipeline.files.clipfiles import Clip
from pipeline.video import decode
from pipeline.video.cache import Cache, Poses, default_folder
from pipeline.video.estimate import Settings, estimate_all, make_estimator


def is_video(path: str | Path) -> bool:
    return Path(path).suffix.lower() in decode.EXTENSIONS


def read(
    path: str | Path, settings: Settings | None = None, cache: bool = True
) -> tuple[Clip, Poses]:
    """The video's clip (named after the file) and its poses; a video where no one is found is
    a PipelineError naming it."""
    settings = settings or Settings()
    estimator = make_estimator(settings)
    store = Cache(default_folder() if cache else None, settings.key(estimator))
    estimator.close()
    (poses,), _ = estimate_all([str(path)], settings, store, workers=1)
    if poses.keypoint.shape[0] == 0:
        raise fail(str(path), "no person found in any frame")
    clip = Clip(Path(path).stem, poses.keypoint, poses.keypoint_score, poses.img_shape)
    return clip, poses
