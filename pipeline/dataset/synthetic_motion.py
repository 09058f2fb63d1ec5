"""How the synthetic stand-in's people move: a 2D kinematic model of the COCO-17 skeleton.

A pose is a set of joint angles (`NUM_ANGLES` channels) turning the bones of a rest skeleton,
plus a root translation. Each class has a motion recipe (periodic angle oscillations with a
class frequency, harmonics and left/right couplings, optional locomotion or bouncing), seeded by
its label alone; each (class, group) has an actor and camera of its own (`Group`). `pipeline.
synthetic` turns these motions into detections, clips and the pickle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.core import skeleton

IMG_SHAPE: tuple[int, int] = (256, 340)  # (h, w), as PYSKL stores UCF101
HEIGHT, WIDTH = IMG_SHAPE

# Keys that separate the random streams drawn for different purposes from the same seed.
_RECIPE_KEY, _GROUP_KEY = 7103, 7207

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


@dataclass(frozen=True)
class Recipe:
    """A class's motion: channel = base + sum_k amp[:, k] * sin(k * phase(t) + phase[:, k])."""

    freq: float  # cycles per frame
    amp: np.ndarray  # [NUM_CHANNELS, harmonics]
    phase: np.ndarray  # [NUM_CHANNELS, harmonics]
    base: np.ndarray  # [NUM_ANGLES], posture offset from _NEUTRAL
    speed: float  # locomotion, body units per frame


@dataclass(frozen=True)
class Group:
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


def recipe(label: int) -> Recipe:
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
    return Recipe(freq, amp, phase, base, speed)


def group_traits(seed: int, label: int, group: int) -> Group:
    rng = np.random.default_rng([seed, _GROUP_KEY, label, group])
    proportions = np.exp(rng.normal(0.0, 0.08, skeleton.NUM_JOINTS))
    proportions = np.sqrt(proportions * proportions[list(skeleton.FLIP_INDEX)])  # symmetric
    bones = _REST * proportions[:, None]
    bones[_LATERAL, 0] *= rng.uniform(0.45, 1.1)  # frontal to near-profile views
    return Group(
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


def pose(angles: np.ndarray, bones: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def actor_motion(
    rng: np.random.Generator, recipe: Recipe, group: Group, t: np.ndarray
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


def bystanders(
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
