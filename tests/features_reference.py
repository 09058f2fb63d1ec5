"""The plain definition of the model input streams and augmentation: the oracle for
pipeline.learning.features.

This is features.py as it was before its whole-batch rewrite (issue 27): one small tensor step
at a time on [B, T, P, V, 3]. tests/test_features.py checks the pipeline's version against it
bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from pipeline.core.params import AugmentParams
from pipeline.core.skeleton import FLIP_INDEX, PARENTS


def in_channels(streams: Sequence[str], score: bool) -> int:
    """Channels per joint that `build_input` produces: (x, y[, score]) for each stream."""
    return len(streams) * (3 if score else 2)


def _present(x: Tensor) -> Tensor:
    """[..., V] True where a joint has any non-zero value (missing joints are all zero)."""
    return (x != 0).any(dim=-1)


def _difference(a: Tensor, b: Tensor, valid: Tensor) -> Tensor:
    """(a - b) on x, y and min of the scores, zeroed wherever `valid` is False."""
    out = torch.cat([a[..., :2] - b[..., :2], torch.minimum(a[..., 2:3], b[..., 2:3])], dim=-1)
    return out * valid.unsqueeze(-1)


def _bone(x: Tensor) -> Tensor:
    parents = torch.tensor(PARENTS, device=x.device)
    parent = x[..., parents, :]
    present = _present(x)
    # The root is its own parent: it has no bone, so all three channels are zero, as for a
    # missing joint (min(score, score) would otherwise leave a bare score there).
    not_root = parents != torch.arange(len(PARENTS), device=x.device)
    return _difference(x, parent, present & present[..., parents] & not_root)


def _motion(x: Tensor, lengths: Tensor) -> Tensor:
    nxt = torch.cat([x[:, 1:], torch.zeros_like(x[:, :1])], dim=1)
    steps = torch.arange(x.shape[1], device=x.device)
    # Frame length-1 has no successor inside the clip; zeroing it and the padding means the
    # drop to the zero padding never shows up as a jump.
    in_clip = steps[None, :] < (lengths.to(x.device)[:, None] - 1)
    valid = in_clip[:, :, None, None] & _present(x) & _present(nxt)
    return _difference(nxt, x, valid)


def build_input(x: Tensor, lengths: Tensor, streams: Sequence[str], score: bool) -> Tensor:
    """The requested streams of `x` [B, T, P, V, 3], concatenated on the channel axis.

    Returns [B, T, P, V, in_channels(streams, score)], streams in the order given (their names
    are params.Stream's, checked when params are loaded).
    """
    parts = []
    for name in streams:
        if name == "joint":
            part = x
        elif name == "bone":
            part = _bone(x)
        else:  # motion
            part = _motion(x, lengths)
        parts.append(part if score else part[..., :2])
    return torch.cat(parts, dim=-1)


def mirror(x: Tensor) -> Tensor:
    """`x` [..., V, 3] mirrored left to right: x negated, each left joint swapped with its right
    twin. Missing joints stay exactly zero (not -0.0)."""
    mirrored = x[..., list(FLIP_INDEX), :] * x.new_tensor([-1.0, 1.0, 1.0])
    return torch.where(_present(mirrored).unsqueeze(-1), mirrored, torch.zeros_like(mirrored))


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
    scale, rotate = float(knobs.scale), float(knobs.rotate)
    flip, temporal, drop = float(knobs.flip), float(knobs.temporal), float(knobs.drop)
    stretch = float(knobs.stretch)
    if scale == rotate == flip == temporal == drop == stretch == 0.0:
        return x
    batch = x.shape[0]
    # One fixed draw per sample for every knob, so changing one knob leaves the others' draws
    # (and thus the rest of a run) as they were.
    u = torch.rand((batch, 7), generator=generator, device=generator.device).to(x.device)
    hidden = torch.rand((batch, x.shape[3]), generator=generator, device=generator.device)
    hidden = (hidden < drop).to(x.device)[:, None, None, :]

    if temporal > 0:
        x = _resample(x, lengths.to(x.device), temporal, u[:, 0], u[:, 1])

    flipped = u[:, 2] < flip
    x = torch.where(flipped[:, None, None, None, None], mirror(x), x)
    present = _present(x) & ~hidden

    factor = 1.0 + scale * (2.0 * u[:, 3] - 1.0)
    angle = torch.deg2rad(rotate * (2.0 * u[:, 4] - 1.0))
    cos = torch.cos(angle)[:, None, None, None]
    sin = torch.sin(angle)[:, None, None, None]
    fx = (factor * (1.0 + stretch * (2.0 * u[:, 5] - 1.0)))[:, None, None, None]
    fy = (factor * (1.0 + stretch * (2.0 * u[:, 6] - 1.0)))[:, None, None, None]
    px, py = fx * x[..., 0], fy * x[..., 1]
    x = torch.stack([cos * px - sin * py, sin * px + cos * py, x[..., 2]], dim=-1)
    # dropped joints read as missing ones do in the shards: all zero
    return torch.where(present.unsqueeze(-1), x, torch.zeros_like(x))


def _resample(
    x: Tensor, lengths: Tensor, strength: float, u_size: Tensor, u_start: Tensor
) -> Tensor:
    """Crop a random window of ceil(U(1-strength, 1) * len) frames and stretch it to len frames."""
    window = torch.ceil((1.0 - strength * u_size) * lengths).long()
    window = torch.minimum(torch.clamp(window, min=1), lengths)
    start = torch.floor(u_start * (lengths - window + 1)).long()
    start = torch.minimum(start, lengths - window)
    steps = torch.arange(x.shape[1], device=x.device)[None, :]
    # Nearest source frame for the centre of each output frame: floor((t + 1/2) * window / len).
    source = start[:, None] + ((2 * steps + 1) * window[:, None]) // (2 * lengths[:, None])
    # Padding frames map to themselves and so stay the zeros they were.
    source = torch.where(steps < lengths[:, None], source, steps)
    index = source[:, :, None, None, None].expand_as(x)
    return torch.gather(x, 1, index)
