"""A synthetic stand-in for PYSKL's `ucf101_2d.pkl`, in exactly its format.

It serves the offline demo, the tests and the benchmarks; it is no basis for accuracy claims.
Every clip is drawn from a 2D kinematic model of the COCO-17 skeleton (`pipeline.core.skeleton`):

- each class has a fixed motion recipe (seeded by its label only, so a class moves the same way
  under every seed): periodic limb and trunk angle oscillations with a class frequency,
  amplitudes, harmonics and left/right phase couplings, plus optional locomotion, bouncing or
  near stillness. Class postures barely differ and every clip starts at a random phase, so one
  frame says little about the class; the temporal pattern says a lot.
- each (class, group) has its own camera placement, actor size, proportions, viewing angle,
  tempo and detector quality, shared by all its clips, so group-held-out validation is harder
  than a random split, as on the real data.
- each clip adds its own jitter, drift, detector noise, dropped joints (score < 0.1, coordinates
  zeroed or thrown off like a failed detection) and background people (lower scores, little
  motion, often present in only part of the clip); about 1% of clips have no person at all.

Random streams are keyed by (seed, label, group, clip), so a clip does not change when other
classes are added or filtered out, and the same arguments give a byte-identical pickle.
"""

from __future__ import annotations

import csv
import math
import pickle
from collections.abc import Iterable
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core import skeleton
from pipeline.core.errors import fail
from pipeline.dataset import ucf101
from pipeline.dataset.synthetic_motion import (
    HEIGHT,
    IMG_SHAPE,
    NUM_ANGLES,
    ROOT_X,
    ROOT_Y,
    WIDTH,
    Group,
    Recipe,
    actor_motion,
    bystanders,
    group_traits,
    pose,
    recipe,
)
from pipeline.files.atomic import atomic_open

PICKLE_PROTOCOL = 4
MIRROR_COLUMNS = ("frame_dir", "label", "total_frames", "persons")

# Keys that separate the random streams drawn for different purposes from the same seed (those
# of the motions are in pipeline.dataset.synthetic_motion).
_COUNT_KEY, _CLIP_KEY = 7311, 7417

# Typical detector confidence per joint: faces are easy, wrists and ankles hard.
_CONFIDENCE = np.array(
    [
        0.92,
        0.9,
        0.9,
        0.82,
        0.82,
        0.85,
        0.85,
        0.72,
        0.72,
        0.62,
        0.62,
        0.75,
        0.75,
        0.65,
        0.65,
        0.55,
        0.55,
    ],
    dtype=np.float32,
)
_MIN_KEPT_SCORE, _DROPPED_SCORE = 0.12, 0.1
_ZERO_PERSON_RATE = 0.01
_PERSON_PROBS = (_ZERO_PERSON_RATE, 0.55, 0.30, 0.14)  # P(0), P(1), P(2), P(3) persons


def _clip(
    rng: np.random.Generator, recipe: Recipe, group: Group, frames: int, persons: int
) -> tuple[np.ndarray, np.ndarray]:
    """One clip's float16 keypoint [M, T, 17, 2] and keypoint_score [M, T, 17]; M = persons,
    the actor first."""
    shape = (persons, frames, skeleton.NUM_JOINTS)
    keypoint = np.empty((*shape, 2), np.float16)
    if persons == 0:
        return keypoint, np.empty(shape, np.float16)
    t = np.arange(frames, dtype=np.float64)
    extra = persons - 1
    channels = actor_motion(rng, recipe, group, t)
    angles, bones = bystanders(rng, extra, t)
    x, y = pose(
        np.concatenate([channels[None, :, :NUM_ANGLES], angles]).astype(np.float32),
        np.concatenate([group.bones[None], bones]).astype(np.float32),
    )

    # Per person: pixels per body unit, facing, detector jitter and quality, drop rate.
    actor_size = group.scale * math.exp(rng.normal(0.0, 0.06))
    size = np.concatenate([[actor_size], group.scale * rng.uniform(0.35, 1.0, extra)])
    flip = np.concatenate([[group.flip], rng.choice([-1.0, 1.0], extra)])
    jitter = size * np.concatenate([[group.noise], rng.uniform(0.006, 0.02, extra)])
    quality = np.concatenate([[group.quality], rng.uniform(0.15, 0.5, extra)])
    drop_rate = np.concatenate([[group.drop], rng.uniform(0.05, 0.2, extra)])
    # Detector jitter is drawn uniform (far cheaper than Gaussian, same spread) over a width
    # of sqrt(12) standard deviations; the origin absorbs its offset.
    width = (math.sqrt(12) * jitter).astype(np.float32)[:, None, None]

    # Where each person stands: the actor at the group's camera placement with this clip's
    # framing and a little camera shake, everyone else anywhere in the scene.
    center = group.center + rng.normal(0.0, (0.05 * WIDTH, 0.03 * HEIGHT))
    shake = np.cumsum(rng.normal(0.0, 0.4, (frames, 2)), axis=0)
    origin = np.empty((persons, frames, 2))
    origin[0] = center + shake + size[0] * channels[:, [ROOT_X, ROOT_Y]] * (group.flip, 1.0)
    origin[1:, :, 0] = rng.uniform(0.0, WIDTH, (extra, 1))
    origin[1:, :, 1] = rng.uniform(0.35 * HEIGHT, 0.8 * HEIGHT, (extra, 1))
    origin -= width / 2
    origin = origin.astype(np.float32)
    x *= (size * flip).astype(np.float32)[:, None, None]
    y *= size.astype(np.float32)[:, None, None]
    x += origin[..., 0, None]
    y += origin[..., 1, None]
    x += width * rng.random(shape, dtype=np.float32)
    y += width * rng.random(shape, dtype=np.float32)

    score = rng.random(shape, dtype=np.float32)
    score *= 0.2  # uniform noise of +-0.1 around the expected confidence
    score += (quality[:, None] * _CONFIDENCE - 0.1).astype(np.float32)[:, None, :]
    np.clip(score, _MIN_KEPT_SCORE, 1.0, out=score)

    # Dropped joints: half come back as zeros (a failed detection), half thrown far off.
    draw = rng.random(shape, dtype=np.float32)
    rate = drop_rate.astype(np.float32)[:, None, None]
    dropped = draw < rate
    thrown = draw < rate / 2
    dropped[0] |= (rng.random(frames) < 0.01)[:, None]  # frames where the actor was missed
    where = np.nonzero(thrown)
    spread = (0.15 * size).astype(np.float32)[where[0]]
    x[where] += spread * rng.standard_normal(len(spread), dtype=np.float32)
    y[where] += spread * rng.standard_normal(len(spread), dtype=np.float32)
    zero = dropped & ~thrown
    # Background people are often seen for part of the clip only.
    start = rng.integers(0, frames, extra)
    stop = start + np.maximum(1, rng.uniform(0.1, 1.0, extra) * frames)
    absent = np.zeros((persons, frames), bool)
    absent[1:] = (t < start[:, None]) | (t >= stop[:, None])
    zero |= absent[..., None]

    # Joints outside the image are clamped to its border, with a dropped joint's low score.
    clamped = np.clip(x, 0.0, WIDTH)
    dropped |= clamped != x
    keypoint[..., 0] = clamped
    np.clip(y, 0.0, HEIGHT, out=clamped)
    dropped |= clamped != y
    keypoint[..., 1] = clamped
    keypoint[zero] = 0.0
    score[dropped] = _DROPPED_SCORE * rng.random(int(dropped.sum()), dtype=np.float32)
    score[absent] = 0.0
    return keypoint, score.astype(np.float16)


def _check_range(name: str, value: tuple[int, int], low: int) -> tuple[int, int]:
    try:
        lo, hi = (int(v) for v in value)
    except (TypeError, ValueError):
        raise fail(name, f"expected a pair (min, max) of integers, found {value!r}") from None
    if not low <= lo <= hi:
        raise fail(name, f"expected {low} <= min <= max, found {value!r}")
    return lo, hi


def _check_labels(labels: Iterable[int] | None) -> set[int]:
    if labels is None:
        return set(range(ucf101.NUM_CLASSES))
    chosen = set()
    for label in labels:
        if isinstance(label, bool) or not isinstance(label, int | np.integer):
            raise fail("labels", f"expected integers 0..{ucf101.NUM_CLASSES - 1}, found {label!r}")
        if not 0 <= label < ucf101.NUM_CLASSES:
            raise fail("labels", f"expected 0..{ucf101.NUM_CLASSES - 1}, found {label}")
        chosen.add(int(label))
    return chosen


def _read_mirror(path: Path, labels: set[int]) -> list[tuple[str, int, int, int, int, int]]:
    """Rows (frame_dir, label, group, clip, frames, persons) of a clip list, filtered by label."""
    rows = []
    try:
        with open(path, newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in MIRROR_COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise fail(str(path), f"expected columns {MIRROR_COLUMNS}, missing {missing}")
            for row in reader:
                where = f"{path}:{reader.line_num}"
                try:
                    label, frames, persons = (
                        int(row[c]) for c in ("label", "total_frames", "persons")
                    )
                except (TypeError, ValueError):
                    raise fail(where, f"expected integers in {MIRROR_COLUMNS[1:]}") from None
                name = row["frame_dir"]
                if ucf101.FRAME_DIR_RE.match(name or "") is None:
                    raise fail(
                        where, f"expected frame_dir v_<ClassName>_g<GG>_c<CC>, found {name!r}"
                    )
                class_name, group, clip = ucf101.parse_frame_dir(name)
                if not 0 <= label < ucf101.NUM_CLASSES or ucf101.CLASSES[label] != class_name:
                    raise fail(where, f"label {label} does not name class {class_name!r}")
                if frames < 1 or persons < 0:
                    raise fail(where, f"expected total_frames >= 1, persons >= 0: {row}")
                if label in labels:
                    rows.append((name, label, group, clip, frames, persons))
    except OSError as exc:
        raise fail(str(path), f"cannot read the clip list ({exc.strerror})") from None
    return rows


def _planned_clips(
    seed: int, labels: set[int], clips_per_group: tuple[int, int], frames: tuple[int, int]
) -> list[tuple[str, int, int, int, int, int]]:
    """Rows (frame_dir, label, group, clip, frames, persons) of a freshly drawn dataset."""
    rows = []
    for label in sorted(labels):
        for group in range(1, ucf101.NUM_GROUPS + 1):
            count_rng = np.random.default_rng([seed, _COUNT_KEY, label, group])
            clips = int(count_rng.integers(clips_per_group[0], clips_per_group[1] + 1))
            for clip in range(1, clips + 1):
                rng = np.random.default_rng([seed, _CLIP_KEY, label, group, clip])
                # Right-skewed like the real clip lengths, median a little below the middle.
                length = frames[0] + round((frames[1] - frames[0]) * rng.beta(2.0, 2.6))
                persons = int(rng.choice(len(_PERSON_PROBS), p=_PERSON_PROBS))
                name = ucf101.frame_dir(label, group, clip)
                rows.append((name, label, group, clip, length, persons))
    return rows


def generate(
    clips_per_group: tuple[int, int] = (4, 7),
    frames: tuple[int, int] = (40, 300),
    seed: int = 0,
    mirror: str | PathLike[str] | None = None,
    labels: Iterable[int] | None = None,
) -> dict[str, Any]:
    """Build a dataset in the exact format of PYSKL's `ucf101_2d.pkl`.

    Without `mirror`: every class (or only `labels`), groups 1..25, `clips_per_group` clips per
    (class, group) and clip lengths in `frames`, both drawn inclusive. With `mirror`, a csv with
    columns frame_dir,label,total_frames,persons: exactly those clips, in that order (still
    filtered by `labels`); `clips_per_group` and `frames` are then unused.
    """
    chosen = _check_labels(labels)
    if mirror is None:
        rows = _planned_clips(
            seed,
            chosen,
            _check_range("clips_per_group", clips_per_group, 1),
            _check_range("frames", frames, 1),
        )
    else:
        rows = _read_mirror(Path(mirror), chosen)
    recipes = {label: recipe(label) for label in sorted({row[1] for row in rows})}
    groups: dict[tuple[int, int], Group] = {}
    annotations = []
    for name, label, group, clip, length, persons in rows:
        if (label, group) not in groups:
            groups[label, group] = group_traits(seed, label, group)
        # A stream of its own, apart from the one that planned the clip, so that a mirrored
        # clip and a drawn one with the same name, length and persons are the same clip.
        rng = np.random.default_rng([seed, _CLIP_KEY, label, group, clip, 1])
        keypoint, score = _clip(rng, recipes[label], groups[label, group], length, persons)
        annotations.append(
            {
                "frame_dir": name,
                "label": label,
                "img_shape": IMG_SHAPE,
                "original_shape": IMG_SHAPE,
                "total_frames": length,
                "keypoint": keypoint,
                "keypoint_score": score,
            }
        )
    return {"split": ucf101.official_splits(row[0] for row in rows), "annotations": annotations}


def write(path: str | PathLike[str], **kwargs: Any) -> None:
    """Generate a dataset (arguments as for `generate`) and pickle it atomically to `path`."""
    data = generate(**kwargs)
    with atomic_open(path) as handle:
        pickle.dump(data, handle, protocol=PICKLE_PROTOCOL)
