"""A synthetic stand-in for PYSKL's `ucf101_2d.pkl`, in exactly its format.

It serves the offline demo, the tests and the benchmarks; it is no basis for accuracy claims.
Every clip is drawn from a 2D kinematic model of the COCO-17 skeleton (`pipeline.skeleton`):

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
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import skeleton, ucf101
from pipeline.atomic import atomic_open
from pipeline.errors import fail

IMG_SHAPE: tuple[int, int] = (256, 340)  # (h, w), as PYSKL stores UCF101
HEIGHT, WIDTH = IMG_SHAPE
PICKLE_PROTOCOL = 4
MIRROR_COLUMNS = ("frame_dir", "label", "total_frames", "persons")

# Keys that separate the random streams drawn for different purposes from the same seed.
_RECIPE_KEY, _GROUP_KEY, _COUNT_KEY, _CLIP_KEY = 7103, 7207, 7311, 7417

# Angle channels of the kinematic model (radians) and two root-translation channels (body units,
# one unit ~ the actor's nose-to-ankle height).
TRUNK, HEAD, L_SHOULDER, L_ELBOW, R_SHOULDER, R_ELBOW, L_HIP, L_KNEE, R_HIP, R_KNEE = range(10)
NUM_ANGLES = 10
ROOT_X, ROOT_Y = 10, 11
NUM_CHANNELS = 12
_PARTNER = (TRUNK, HEAD, R_SHOULDER, R_ELBOW, L_SHOULDER, L_ELBOW, R_HIP, R_KNEE, L_HIP, L_KNEE)
_HARMONICS = np.array([1.0, 2.0])


def _rest_bones() -> np.ndarray:
    """Each joint's bone (from its skeleton.PARENTS parent) in the body frame at rest [J, 2]:
    image axes (x right = the subject's left when facing the camera, y down), limbs hanging."""
    rest = np.zeros((skeleton.NUM_JOINTS, 2))
    for side, sign in (("left", 1.0), ("right", -1.0)):
        for joint, bone in (
            ("eye", (0.03 * sign, -0.03)),
            ("ear", (0.04 * sign, 0.01)),
            ("shoulder", (0.11 * sign, 0.14)),
            ("elbow", (0.0, 0.17)),
            ("wrist", (0.0, 0.15)),
            ("hip", (-0.03 * sign, 0.30)),
            ("knee", (0.0, 0.24)),
            ("ankle", (0.0, 0.24)),
        ):
            rest[skeleton.J[f"{side}_{joint}"]] = bone
    return rest


def _chain() -> np.ndarray:
    """[J, NUM_ANGLES]: how much each angle channel turns each joint's bone.

    Side channels enter with opposite signs on the two sides, so equal channel values give a
    mirror-symmetric pose and a half-cycle phase shift gives alternating limbs.
    """
    chain = np.zeros((skeleton.NUM_JOINTS, NUM_ANGLES))
    for side, sign, shoulder, elbow, hip, knee in (
        ("left", -1.0, L_SHOULDER, L_ELBOW, L_HIP, L_KNEE),
        ("right", 1.0, R_SHOULDER, R_ELBOW, R_HIP, R_KNEE),
    ):
        j = {
            name: skeleton.J[f"{side}_{name}"]
            for name in ("eye", "ear", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")
        }
        chain[[j["eye"], j["ear"]], HEAD] = 1.0
        chain[[j[n] for n in ("eye", "ear", "shoulder", "elbow", "wrist", "hip")], TRUNK] = 1.0
        chain[[j["elbow"], j["wrist"]], shoulder] = sign
        chain[j["wrist"], elbow] = sign
        # Legs hang in the world frame: leaning the trunk does not swing them.
        chain[[j["knee"], j["ankle"]], hip] = sign
        chain[j["ankle"], knee] = sign
    return chain


def _ancestors() -> np.ndarray:
    """[J, J], 1 at [a, j] where a is j or one of its ancestors: positions = bones @ this."""
    ancestors = np.zeros((skeleton.NUM_JOINTS, skeleton.NUM_JOINTS))
    for joint in range(skeleton.NUM_JOINTS):
        node = joint
        ancestors[node, joint] = 1.0
        while skeleton.PARENTS[node] != node:
            node = skeleton.PARENTS[node]
            ancestors[node, joint] = 1.0
    return ancestors


_REST = _rest_bones()
_CHAIN = _chain().astype(np.float32)
_ANCESTORS = _ancestors().astype(np.float32)
# Bones whose horizontal extent shrinks when the actor is seen from the side.
_LATERAL = np.array([n.endswith(("eye", "ear", "shoulder", "hip")) for n in skeleton.JOINTS])

# A relaxed standing pose: arms slightly out, elbows slightly bent.
_NEUTRAL = np.zeros(NUM_ANGLES)
_NEUTRAL[[L_SHOULDER, R_SHOULDER]] = 0.15
_NEUTRAL[[L_ELBOW, R_ELBOW]] = 0.15
_NEUTRAL[[L_HIP, R_HIP]] = 0.05

# Typical detector confidence per joint: faces are easy, wrists and ankles hard.
_CONFIDENCE = np.array(
    [0.92, 0.9, 0.9, 0.82, 0.82, 0.85, 0.85, 0.72, 0.72, 0.62, 0.62, 0.75, 0.75, 0.65, 0.65,
     0.55, 0.55],
    dtype=np.float32,
)  # fmt: skip
_MIN_KEPT_SCORE, _DROPPED_SCORE = 0.12, 0.1
_ZERO_PERSON_RATE = 0.01
_PERSON_PROBS = (_ZERO_PERSON_RATE, 0.55, 0.30, 0.14)  # P(0), P(1), P(2), P(3) persons


@dataclass(frozen=True)
class _Recipe:
    """A class's motion: channel = base + sum_k amp[:, k] * sin(k * phase(t) + phase[:, k])."""

    freq: float  # cycles per frame
    amp: np.ndarray  # [NUM_CHANNELS, harmonics]
    phase: np.ndarray  # [NUM_CHANNELS, harmonics]
    base: np.ndarray  # [NUM_ANGLES], posture offset from _NEUTRAL
    speed: float  # locomotion, body units per frame


@dataclass(frozen=True)
class _Group:
    """What the clips of one (class, group) share: actor, scene, camera, detector quality."""

    center: np.ndarray  # (x, y) of the mid-hip in pixels
    scale: float  # pixels per body unit
    flip: float  # +1 facing the camera, -1 mirrored
    bones: np.ndarray  # [J, 2] rest bones with this actor's proportions and viewing angle
    style: np.ndarray  # [NUM_ANGLES] the actor's own posture
    tempo: float
    noise: float  # detector jitter, fraction of scale
    drop: float  # rate of dropped joints
    quality: float  # multiplies detector confidence


def _recipe(label: int) -> _Recipe:
    rng = np.random.default_rng([_RECIPE_KEY, label])
    freq = math.exp(rng.uniform(math.log(1 / 48), math.log(1 / 10)))
    amp = np.zeros((NUM_CHANNELS, len(_HARMONICS)))
    phase = rng.uniform(0.0, 2 * np.pi, (NUM_CHANNELS, len(_HARMONICS)))
    active = rng.choice(NUM_ANGLES, int(rng.integers(2, 5)), replace=False)
    amp[active, 0] = rng.uniform(0.25, 0.9, len(active))
    if rng.random() < 0.5:  # bilateral: the partner limb moves too, in phase or alternating
        partners = np.array([_PARTNER[c] for c in active])
        amp[partners, 0] = np.maximum(amp[partners, 0], amp[active, 0] * rng.uniform(0.7, 1.0))
        phase[partners, 0] = phase[active, 0] + np.pi * rng.integers(0, 2)
    amp[:NUM_ANGLES, 1] = amp[:NUM_ANGLES, 0] * rng.uniform(0.0, 0.5, NUM_ANGLES)
    amp[[TRUNK, HEAD]] *= 0.4  # a trunk swinging a full radian would fall over
    speed = 0.0
    kind = rng.random()
    if kind < 0.2:  # locomotion: alternating legs, a bounce per step, walking across
        amp[[L_HIP, R_HIP], 0] = rng.uniform(0.2, 0.4)
        phase[R_HIP, 0] = phase[L_HIP, 0] + np.pi
        amp[ROOT_Y, 1] = rng.uniform(0.01, 0.03)
        speed = rng.uniform(0.004, 0.012)
    elif kind < 0.35:  # jumping in place
        amp[ROOT_Y, 0] = rng.uniform(0.04, 0.12)
    elif kind < 0.5:  # near stillness with small quick movements (typing, knitting)
        amp *= 0.3
        freq = min(2 * freq, 1 / 5)
    if rng.random() < 0.3:  # side-to-side sway
        amp[ROOT_X, 0] = rng.uniform(0.02, 0.08)
    base = rng.normal(0.0, 0.08, NUM_ANGLES)
    return _Recipe(freq, amp, phase, base, speed)


def _group(seed: int, label: int, group: int) -> _Group:
    rng = np.random.default_rng([seed, _GROUP_KEY, label, group])
    proportions = np.exp(rng.normal(0.0, 0.08, skeleton.NUM_JOINTS))
    proportions = np.sqrt(proportions * proportions[list(skeleton.FLIP_INDEX)])  # symmetric
    bones = _REST * proportions[:, None]
    bones[_LATERAL, 0] *= rng.uniform(0.45, 1.1)  # frontal to near-profile views
    return _Group(
        center=np.array([rng.uniform(0.3, 0.7) * WIDTH, rng.uniform(0.45, 0.62) * HEIGHT]),
        scale=rng.uniform(90.0, 210.0),
        flip=float(rng.choice([-1.0, 1.0])),
        bones=bones,
        style=rng.normal(0.0, 0.15, NUM_ANGLES),
        tempo=rng.uniform(0.85, 1.18),
        noise=rng.uniform(0.004, 0.012),
        drop=rng.uniform(0.01, 0.06),
        quality=rng.uniform(0.8, 1.0),
    )


def _pose(angles: np.ndarray, bones: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Forward kinematics: angles [M, T, NUM_ANGLES], bones [M, J, 2] -> x, y [M, T, J].

    Positions are in body units with the mid-hip at the origin.
    """
    turn = angles @ _CHAIN.T
    cos, sin = np.cos(turn), np.sin(turn)
    bx, by = bones[:, None, :, 0], bones[:, None, :, 1]
    x = (cos * bx - sin * by) @ _ANCESTORS
    y = (sin * bx + cos * by) @ _ANCESTORS
    hips = [skeleton.LEFT_HIP, skeleton.RIGHT_HIP]
    x -= x[..., hips].mean(-1, keepdims=True)
    y -= y[..., hips].mean(-1, keepdims=True)
    return x, y


def _actor_motion(
    rng: np.random.Generator, recipe: _Recipe, group: _Group, t: np.ndarray
) -> np.ndarray:
    """The actor's channels [T, NUM_CHANNELS]: the class recipe at this clip's tempo, starting
    phase and amplitudes, on this actor's posture, with a slow random wander."""
    frames = len(t)
    cycle = 2 * np.pi * recipe.freq * group.tempo * rng.uniform(0.93, 1.07) * t
    cycle += rng.uniform(0.0, 2 * np.pi)
    amp = recipe.amp * np.exp(rng.normal(0.0, 0.15, (NUM_CHANNELS, 1)))
    waves = np.sin(_HARMONICS[None, :, None] * cycle + recipe.phase[:, :, None])
    channels = np.einsum("ck,ckt->tc", amp, waves)
    wander = np.cumsum(rng.normal(0.0, 1.0, (frames, NUM_CHANNELS)), axis=0)
    wander -= wander.mean(axis=0)
    wander *= np.where(np.arange(NUM_CHANNELS) < NUM_ANGLES, 0.012, 0.004)
    channels += wander
    channels[:, :NUM_ANGLES] += (
        _NEUTRAL + recipe.base + group.style + rng.normal(0.0, 0.12, NUM_ANGLES)
    )
    # Cap the walk so the actor stays roughly in view, as a panning camera would keep them.
    travel = min(recipe.speed * frames, 0.8) * rng.choice([-1.0, 1.0])
    channels[:, ROOT_X] += travel * (t / max(frames - 1, 1) - 0.5)
    return channels


def _bystanders(
    rng: np.random.Generator, count: int, t: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Angles [count, T, NUM_ANGLES] and bones [count, J, 2] of background people: near-neutral
    poses of their own build and viewing angle, swaying slowly."""
    size = (count, 1, NUM_ANGLES)
    sway = rng.uniform(0.0, 0.08, size) * np.sin(
        2 * np.pi * rng.uniform(1 / 120, 1 / 40, size) * t[:, None]
        + rng.uniform(0.0, 2 * np.pi, size)
    )
    angles = _NEUTRAL + rng.normal(0.0, 0.2, size) + sway
    bones = _REST * rng.uniform(0.9, 1.1, (count, 1, 1))
    bones[:, _LATERAL, 0] *= rng.uniform(0.4, 1.1, (count, 1))
    return angles, bones


def _clip(
    rng: np.random.Generator, recipe: _Recipe, group: _Group, frames: int, persons: int
) -> tuple[np.ndarray, np.ndarray]:
    """One clip's float16 keypoint [M, T, 17, 2] and keypoint_score [M, T, 17]; M = persons,
    the actor first."""
    shape = (persons, frames, skeleton.NUM_JOINTS)
    keypoint = np.empty((*shape, 2), np.float16)
    if persons == 0:
        return keypoint, np.empty(shape, np.float16)
    t = np.arange(frames, dtype=np.float64)
    extra = persons - 1
    channels = _actor_motion(rng, recipe, group, t)
    angles, bones = _bystanders(rng, extra, t)
    x, y = _pose(
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
    recipes = {label: _recipe(label) for label in sorted({row[1] for row in rows})}
    groups: dict[tuple[int, int], _Group] = {}
    annotations = []
    for name, label, group, clip, length, persons in rows:
        if (label, group) not in groups:
            groups[label, group] = _group(seed, label, group)
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
