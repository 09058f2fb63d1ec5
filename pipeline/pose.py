"""Your own videos -> a PYSKL 2D pickle: python -m pipeline.pose VIDEOS --out FILE [options]

VIDEOS is a folder of `<class>/<clip>.<ext>` videos (.mp4, .avi, .mov, .mkv, .webm, ...), or a
CSV file of `video,label[,split][,group]` rows (paths relative to the CSV). Every video goes
through a pose estimator (by default MediaPipe Pose: offline, on the CPU, installed by the
`video` extra) and becomes one clip of the pickle, in exactly the format the extract stage
reads: COCO-17 `keypoint` [M, T, 17, 2] in pixels, `keypoint_score` in [0, 1], `img_shape`,
`original_shape`, `total_frames`, `label`, and `frame_dir` = `<class>__<group>__<clip>`; classes
get labels 0, 1, ... in sorted order. Run the pipeline on it with `data.class_pattern:
'^(.+?)__'`, `data.group_pattern: '__(.+?)__'`, `data.classes: all`.

In the pipeline this is the `pose@<name>` stage of dvc.yaml, one per folder that params.yaml's
`pose.videos` names: `--params` takes the settings below from the `pose` section, and the
pickle is the stage's output, `data/poses/<name>.pkl` (the folder is `dvc add`-ed data, only
read). Outside it, the options below set them.

Splits come from the CSV's `split` column, or are made by group (`train` / `test`): a group is
the CSV's `group`, or what --group-pattern finds in the file name, or else the video itself;
whole groups go to one side, so a person filmed in several clips is never in both.

Options:
  --out FILE            the pickle to write (required); written whole or not at all
  --params              --persons to --workers and --estimator from params.yaml's `pose`
                        section instead, with the estimator's own options (pose.options):
                        the pose@<name> stage runs it so; none of those may be given too
  --persons N           people tracked per video (default 2; shards.persons keeps 1 or 2)
  --stride N            estimate every N-th frame (default 1)
  --max-side PIXELS     scale frames down to this longer side first (default 1280)
  --group-pattern RE    a regex whose group 1, searched in a file name, is its group
  --test-fraction F     share of each class's videos put in `test` by group (default 0.25)
  --seed N              which groups go to test (default 0)
  --workers N           processes, each with its own estimator (default 0: one per core)
  --cache DIR           the per-video cache (default ~/.cache/skeleton-pose): videos already
                        estimated with the same settings are not estimated again
  --no-cache            neither read nor write the cache
  --estimator MOD:NAME  another estimator (see pipeline/video/estimator.py), called with
                        persons=N (default pipeline.video.mediapipe_pose:MediaPipePose)
                        and, with --params, pose.options

A video in which no one is found is kept as a clip with no person (a warning counts them; the
extract stage leaves such clips out); if no video has anyone, nothing is written. Frame rates
may differ between videos: clips are sequences of frames, so the model sees a 60 fps video's
motion as twice as slow as a 30 fps one's (a warning says so); --stride evens them out.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

from pipeline.core import params
from pipeline.core.errors import ArgumentParser, cli, fail
from pipeline.files.atomic import atomic_open, prepare_outputs
from pipeline.video import dataset, inputs
from pipeline.video.cache import Cache, default_folder
from pipeline.video.estimate import Settings, estimate_all, make_estimator

PICKLE_PROTOCOL = 4
DEFAULTS = Settings()
# The options params.yaml's pose section also holds, and their defaults without --params.
OPTIONS = {
    "persons": DEFAULTS.persons,
    "stride": DEFAULTS.stride,
    "max_side": DEFAULTS.max_side,
    "group_pattern": None,
    "test_fraction": 0.25,
    "seed": 0,
    "workers": 0,
    "estimator": DEFAULTS.estimator,
}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


_positive.__name__ = "positive integer"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser("pipeline.pose")
    parser.add_argument("videos", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--params", action="store_true")
    parser.add_argument("--persons", type=_positive)
    parser.add_argument("--stride", type=_positive)
    parser.add_argument("--max-side", type=_positive)
    parser.add_argument("--group-pattern")
    parser.add_argument("--test-fraction", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--estimator")
    args = parser.parse_args(argv)
    given = [name for name in OPTIONS if getattr(args, name) is not None]
    if args.params and given:
        parser.error(f"--{given[0].replace('_', '-')}: not with --params (params.yaml sets it)")
    args.options = {}
    if args.params:
        section = params.load("pose")["pose"]
        vars(args).update({name: getattr(section, name) for name in OPTIONS})
        args.options = dict(section.options)
    for name, default in OPTIONS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if not 0.0 <= args.test_fraction < 1.0:
        parser.error(f"--test-fraction: expected a number in [0, 1), found {args.test_fraction}")
    if args.workers < 0:
        parser.error(f"--workers: expected 0 (one per core) or more, found {args.workers}")
    if args.max_side < 32:
        parser.error(f"--max-side: expected at least 32 pixels, found {args.max_side}")
    return args


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


@cli
def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    if args.out.suffix.lower() != ".pkl":
        raise fail(str(args.out), "--out: expected a file name ending in .pkl")
    videos = inputs.read(args.videos, args.group_pattern)
    if any(args.out.resolve() == v.path.resolve() for v in videos):
        raise fail(str(args.out), "--out is one of the videos: choose another name")
    prepare_outputs(files=[args.out])
    settings = Settings(args.estimator, args.persons, args.stride, args.max_side, args.options)
    estimator = make_estimator(settings)
    folder = None if args.no_cache else (args.cache or default_folder())
    cache = Cache(folder, settings.key(estimator))
    estimator.close()
    poses, estimated = estimate_all([str(v.path) for v in videos], settings, cache, args.workers)
    empty = [v.frame_dir for v, p in zip(videos, poses, strict=True) if p.keypoint.shape[0] == 0]
    if len(empty) == len(videos):
        raise fail(str(args.videos), f"no person found in any of its {len(videos)} videos")
    if empty:
        warn(f"no person found in {len(empty)} of {len(videos)} videos (first {empty[0]!r})")
    rates = sorted({round(p.fps, 2) for p in poses if p.fps})
    if len(rates) > 1:
        warn(f"frame rates differ ({rates[0]:g} to {rates[-1]:g} fps): see --help")
    data = dataset.dataset(videos, poses, args.test_fraction, args.seed)
    with atomic_open(args.out) as handle:
        pickle.dump(data, handle, protocol=PICKLE_PROTOCOL)
    names = dataset.class_names(videos)
    sizes = ", ".join(f"{k} {len(v)}" for k, v in data["split"].items())
    print(
        f"pose: {len(videos)} videos ({estimated} estimated, {len(videos) - estimated} cached), "
        f"{len(names)} classes, splits: {sizes} -> {args.out}"
    )


if __name__ == "__main__":
    main()
