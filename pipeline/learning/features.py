"""Model inputs from normalized skeleton batches: joint/bone/motion streams and augmentation.

A batch is `x` [B, T, P, V, 3] holding (x, y, score) per joint, zero-padded after each clip's
length, with `lengths` [B]. A joint whose three values are exactly zero is missing; every stream
and every augmentation keeps missing joints and padding exactly zero, so models can tell them apart
from real data.

The work is done on "planes" [3, V, B, T, P]: each channel and joint a contiguous block, so that
every step is one whole-batch operation, reordering joints (mirror, parents) copies whole
blocks, and the layout is changed twice per batch (in, and out with every stream), not at every
step; each value is computed by the same float operations as the plain definition in
tests/features_reference.py, which tests/test_features.py checks bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pipeline.core.params import AugmentParams
from pipeline.core.skeleton import FLIP_INDEX, NUM_JOINTS, PARENTS

_ROOTS = [j for j, p in enumerate(PARENTS) if j == p]  # own parents: no bone


def in_channels(streams: Sequence[str], score: bool) -> int:
    """Channels per joint that `build_input` produces: (x, y[, score]) for each stream."""
    return len(streams) * (3 if score else 2)


def to_planes(x: Tensor) -> Tensor:
    """[B, T, P, V, C] -> [C, V, B, T, P], contiguous."""
    return x.permute(4, 3, 0, 1, 2).contiguous()


def from_planes(planes: Tensor) -> Tensor:
    """[C, V, B, T, P] -> [B, T, P, V, C], contiguous."""
    return planes.permute(2, 3, 4, 1, 0).contiguous()


def _present(planes: Tensor) -> Tensor:
    """[V, B, T, P] True where a joint has any non-zero value (missing joints are all zero)."""
    return (planes[0] != 0) | (planes[1] != 0) | (planes[2] != 0)


def _difference(a: Tensor, b: Tensor, valid: Tensor, score: bool) -> list[Tensor]:
    """(a - b) on x, y and min of the scores, zeroed (times 0.0) wherever `valid` is False."""
    weight = valid.to(a.dtype)
    out = [(a[0] - b[0]) * weight, (a[1] - b[1]) * weight]
    if score:
        out.append(torch.minimum(a[2], b[2]) * weight)
    return out


def _bone(planes: Tensor, present: Tensor, score: bool) -> list[Tensor]:
    parents = torch.tensor(PARENTS, device=planes.device)
    valid = present & present.index_select(0, parents)
    # The root is its own parent: it has no bone, so all three channels are zero, as for a
    # missing joint (min(score, score) would otherwise leave a bare score there).
    valid[_ROOTS] = False
    return _difference(planes, planes.index_select(1, parents), valid, score)


def _motion(planes: Tensor, present: Tensor, lengths: Tensor, score: bool) -> list[Tensor]:
    nxt = torch.cat([planes[:, :, :, 1:], torch.zeros_like(planes[:, :, :, :1])], dim=3)
    present_nxt = torch.cat([present[:, :, 1:], torch.zeros_like(present[:, :, :1])], dim=2)
    steps = torch.arange(planes.shape[3], device=planes.device)
    # Frame length-1 has no successor inside the clip; zeroing it and the padding means the
    # drop to the zero padding never shows up as a jump.
    in_clip = steps[None, :] < (lengths.to(planes.device)[:, None] - 1)
    valid = in_clip[None, :, :, None] & present & present_nxt
    return _difference(nxt, planes, valid, score)


def streams_of_planes(
    planes: Tensor, lengths: Tensor, streams: Sequence[str], score: bool
) -> Tensor:
    """`build_input` of a batch given as planes [3, V, B, T, P]."""
    present = _present(planes)
    parts: list[Tensor] = []
    for name in streams:
        if name == "joint":
            parts.extend(planes[: 3 if score else 2].unbind(0))
        elif name == "bone":
            parts.extend(_bone(planes, present, score))
        else:  # motion
            parts.extend(_motion(planes, present, lengths, score))
    # one interleaving copy into [B, T, P, V, C]
    return torch.stack([part.permute(1, 2, 3, 0) for part in parts], dim=-1)


def build_input(x: Tensor, lengths: Tensor, streams: Sequence[str], score: bool) -> Tensor:
    """The requested streams of `x` [B, T, P, V, 3], concatenated on the channel axis.

    Returns [B, T, P, V, in_channels(streams, score)], streams in the order given (their names
    are params.Stream's, checked when params are loaded).
    """
    return streams_of_planes(to_planes(x), lengths, streams, score)


def mirror(x: Tensor) -> Tensor:
    """`x` [..., V, 3] mirrored left to right: x negated, each left joint swapped with its right
    twin. Missing joints stay exactly zero (not -0.0)."""
    mirrored = x[..., list(FLIP_INDEX), :] * x.new_tensor([-1.0, 1.0, 1.0])
    present = (mirrored != 0).any(dim=-1, keepdim=True)
    return torch.where(present, mirrored, torch.zeros_like(mirrored))


def _keep_where(values: Tensor, keep: Tensor) -> Tensor:
    """torch.where(keep, values, 0.0) for float32, as a bit mask: +0.0 where not `keep`."""
    mask = keep.to(torch.int32).neg_()  # all ones or all zeros
    return (values.view(torch.int32) & mask).view(values.dtype)


def _all_off(knobs: AugmentParams) -> bool:
    knob = (knobs.scale, knobs.rotate, knobs.flip, knobs.temporal, knobs.drop, knobs.stretch)
    return all(float(k) == 0.0 for k in knob)


def augmented_planes(
    x: Tensor, lengths: Tensor, knobs: AugmentParams, generator: torch.Generator
) -> Tensor:
    """`augment` of `x` [B, T, P, V, 3], returned as planes [3, V, B, T, P]."""
    if _all_off(knobs):
        return to_planes(x)
    scale, rotate = float(knobs.scale), float(knobs.rotate)
    flip, temporal, drop = float(knobs.flip), float(knobs.temporal), float(knobs.drop)
    stretch = float(knobs.stretch)
    batch, joints = x.shape[0], x.shape[3]
    # One fixed draw per sample for every knob, so changing one knob leaves the others' draws
    # (and thus the rest of a run) as they were.
    u = torch.rand((batch, 7), generator=generator, device=generator.device).to(x.device)
    hidden = torch.rand((batch, joints), generator=generator, device=generator.device)
    hidden = (hidden < drop).to(x.device).T[:, :, None, None]  # [V, B, 1, 1]

    if temporal > 0:
        x = _resample(x, lengths.to(x.device), temporal, u[:, 0], u[:, 1])
    planes = to_planes(x)

    flipped = torch.nonzero(u[:, 2] < flip).flatten()
    if len(flipped):
        # Mirrored samples: joints swapped left for right, x negated. (Where a joint is
        # missing the -0.0 this leaves is cleared with every other missing joint below.)
        flip_index = torch.tensor(FLIP_INDEX, device=planes.device)
        mirrored = planes[:, :, flipped].index_select(1, flip_index)
        mirrored[0] = -mirrored[0]
        planes = planes.index_copy(2, flipped, mirrored)
    present = _present(planes) & ~hidden

    factor = 1.0 + scale * (2.0 * u[:, 3] - 1.0)
    angle = torch.deg2rad(rotate * (2.0 * u[:, 4] - 1.0))
    cos = torch.cos(angle)[:, None, None]
    sin = torch.sin(angle)[:, None, None]
    fx = (factor * (1.0 + stretch * (2.0 * u[:, 5] - 1.0)))[:, None, None]
    fy = (factor * (1.0 + stretch * (2.0 * u[:, 6] - 1.0)))[:, None, None]
    px, py = fx * planes[0], fy * planes[1]
    out = torch.stack([cos * px - sin * py, sin * px + cos * py, planes[2]])
    # dropped joints read as missing ones do in the shards: all zero
    return _keep_where(out, present)


def augment(x: Tensor, lengths: Tensor, knobs: AugmentParams, generator: torch.Generator) -> Tensor:
    """Randomly rescale, stretch, rotate, mirror, re-time and hide joints of `x` [B, T, P, V, 3].

    `knobs` is a model section's `augment` (scale, rotate, flip, temporal, drop, stretch).
    `stretch` scales x and y by independent factors in 1 +- stretch (on top of `scale`): people
    of another build, or seen from a little higher or to the side, look wider or shorter along
    one axis only, which body normalization (by torso length) cannot undo. `drop` hides each
    joint for a whole clip with that probability, so a model does not come to rely on joints
    that the pose detector finds for some people or cameras and not others. All zero returns
    `x` itself. Lengths and padding are unchanged, missing joints stay exactly zero, and the result
    depends only on the inputs and the generator's state.
    """
    if (
        knobs.scale
        == knobs.rotate
        == knobs.flip
        == knobs.temporal
        == knobs.drop
        == 0.0
        == (knobs.stretch)
    ):
        return x
    return from_planes(augmented_planes(x, lengths, knobs, generator))


def _resample(
    x: Tensor, lengths: Tensor, strength: float, u_size: Tensor, u_start: Tensor
) -> Tensor:
    """Crop a random window of ceil(U(1-strength, 1) * len) frames and stretch it to len frames."""
    window = torch.ceil((1.0 - strength * u_size) * lengths).long()
    window = torch.minimum(torch.clamp(window, min=1), lengths)
    start = torch.floor(u_start * (lengths - window + 1)).long()
    start = torch.minimum(start, lengths - window)
    batch, frames = x.shape[:2]
    steps = torch.arange(frames, device=x.device)[None, :]
    # Nearest source frame for the centre of each output frame: floor((t + 1/2) * window / len).
    source = start[:, None] + ((2 * steps + 1) * window[:, None]) // (2 * lengths[:, None])
    # Padding frames map to themselves and so stay the zeros they were.
    source = torch.where(steps < lengths[:, None], source, steps)
    rows = (torch.arange(batch, device=x.device)[:, None] * frames + source).flatten()
    return x.reshape(batch * frames, -1).index_select(0, rows).view(x.shape)


assert len(FLIP_INDEX) == len(PARENTS) == NUM_JOINTS
