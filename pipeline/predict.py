"""Classify clips with a trained model: python -m pipeline.predict MODEL INPUT [options]

MODEL is a model file the train stage wrote (models/baseline.pt, models/improved.pt): it holds
all that predicting needs. INPUT is a PYSKL 2D pickle (every clip, or one split with --split),
or one clip as .npz or .json with keypoint [M, T, 17, 2], optional keypoint_score [M, T, 17]
and img_shape [height, width], or a video (.mp4, .avi, .mov, .mkv, .webm, ...): its poses come
from the estimator `python -m pipeline.pose` uses (MediaPipe Pose, the `video` extra), with its
defaults and its per-video cache. Train and predict through the same estimator and settings: a
model trained on HRNet keypoints (UCF101's) sees another keypoint style in MediaPipe's.

Options:
  --split NAME       only the clips of this split of the pickle (test1, say)
  --out FILE         write the predictions to FILE, .csv or .json (default: a table on stdout)
  --top K            how many of the most likely classes to list (default 3, or all the
                     model's classes when it has fewer)
  --device D         auto (CUDA when present), cpu or cuda (default auto)
  --views N          test views to average (default: eval.clips as evaluated, see below)
  --flip, --no-flip  average their mirror images too, or not (default: eval.flip, the same)
  --render FILE      a video INPUT only: draw the skeletons and the top K classes over its
                     frames, to FILE (.mp4 or .gif)
  --stride N, --max-side PIXELS, --persons N
                     a video INPUT only: as `python -m pipeline.pose` (defaults 1, 1280, 2)

One row per clip: frame_dir, the true class (`actual`, when the pickle's labels are classes of
the model), the predicted class, its probability (`confidence`) and the top K classes. Each clip
is preprocessed as the shards stage did for the model (the params are in the model file) and
averaged over the same test views and mirror images as the evaluate stage, through the same
code: the test split of the training pickle gets exactly the predictions of
metrics/<name>/predictions.csv. The views and flips are those evaluate used: for a model in a
project's models/ folder, the `eval` params of that project's params.yaml (which `dvc exp run -S
model.eval...` changes without retraining), else those stored in the model file (as trained).
Clips with no person, and clips whose label is not one of the model's classes, are left out (a
warning says how many).

From Python:

    from pipeline.predict import Predictor
    predictor = Predictor.load("models/improved.pt")  # device=, views=, flip= as the options
    probs = predictor.predict(keypoint, keypoint_score, img_shape)  # keypoint_score may be None
    # {class name: probability}, most likely first; predictor.classes lists the model's classes
    probs = predictor.predict_video("clip.mp4")  # the same, for a video file
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pipeline.core import params
from pipeline.core.errors import ArgumentParser, cli, fail
from pipeline.dataset import preprocess
from pipeline.files import clipfiles
from pipeline.files.atomic import atomic_path, prepare_outputs, write_json
from pipeline.files.clipfiles import Clip
from pipeline.learning import evaluated, inference, runtime
from pipeline.learning.checkpoint import Checkpoint
from pipeline.video import clip as video_clip
from pipeline.video import decode
from pipeline.video.cache import Poses
from pipeline.video.estimate import Settings
from pipeline.viz import overlay

BATCHES_PER_CHUNK = 8  # clips are preprocessed this many model batches at a time ...
CHUNK_MEMORY = 1 << 30  # ... or fewer, so that a chunk's input stays within this (one at least)
SHOWN = 20  # rows printed when there is no --out
TOP = 3  # classes listed per clip without --top (fewer when the model has fewer)
VIDEO = Settings()  # a video's poses, as `python -m pipeline.pose` makes them by default


def device_named(name: str | torch.device) -> torch.device:
    """`auto`, `cpu` or `cuda`, as the train stage resolves them."""
    name = str(name)
    if name not in ("auto", "cpu", "cuda"):
        raise fail("device", f"expected auto, cpu or cuda, found {name!r}")
    return runtime.resolve_device(name, "device")


class Predictor:
    """A trained model with what it needs to classify raw clips (see the module docstring)."""

    def __init__(
        self,
        ckpt: Checkpoint,
        device: str | torch.device = "auto",
        views: int | None = None,
        flip: bool | None = None,
        views_from: str | None = None,
    ) -> None:
        self.checkpoint = ckpt
        self.classes: list[str] = list(ckpt.classes)
        self.device = device_named(device)
        self.views = ckpt.config.eval.clips if views is None else views
        self.flip = ckpt.config.eval.flip if flip is None else flip
        self.stored_views = preprocess.views_for("test", ckpt.shards)
        if not 1 <= self.views <= self.stored_views:
            given = views_from or (
                "views" if views is not None else f"{ckpt.source}: its eval.clips"
            )
            raise fail(
                given,
                f"expected 1 to {self.stored_views} views (shards.test_views and "
                f"sampling as trained), found {self.views}",
            )
        self.model = ckpt.build_model().to(self.device).eval()

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: str | torch.device = "auto",
        views: int | None = None,
        flip: bool | None = None,
    ) -> Predictor:
        """The model file at `path`; views and flips not given are those it was evaluated with
        (`pipeline.learning.evaluated`)."""
        section = params.STAGE_SECTION.get(Path(path).stem, "model")
        ckpt, source = evaluated.load(Path(path), section)
        views_from = f"{source}: {section}.eval.clips" if source and views is None else None
        return cls(ckpt, device, views, flip, views_from)

    def preprocess(self, clip: Clip, out: np.ndarray | None = None) -> tuple[np.ndarray, int]:
        """A clip's test views as the shards store them: [views, frames, persons, 17, 3]."""
        ckpt = self.checkpoint
        return preprocess.clip_views(
            clip.keypoint,
            clip.keypoint_score,
            clip.img_hw,
            ckpt.shards,
            self.stored_views,
            ckpt.hidden_joint_indices,
            out,
        )

    def probabilities(self, clips: Sequence[Clip], progress: bool = False) -> np.ndarray:
        """[clips, classes]: preprocessed and predicted a few batches at a time, in batches of
        the size evaluate uses, so that each batch is the one evaluate ran."""
        ckpt = self.checkpoint
        size = ckpt.train.batch_size
        shape = (self.stored_views, ckpt.shards.frames, ckpt.persons, ckpt.joints, 3)
        batches = min(BATCHES_PER_CHUNK, CHUNK_MEMORY // (4 * math.prod(shape) * size))
        chunk = size * max(1, batches)  # whole batches: each is still the one evaluate ran
        out = []
        with tqdm(
            total=len(clips),
            unit="clip",
            disable=None if progress else True,
            file=sys.stderr,
            leave=False,
        ) as bar:
            for start in range(0, len(clips), chunk):
                part = clips[start : start + chunk]
                x = np.zeros((len(part), *shape), np.float32)
                lengths = [self.preprocess(clip, x[k])[1] for k, clip in enumerate(part)]
                out.append(
                    inference.predict(
                        self.model,
                        inference.ClipArray(x, lengths),
                        ckpt.config,
                        self.device,
                        size,
                        self.views,
                        self.flip,
                        ckpt.train.amp,
                    )
                )
                bar.update(len(part))
        if not out:
            return np.zeros((0, len(self.classes)), np.float32)
        probs = np.concatenate(out)
        if not np.isfinite(probs).all():  # finite weights can still overflow on odd inputs
            raise fail(ckpt.source, "the model's outputs are not finite on these clips")
        return probs

    def predict(
        self, keypoint: np.ndarray, keypoint_score: np.ndarray | None, img_shape: Sequence[int]
    ) -> dict[str, float]:
        """One clip's class probabilities, most likely first. The clip is checked as a pickle's
        clip is (a PipelineError names what is wrong)."""
        fields = {"keypoint": keypoint, "keypoint_score": keypoint_score, "img_shape": img_shape}
        clip = clipfiles.from_fields(fields, "clip", "Predictor.predict")
        probs = self.probabilities([clip])[0]
        return {self.classes[i]: float(probs[i]) for i in np.argsort(-probs, kind="stable")}

    def predict_video(self, path: str | Path, settings: Settings | None = None) -> dict[str, float]:
        """A video's class probabilities, most likely first (poses as `pipeline.pose` makes
        them, with `settings` or its defaults)."""
        clip, _ = video_clip.read(path, settings)
        return self.predict(clip.keypoint, clip.keypoint_score, clip.img_hw)

    def table(self, clips: Sequence[Clip], probs: np.ndarray, top: int) -> pd.DataFrame:
        """The predictions' rows; with the true class when every clip's label is the model's."""
        actual = None
        if clips and all(clip.label in self.checkpoint.labels for clip in clips):
            names = dict(zip(self.checkpoint.labels, self.classes, strict=True))
            actual = [names[clip.label] for clip in clips]
        return inference.table([c.frame_dir for c in clips], probs, self.classes, top, actual)


def known_clips(clips: list[Clip], ckpt: Checkpoint, source: str) -> list[Clip]:
    """The clips to predict: where a pickle labels every clip, those of the model's labels."""
    if not clips or any(clip.label is None for clip in clips):
        return clips
    labels = set(ckpt.labels)
    known = [clip for clip in clips if clip.label in labels]
    other = sorted({clip.label for clip in clips} - set(ckpt.labels))
    if not known:
        raise fail(
            source,
            f"none of its {len(clips)} clips has a label the model was trained on "
            f"(its labels: {_few(other)}; the model's: {_few(ckpt.labels)})",
        )
    if other:
        warn(
            f"{source}: left out {_clips(len(clips) - len(known))} of labels the model was "
            f"not trained on ({_few(other)})"
        )
    return known


def _clips(count: int) -> str:
    return f"{count} clip{'' if count == 1 else 's'}"


def _few(values: Sequence[Any], limit: int = 8) -> str:
    return ", ".join(map(str, values[:limit])) + (", ..." if len(values) > limit else "")


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def parse(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser("pipeline.predict")
    parser.add_argument("model", type=Path)
    parser.add_argument("input", type=Path)
    parser.add_argument("--split")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--top", type=int)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--views", type=int)
    parser.add_argument("--flip", action=argparse.BooleanOptionalAction)
    parser.add_argument("--render", type=Path)
    parser.add_argument("--stride", type=int, default=VIDEO.stride)
    parser.add_argument("--max-side", type=int, default=VIDEO.max_side)
    parser.add_argument("--persons", type=int, default=VIDEO.persons)
    args = parser.parse_args(argv)
    video = video_clip.is_video(args.input)
    given = [
        option
        for option, value in (
            ("--render", args.render is not None),
            ("--stride", args.stride != VIDEO.stride),
            ("--max-side", args.max_side != VIDEO.max_side),
            ("--persons", args.persons != VIDEO.persons),
        )
        if value
    ]
    if given and not video:
        parser.error(f"{given[0]}: only for a video INPUT, found {args.input}")
    for option, value, least in (
        ("--stride", args.stride, 1),
        ("--max-side", args.max_side, 32),
        ("--persons", args.persons, 1),
    ):
        if value < least:
            parser.error(f"{option}: expected an integer >= {least}, found {value}")
    if args.render is not None and args.render.suffix.lower() not in overlay.FORMATS:
        parser.error(f"--render: expected a file name ending in .mp4 or .gif, found {args.render}")
    return args


def write(table: pd.DataFrame, out: Path) -> None:
    """CSV, or JSON records with the top classes as a list."""
    if out.suffix.lower() == ".csv":
        with atomic_path(out) as tmp:
            table.to_csv(tmp, index=False)
        return
    top = table.columns[-1]
    records = table.astype(object).to_dict(orient="records")
    for row in records:
        row[top] = row[top].split("|")
    write_json(out, records)


def render(
    out: Path,
    video: Path,
    poses: Poses,
    classes: list[str],
    probs: np.ndarray,
    args: argparse.Namespace,
) -> int:
    """The video's frames with its skeletons and top classes, to `out`."""
    ranked = {classes[i]: float(probs[i]) for i in np.argsort(-probs, kind="stable")}
    frames = decode.frames(video, args.stride, args.max_side)
    fps = poses.fps / args.stride if poses.fps else 0.0
    # the poses are in the video's pixels, the frames decoded at most max_side
    height, width = poses.img_shape
    scaled_h, scaled_w = decode.scaled_size(height, width, args.max_side)
    keypoint = poses.keypoint * np.array([scaled_w / width, scaled_h / height], np.float32)
    lines = overlay.top_lines(ranked, args.top)
    return overlay.write(out, frames, keypoint, poses.keypoint_score, lines, fps)


@cli
def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.out is not None:
        if args.out.suffix.lower() not in (".csv", ".json"):
            raise fail(str(args.out), "--out: expected a file name ending in .csv or .json")
        for given in (args.model, args.input):
            if args.out.resolve() == given.resolve():
                raise fail(str(args.out), f"--out is {given}, an input: choose another name")
        prepare_outputs(files=[args.out])
    if args.render is not None:
        for given in (args.model, args.input):
            if args.render.resolve() == given.resolve():
                raise fail(str(args.render), f"--render is {given}, an input: choose another name")
        prepare_outputs(files=[args.render])
    predictor = Predictor.load(args.model, args.device, args.views, args.flip)
    ckpt = predictor.checkpoint
    if args.top is None:  # a model of two classes (yours, say) lists both
        args.top = min(TOP, len(ckpt.classes))
    if not 1 <= args.top <= len(ckpt.classes):
        raise fail(
            "--top",
            f"expected an integer in [1, {len(ckpt.classes)}] (the model's "
            f"classes), found {args.top}",
        )
    poses = None
    if video_clip.is_video(args.input):
        if args.split is not None:
            raise fail(str(args.input), f"--split {args.split}: only a pickle has splits")
        settings = Settings(persons=args.persons, stride=args.stride, max_side=args.max_side)
        clip, poses = video_clip.read(args.input, settings)
        clips, empty = [clip], []
    else:
        clips, empty = clipfiles.read(args.input, args.split)
    if empty:
        warn(f"{args.input}: left out {_clips(len(empty))} with no person (first {empty[0]!r})")
    clips = known_clips(clips, ckpt, str(args.input))
    if not clips:
        raise fail(str(args.input), "no clip to predict")
    runtime.setup(dataclasses.replace(ckpt.train, device=predictor.device.type), where=ckpt.source)
    probs = predictor.probabilities(clips, progress=True)
    table = predictor.table(clips, probs, args.top)
    drawn = ""
    if args.render is not None and poses is not None:
        count = render(args.render, args.input, poses, predictor.classes, probs[0], args)
        drawn = f"\npredict: drew {count} frames -> {args.render}"
    if args.out is not None:
        write(table, args.out)
        print(f"predict: {_clips(len(table))} -> {args.out}{drawn}")
        return
    shown = table.head(SHOWN).to_string(index=False)
    more = f"\n... {_clips(len(table) - SHOWN).replace(' ', ' more ')} (--out FILE writes them all)"
    print(shown + (more if len(table) > SHOWN else "") + drawn)


if __name__ == "__main__":
    main()
