"""Animated GIFs of skeleton clips with their true class and the model's prediction.

Usage: python -m pipeline.render INPUT (--clips NAME [NAME ...] | --errors N) --out DIR
           [--predictions FILE] [--frames N] [--fps F] [--width PIXELS]

INPUT is a PYSKL 2D pickle (read through the restricted unpickler) or the subset folder the
extract stage writes (data/subset). Each clip becomes DIR/<frame_dir>.gif: every person's
COCO-17 skeleton (left side blue, right side orange) on the clip's image frame (img_shape),
the true class, the predicted class with its confidence (green when right, red when wrong)
and a frame counter.

  --clips NAME ...    the clips to draw, by frame_dir
  --errors N          the N most confident errors of the predictions
  --predictions FILE  a CSV of frame_dir, predicted, confidence (and actual); by default
                      metrics/improved/predictions.csv, as evaluate@improved writes it, when
                      it exists
  --frames N          at most N frames per clip, evenly spaced (default: every frame)
  --fps F             frames per second, 0.01 to 1000 (default 25, UCF101's)
  --width PIXELS      image width (default 320); the height follows the clip's img_shape

Each GIF is written whole or not at all; nothing else in DIR is touched.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import ArgumentParser, cli, fail
from pipeline.core.paths import METRICS_DIR
from pipeline.files import clipfiles
from pipeline.files.atomic import prepare_outputs
from pipeline.viz.drawing import draw_clip, save_gif
from pipeline.viz.showcase import (
    Clip,
    caption,
    file_name,
    missing_clip,
    most_confident_errors,
    read_predictions,
    subset_clips,
)

DEFAULT_PREDICTIONS = METRICS_DIR / "improved" / "predictions.csv"
# A GIF stores each frame's duration in hundredths of a second, in 16 bits (at most 655 s).
MIN_FPS, MAX_FPS = 0.01, 1000.0


def _positive(kind: type[int] | type[float]) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = kind(text)
        if not value > 0:
            raise ValueError(text)
        return value

    parse.__name__ = f"positive {kind.__name__}"  # argparse names the type in its message
    return parse


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser("pipeline.render")
    parser.add_argument("input")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--clips", nargs="+")
    which.add_argument("--errors", type=_positive(int))
    parser.add_argument("--out", required=True)
    parser.add_argument("--predictions")
    parser.add_argument("--frames", type=_positive(int))
    parser.add_argument("--fps", type=_positive(float), default=25.0)
    parser.add_argument("--width", type=_positive(int), default=320)
    args = parser.parse_args(argv)
    if not 64 <= args.width <= 4096:
        parser.error(f"--width: expected 64..4096 pixels, found {args.width}")
    if not MIN_FPS <= args.fps <= MAX_FPS:  # a GIF frame lasts 0.01 s to 655 s
        parser.error(f"--fps: expected {MIN_FPS} to {MAX_FPS} frames per second, found {args.fps}")
    return args


def read_clips(source: Path, names: list[str], table: pd.DataFrame | None) -> list[Clip]:
    """The named clips of a pickle or a subset folder, in the order named."""
    if source.is_dir():
        if not (source / "index.csv").is_file():
            raise fail(
                str(source),
                "expected a PYSKL pickle or a subset folder as extract "
                "writes it (data/subset, with index.csv)",
            )
        return subset_clips(source, names)
    return _from_pickle(source, names, table)


def _from_pickle(path: Path, names: list[str], table: pd.DataFrame | None) -> list[Clip]:
    held = {clip.frame_dir: clip for clip in clipfiles.read(path)[0]}
    # A pickle holds integer labels; the predictions name the classes of the clips they list,
    # and so of their labels.
    class_of: dict[int, str] = {}
    if table is not None and "actual" in table.columns:
        for frame_dir, actual in zip(table["frame_dir"], table["actual"], strict=True):
            if frame_dir in held and held[frame_dir].label is not None:
                class_of.setdefault(held[frame_dir].label, actual)
    clips = []
    for name in names:
        if name not in held:
            raise missing_clip(path, name, list(held))
        clip = held[name]
        actual = None if clip.label is None else class_of.get(clip.label, f"class_{clip.label}")
        clips.append(
            Clip(
                name,
                np.asarray(clip.keypoint, np.float32),
                np.asarray(clip.keypoint_score, np.float32),
                clip.img_hw,
                actual,
            )
        )
    return clips


def _predictions(args: argparse.Namespace) -> pd.DataFrame | None:
    if args.predictions is not None:
        return read_predictions(args.predictions)
    return read_predictions(DEFAULT_PREDICTIONS) if DEFAULT_PREDICTIONS.is_file() else None


def chosen_clips(args: argparse.Namespace, table: pd.DataFrame | None) -> list[str]:
    if args.clips is not None:
        return list(dict.fromkeys(args.clips))
    where = args.predictions or str(DEFAULT_PREDICTIONS)
    if table is None:
        raise fail(
            where,
            "--errors needs predictions: run `dvc repro` (evaluate writes them) "
            "or name a predictions CSV with --predictions",
        )
    if "actual" not in table.columns:
        raise fail(where, "no column 'actual': --errors needs each clip's true class")
    return list(most_confident_errors(table, args.errors)["frame_dir"])


@cli
def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    table = _predictions(args)
    names = chosen_clips(args, table)
    if not names:
        where = args.predictions or DEFAULT_PREDICTIONS
        print(f"render: no errors among the predictions of {where}: nothing to draw")
        return
    out = Path(args.out)
    targets = [out / file_name(name) for name in names]
    prepare_outputs(files=targets)  # an unwritable --out is one line now, before any work
    for clip, target in zip(read_clips(Path(args.input), names, table), targets, strict=True):
        frames = draw_clip(
            clip.keypoint,
            clip.score,
            clip.img_shape,
            caption(clip, table),
            width=args.width,
            frames=args.frames,
            source=f"{args.input}: clip {clip.name!r}",
        )
        save_gif(frames, target, args.fps)
        print(f"render: {target} ({len(frames)} frames)")


if __name__ == "__main__":
    main()
