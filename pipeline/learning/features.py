"""Model inputs from normalized skeleton batches: joint/bone/motion streams and augmentation.

A batch is `x` [B, T, P, V, 3] holding (x, y, score) per joint, zero-padded after each clip's
length, with `lengths` [B]. A joint whose three values are exactly zero is missing; every stream
and every augmentation keeps missing joints and padding exactly zero, so models can tell them apart
from real data.

The work is done on "planes" [3, V, B, P, T]: each channel and joint a contiguous block, so that
every step is one whole-batch operation, reordering joints (mirror, parents) copies whole
blocks, and a frame's successor is the next value. The layout is changed once per batch, on the
way in: each stream writes its channels straight into one [V, C, B, P, T] block, which the
streams return as a [B, T, P, V, C] view, since the models' first step copies their input into
persons-major order anyway (`models.common.fold_persons`), and that copy interleaves the
channels. Each value is computed by the same float operations as the plain definition in
tests/features_reference.py, which tests/test_features.py checks bit for bit (and
tests/test_models.py that every model computes the same bits from this view as from a
contiguous copy).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pipeline.core.params import AugmentParams
from pipeline.core.skeleton import FLIP_INDEX, NUM_JOINTS, PARENTS

_PARENTS = torch.tensor(PARENTS)
_ROOTS = [j for j, p in enumerate(PARENTS) if j == p]  # own parents: no bone
_FLIP = torch.tensor(FLIP_INDEX)


def in_channels(streams: Sequence[str], score: bool) -> int:
    """Channels per joint that `build_input` produces: (x, y[, score]) for each stream."""
    return len(streams) * (3 if score else 2)


def to_planes(x: Tensor) -> Tensor:
    """[B, T, P, V, C] -> [C, V, B, P, T], contiguous."""
    return x.permute(4, 3, 0, 2, 1).contiguous()


def from_planes(planes: Tensor) -> Tensor:
    """[C, V, B, P, T] -> [B, T, P, V, C], contiguous."""
    return planes.permute(2, 4, 3, 1, 0).contiguous()


def _present(planes: Tensor) -> Tensor:
    """[V, B, P, T] True where a joint has any non-zero value (missing joints are all zero)."""
    return (planes[0] != 0) | (planes[1] != 0) | (planes[2] != 0)


def _difference(a: Tensor, b: Tensor, weight: Tensor, out: Tensor) -> None:
    """`out` [2 or 3, ...] = (a - b) on x, y and the min of the scores, times `weight` (1.0
    where valid, 0.0 elsewhere): each value by the plain definition's float operations."""
    torch.sub(a[:2], b[:2], out=out[:2])
    if len(out) == 3:
        torch.minimum(a[2], b[2], out=out[2])
    out.mul_(weight)


def _bone(planes: Tensor, present: Tensor, out: Tensor) -> None:
    """Each joint minus its parent, into `out` [2 or 3, V, B, P, T]."""
    parents = _PARENTS.to(planes.device)
    valid = present & present.index_select(0, parents)
    # The root is its own parent: it has no bone, so all three channels are zero, as for a
    # missing joint (min(score, score) would otherwise leave a bare score there).
    for root in _ROOTS:
        valid[root] = False
    _difference(planes, planes.index_select(1, parents), valid.to(planes.dtype), out)


def _motion(planes: Tensor, present: Tensor, lengths: Tensor, out: Tensor) -> None:
    """Each joint's next frame minus this one, into `out` [2 or 3, V, B, P, T]."""
    frames = planes.shape[-1]
    present_nxt = torch.cat([present[..., 1:], torch.zeros_like(present[..., :1])], dim=-1)
    steps = torch.arange(frames, device=planes.device)
    # Frame length-1 has no successor inside the clip; zeroing it and the padding means the
    # drop to the zero padding never shows up as a jump.
    in_clip = steps[None, :] < (lengths.to(planes.device)[:, None] - 1)
    weight = (present & present_nxt & in_clip[:, None, :]).to(planes.dtype)
    # One pass shifted by a frame makes every difference; each clip's last frame, whose
    # successor there is the next clip's first, is then redone against the zero padding that
    # follows it in the plain definition, so that every value is that definition's, down to
    # the sign of each zero.
    width, last = len(out), frames - 1
    flat, dest = planes[:width].flatten(2), out.flatten(2)
    torch.sub(flat[:2, :, 1:], flat[:2, :, :-1], out=dest[:2, :, :-1])
    zero = planes.new_zeros(())
    torch.sub(zero, planes[:2, ..., last:], out=out[:2, ..., last:])
    if width == 3:
        torch.minimum(flat[2, :, 1:], flat[2, :, :-1], out=dest[2, :, :-1])
        torch.minimum(zero, planes[2, ..., last:], out=out[2, ..., last:])
    out.mul_(weight)


def streams_of_planes(
    planes: Tensor,
    lengths: Tensor,
    streams: Sequence[str],
    score: bool,
    present: Tensor | None = None,
    out: Tensor | None = None,
    joint_written: bool = False,
) -> Tensor:
    """`build_input` of a batch given as planes [3, V, B, P, T] (and, where known, which of
    its joints are present, [V, B, P, T]), as a view of a [V, C, B, P, T] block: `out`, if
    given (with `joint_written`, `planes` are its joint stream's slots already)."""
    width = 3 if score else 2
    joints, rest = planes.shape[1], planes.shape[2:]
    if out is None:
        out = planes.new_empty((joints, len(streams) * width, *rest))
    if present is None:
        present = _present(planes)
    for i, name in enumerate(streams):
        dest = out[:, i * width : (i + 1) * width].transpose(0, 1)  # [width, V, B, P, T]
        if name == "joint":
            if not joint_written:
                dest.copy_(planes[:width])
        elif name == "bone":
            _bone(planes, present, dest)
        elif name == "motion":
            _motion(planes, present, lengths, dest)
        else:  # bone_motion: each bone's change to the next frame
            bones = torch.empty_like(planes)
            _bone(planes, present, bones)
            _motion(bones, _present(bones), lengths, dest)
    return out.permute(2, 4, 3, 0, 1)


def build_input(x: Tensor, lengths: Tensor, streams: Sequence[str], score: bool) -> Tensor:
    """The requested streams of `x` [B, T, P, V, 3], concatenated on the channel axis.

    Returns [B, T, P, V, in_channels(streams, score)], streams in the order given (their names
    are params.Stream's, checked when params are loaded): a view, not necessarily contiguous.
    """
    if list(streams) == ["joint"]:  # the input itself: no layout change needed
        return x[..., : 3 if score else 2].contiguous()
    return streams_of_planes(to_planes(x), lengths, streams, score)


def model_input(
    x: Tensor,
    lengths: Tensor,
    streams: Sequence[str],
    score: bool,
    knobs: AugmentParams | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> Tensor:
    """`build_input` of `augment` of `x` [B, T, P, V, 3] (none without `knobs`), on `device`:
    augmented where `x` is (with `generator`'s draws), the streams built on `device`."""
    if knobs is None or _all_off(knobs):
        return build_input(x.to(device), lengths.to(device), streams, score)
    assert generator is not None, "augmentation draws from a generator"
    block = joint = None
    if score and "joint" in streams and x.device == torch.device(device):
        # the augmented planes are the joint stream: written straight into its slots
        batch, frames, persons, joints = x.shape[:4]
        block = x.new_empty((joints, 3 * len(streams), batch, persons, frames))
        at = 3 * list(streams).index("joint")
        joint = block[:, at : at + 3].transpose(0, 1)
    planes, present = _augmented(x, lengths, knobs, generator, joint)
    planes, present = planes.to(device, non_blocking=True), present.to(device)
    return streams_of_planes(
        planes, lengths.to(device), streams, score, present, block, block is not None
    )


def mirror(x: Tensor) -> Tensor:
    """`x` [..., V, 3] mirrored left to right: x negated, each left joint swapped with its right
    twin. Missing joints stay exactly zero (not -0.0)."""
    mirrored = x[..., list(FLIP_INDEX), :] * x.new_tensor([-1.0, 1.0, 1.0])
    present = (mirrored != 0).any(dim=-1, keepdim=True)
    return torch.where(present, mirrored, torch.zeros_like(mirrored))


def _all_off(knobs: AugmentParams) -> bool:
    knob = (knobs.scale, knobs.rotate, knobs.flip, knobs.temporal, knobs.drop, knobs.stretch)
    return all(float(k) == 0.0 for k in knob)


def augmented_planes(
    x: Tensor, lengths: Tensor, knobs: AugmentParams, generator: torch.Generator
) -> Tensor:
    """`augment` of `x` [B, T, P, V, 3], returned as planes [3, V, B, P, T]."""
    return _augmented(x, lengths, knobs, generator)[0]


def _augmented(
    x: Tensor,
    lengths: Tensor,
    knobs: AugmentParams,
    generator: torch.Generator,
    out: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """`augmented_planes`, written into `out` [3, V, B, P, T] where given (unless all knobs are
    off), and which of its joints are present [V, B, P, T]."""
    if _all_off(knobs):
        planes = to_planes(x)
        return planes, _present(planes)
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

    flipped = u[:, 2] < flip
    if bool(flipped.any()):
        planes = _mirror_joints(planes, flipped)
    kept = _present(planes)
    if drop > 0:
        kept &= ~hidden

    factor = 1.0 + scale * (2.0 * u[:, 3] - 1.0)
    angle = torch.deg2rad(rotate * (2.0 * u[:, 4] - 1.0))
    cos = torch.cos(angle)[:, None, None]
    sin = torch.sin(angle)[:, None, None]
    fx = factor * (1.0 + stretch * (2.0 * u[:, 5] - 1.0))
    # A mirrored sample's x is negated through its factor: (-fx) * x is fx * (-x), bit for bit.
    fx = torch.where(flipped, -fx, fx)[:, None, None]
    fy = (factor * (1.0 + stretch * (2.0 * u[:, 6] - 1.0)))[:, None, None]
    px, py = fx * planes[0], fy * planes[1]
    out = torch.empty_like(planes) if out is None else out
    a, b = cos * px, sin * py
    torch.sub(a, b, out=out[0])
    torch.add(torch.mul(sin, px, out=a), torch.mul(cos, py, out=b), out=out[1])
    # dropped joints read as missing ones do in the shards: all zero
    mask = kept.to(torch.int32).neg_()  # all ones or all zeros: a bit mask, +0.0 where dropped
    out[:2].view(torch.int32).bitwise_and_(mask)
    torch.bitwise_and(planes[2].view(torch.int32), mask, out=out[2].view(torch.int32))
    # A kept joint with a non-zero score is still present; only one whose score is zero could
    # have had its x and y round to zero, so only then is presence computed afresh.
    if bool((kept & (planes[2] == 0)).any()):
        return out, _present(out)
    return out, kept


def _mirror_joints(planes: Tensor, flipped: Tensor) -> Tensor:
    """Planes [3, V, B, P, T] whose `flipped` samples read each joint from its mirror twin,
    by one gather of whole (joint, sample) rows."""
    joints, batch = planes.shape[1], planes.shape[2]
    own = torch.arange(joints, device=planes.device)[:, None]
    source = torch.where(flipped[None, :], _FLIP.to(planes.device)[:, None], own)  # [V, B]
    rows = (source * batch + torch.arange(batch, device=planes.device)).flatten()
    return planes.flatten(1, 2).index_select(1, rows).view(planes.shape)


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
