"""Streams (joint, bone, motion) against hand-computed values, and the augmentations' guarantees."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from pipeline.core.params import NO_AUGMENT, AugmentParams
from pipeline.core.skeleton import FLIP_INDEX, NUM_JOINTS, J
from pipeline.learning.features import augment, build_input, in_channels

OFF = NO_AUGMENT
ALL = AugmentParams(scale=0.3, rotate=40.0, flip=0.5, temporal=0.4, drop=0.0, stretch=0.2)


def clip_batch(lengths: list[int], frames: int = 12, persons: int = 2, seed: int = 0):
    """Random (x, y, score) clips, zero after each length, the second person only in clip 0."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), frames, persons, NUM_JOINTS, 3, generator=gen)
    x[..., 2] = torch.rand(x.shape[:-1], generator=gen) * 0.9 + 0.1
    lengths_t = torch.tensor(lengths)
    valid = torch.arange(frames)[None, :] < lengths_t[:, None]
    x = x * valid[:, :, None, None, None]
    x[1:, :, 1:] = 0
    return x, lengths_t


def test_in_channels_counts_two_or_three_per_stream():
    assert in_channels(["joint"], False) == 2
    assert in_channels(["joint"], True) == 3
    assert in_channels(["joint", "bone", "motion"], False) == 6
    assert in_channels(["joint", "bone", "motion"], True) == 9
    x, lengths = clip_batch([12, 5])
    for streams in (["joint"], ["bone", "motion"], ["joint", "bone", "motion"]):
        for score in (False, True):
            out = build_input(x, lengths, streams, score)
            assert out.shape == (*x.shape[:-1], in_channels(streams, score))


def test_joint_stream_and_stream_order():
    x, lengths = clip_batch([12, 5])
    assert torch.equal(build_input(x, lengths, ["joint"], True), x)
    assert torch.equal(build_input(x, lengths, ["joint"], False), x[..., :2])
    both = build_input(x, lengths, ["bone", "joint"], False)
    assert torch.equal(both[..., 2:], x[..., :2])
    assert torch.equal(both[..., :2], build_input(x, lengths, ["bone"], False))


def test_bone_is_joint_minus_parent_and_zero_at_root_and_missing():
    x = torch.zeros(1, 1, 1, NUM_JOINTS, 3)
    x[0, 0, 0, J["nose"]] = torch.tensor([1.0, 2.0, 0.9])
    x[0, 0, 0, J["left_eye"]] = torch.tensor([1.5, 2.5, 0.8])
    x[0, 0, 0, J["left_ear"]] = torch.tensor([2.0, 3.0, 0.5])
    x[0, 0, 0, J["right_ear"]] = torch.tensor([3.0, 3.0, 0.7])  # its parent right_eye is missing
    x[0, 0, 0, J["left_shoulder"]] = torch.tensor([0.5, -1.0, 0.95])
    bone = build_input(x, torch.tensor([1]), ["bone"], True)[0, 0, 0]

    expected = torch.zeros(NUM_JOINTS, 3)
    expected[J["left_eye"]] = torch.tensor([0.5, 0.5, 0.8])  # minus nose, min(0.8, 0.9)
    expected[J["left_ear"]] = torch.tensor([0.5, 0.5, 0.5])  # minus left_eye
    expected[J["left_shoulder"]] = torch.tensor([-0.5, -3.0, 0.9])  # minus nose
    # nose (root), right_eye (missing), right_ear (missing parent), left_elbow (missing child
    # of a present parent) and the rest stay zero.
    torch.testing.assert_close(bone, expected)


def test_motion_is_next_minus_current_and_zero_at_clip_end():
    x = torch.zeros(1, 5, 1, NUM_JOINTS, 3)
    nose, eye = J["nose"], J["left_eye"]
    x[0, :3, 0, nose] = torch.tensor([[1.0, 1.0, 0.9], [2.0, 3.0, 0.5], [4.0, 4.0, 0.7]])
    x[0, 0, 0, eye] = torch.tensor([1.0, 1.0, 0.9])  # missing at frame 1, back at frame 2
    x[0, 2, 0, eye] = torch.tensor([3.0, 3.0, 0.9])
    # Data after the length: the length, not the zeros, must end the clip.
    x[0, 3, 0, nose] = torch.tensor([9.0, 9.0, 0.9])
    x[0, 4, 0, nose] = torch.tensor([7.0, 7.0, 0.9])
    motion = build_input(x, torch.tensor([3]), ["motion"], True)[0, :, 0]

    expected = torch.zeros(5, NUM_JOINTS, 3)
    expected[0, nose] = torch.tensor([1.0, 2.0, 0.5])
    expected[1, nose] = torch.tensor([2.0, 1.0, 0.5])
    # Frame 2 is the last valid one, frames 3-4 are padding, the eye is missing at frame 1.
    torch.testing.assert_close(motion, expected)


def test_augment_all_zero_returns_the_input():
    x, lengths = clip_batch([12, 7, 1])
    assert augment(x, lengths, OFF, torch.Generator().manual_seed(0)) is x


def test_augment_keeps_shape_padding_and_missing_joints_zero():
    x, lengths = clip_batch([12, 7, 1, 4])
    # Symmetric joints missing throughout clip 0, so flips and re-timing cannot move them.
    missing = [J["nose"], J["left_ankle"], J["right_ankle"]]
    x[0, :, :, missing] = 0
    out = augment(x, lengths, replace(ALL, flip=1.0), torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    assert not torch.equal(out, x)
    assert (out[0, :, :, missing] == 0).all()
    assert not torch.signbit(out[0, :, :, missing]).any()  # no -0.0 from mirroring either
    padding = torch.arange(x.shape[1])[None, :] >= lengths[:, None]
    assert (out[padding] == 0).all()
    assert (out[1:, :, 1] == 0).all()  # empty person slots stay empty
    valid_joints = (x != 0).any(-1)
    assert torch.equal((out != 0).any(-1).sum(), valid_joints.sum())


def test_flip_moves_missing_joints_with_their_side_and_leaves_plain_zeros():
    x, lengths = clip_batch([12, 7])
    gen = torch.Generator().manual_seed(0)
    missing = torch.rand(x.shape[:-1], generator=gen) < 0.3
    x[missing] = 0
    out = augment(x, lengths, replace(OFF, flip=1.0), gen)
    assert torch.equal(out == 0, (x == 0)[..., list(FLIP_INDEX), :])
    assert not torch.signbit(out).any(-1)[out.eq(0).all(-1)].any()  # 0.0, not -0.0


def test_augment_is_deterministic_per_seed():
    x, lengths = clip_batch([12, 7, 3])
    a = augment(x, lengths, ALL, torch.Generator().manual_seed(11))
    b = augment(x, lengths, ALL, torch.Generator().manual_seed(11))
    c = augment(x, lengths, ALL, torch.Generator().manual_seed(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_flip_swaps_left_and_right_and_negates_x():
    x, lengths = clip_batch([12, 6])
    out = augment(x, lengths, replace(OFF, flip=1.0), torch.Generator().manual_seed(0))
    sign = torch.tensor([-1.0, 1.0, 1.0])
    lw, rw, nose = J["left_wrist"], J["right_wrist"], J["nose"]
    assert torch.equal(out[..., lw, :], x[..., rw, :] * sign)
    assert torch.equal(out[..., rw, :], x[..., lw, :] * sign)
    valid = (x[..., nose, :] != 0).any(-1)
    assert torch.equal(out[..., nose, :][valid], (x[..., nose, :] * sign)[valid])
    assert FLIP_INDEX[lw] == rw


def test_rotation_preserves_norms_and_scores():
    x, lengths = clip_batch([12, 6, 2])
    out = augment(x, lengths, replace(OFF, rotate=60.0), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[..., :2].norm(dim=-1), x[..., :2].norm(dim=-1))
    assert torch.equal(out[..., 2], x[..., 2])
    assert not torch.allclose(out[..., :2], x[..., :2])


def test_scale_is_one_factor_per_clip_within_range():
    x, lengths = clip_batch([12, 6, 2, 9])
    out = augment(x, lengths, replace(OFF, scale=0.25), torch.Generator().manual_seed(0))
    for b in range(x.shape[0]):
        valid = (x[b] != 0).any(-1)
        ratio = out[b][valid][:, :2] / x[b][valid][:, :2]
        torch.testing.assert_close(ratio, torch.full_like(ratio, ratio[0, 0].item()))
        assert 0.75 <= ratio[0, 0].item() <= 1.25
        assert torch.equal(out[b][valid][:, 2], x[b][valid][:, 2])


def test_stretch_scales_x_and_y_by_independent_factors_within_range():
    x, lengths = clip_batch([12, 6, 2, 9, 12, 12, 12, 12])
    out = augment(x, lengths, replace(OFF, stretch=0.2), torch.Generator().manual_seed(0))
    differ = False
    for b in range(x.shape[0]):
        valid = (x[b] != 0).any(-1)
        fx = out[b][valid][:, 0] / x[b][valid][:, 0]
        fy = out[b][valid][:, 1] / x[b][valid][:, 1]
        torch.testing.assert_close(fx, torch.full_like(fx, fx[0].item()))
        torch.testing.assert_close(fy, torch.full_like(fy, fy[0].item()))
        assert 0.8 <= fx[0].item() <= 1.2 and 0.8 <= fy[0].item() <= 1.2
        differ |= abs(fx[0].item() - fy[0].item()) > 1e-3
        assert torch.equal(out[b][valid][:, 2], x[b][valid][:, 2])
        assert torch.equal(out[b][~valid], x[b][~valid])
    assert differ  # not one shared factor, as `scale` draws


def test_temporal_resamples_a_window_and_keeps_lengths():
    strength = 0.5
    lengths = torch.tensor([20, 13, 7, 1, 20, 20])
    frames = 20
    # Encode each frame's index in its values so the output reveals where it was taken from.
    x = torch.zeros(len(lengths), frames, 1, NUM_JOINTS, 3)
    x[..., :] = (torch.arange(frames, dtype=torch.float32) + 1)[None, :, None, None, None]
    x = x * (torch.arange(frames)[None, :] < lengths[:, None])[:, :, None, None, None]
    out = augment(x, lengths, replace(OFF, temporal=strength), torch.Generator().manual_seed(5))

    assert torch.equal(out[..., 2] == 0, x[..., 2] == 0)  # same valid frames, padding zero
    assert torch.equal(out[..., 0], out[..., 2])  # whole frames were moved, nothing else
    changed = False
    for b, length in enumerate(lengths.tolist()):
        source = out[b, :length, 0, 0, 2].long() - 1
        assert (source >= 0).all() and (source < length).all()
        assert (source.diff() >= 0).all() and (source.diff() <= 1).all()
        window = source[-1] - source[0] + 1
        assert math.ceil((1 - strength) * length) <= window <= length
        changed |= not torch.equal(source, torch.arange(length))
    assert changed


def test_drop_hides_whole_joints_for_the_whole_clip() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 6, 1, 17, 3)
    lengths = torch.full((64,), 6)
    out = augment(x, lengths, replace(OFF, drop=0.3), torch.Generator().manual_seed(1))
    hidden = (out == 0).all(dim=-1)  # [B, T, P, V]
    per_clip = hidden.all(dim=1)  # a hidden joint is hidden in every frame
    assert torch.equal(hidden, per_clip[:, None].expand_as(hidden))
    assert 0.2 < per_clip.float().mean() < 0.4
    assert torch.equal(out[~hidden], x[~hidden])  # joints kept are untouched


# --- the whole-batch version equals the plain definition, bit for bit (issue 27) ---------------


def _bits(t: torch.Tensor) -> bytes:
    return t.contiguous().numpy().tobytes()


def _odd_batch(seed: int):
    """clip_batch with the edge cases of the bit masks: -0.0, joints with only a score,
    present joints at x = 0, a clip of one frame."""
    x, lengths = clip_batch([12, 5, 1, 9], seed=seed)
    x[0, 2, 0, 3, 0] = -0.0
    x[0, 3, 0, 4, :2] = 0.0
    x[0, 4, 0, 5, 0] = 0.0
    return x, lengths


@pytest.mark.slow
def test_streams_and_augment_equal_the_plain_definition_bit_for_bit():
    import features_reference as reference

    from pipeline.learning import features

    knobs = [ALL, replace(ALL, drop=0.3), replace(OFF, flip=1.0), replace(OFF, temporal=0.5)]
    for seed in range(3):
        x, lengths = _odd_batch(seed)
        for streams in (
            ["joint"],
            ["bone", "motion"],
            ["motion", "joint", "bone"],
            ["bone_motion"],
        ):
            for score in (False, True):
                got = features.build_input(x, lengths, streams, score)
                assert _bits(got) == _bits(reference.build_input(x, lengths, streams, score))
        assert _bits(features.mirror(x)) == _bits(reference.mirror(x))
        for knob in knobs:
            mine = augment(x, lengths, knob, torch.Generator().manual_seed(seed))
            theirs = reference.augment(x, lengths, knob, torch.Generator().manual_seed(seed))
            assert _bits(mine) == _bits(theirs), knob


@pytest.mark.slow
def test_to_input_equals_augment_then_streams_of_the_plain_definition():
    import features_reference as reference
    import numpy as np

    from pipeline.core.params import load
    from pipeline.learning.inference import to_input

    cfg = load("model")["model"]
    x, lengths = _odd_batch(7)
    got, _ = to_input(
        x.numpy(), lengths.numpy(), cfg, torch.device("cpu"), ALL, torch.Generator().manual_seed(1)
    )
    augmented = reference.augment(x, lengths, ALL, torch.Generator().manual_seed(1))
    want = reference.build_input(augmented, lengths, cfg.streams, cfg.score)
    assert _bits(got) == _bits(want)
    assert np.isfinite(got.numpy()).all()


@pytest.mark.slow
def test_joints_whose_augmented_values_round_to_zero_count_as_missing_in_the_streams():
    """Augmentation returns which joints it kept, and the streams take that for presence, except
    where a kept joint has a zero score: then its scaled x and y may round to zero, leaving a
    missing joint, as the plain definition (which looks at the augmented values) sees it."""
    import features_reference as reference
    import numpy as np

    from pipeline.core.params import load
    from pipeline.learning.inference import to_input

    cfg = load("model")["model"]
    x, lengths = _odd_batch(3)
    tiny = torch.tensor([1e-45, 0.0, 0.0])  # the smallest float: halved, it rounds to zero
    x[:, :4, :, 5] = tiny  # no score: present by x alone
    knobs = replace(OFF, scale=0.9)  # factors down to 0.1
    gen = torch.Generator().manual_seed(0)
    augmented = reference.augment(x, lengths, knobs, gen)
    vanished = (x[:, :4, :, 5] != 0).any(-1) & (augmented[:, :4, :, 5] == 0).all(-1)
    assert vanished.any() and not vanished.all()  # the case is there, and its opposite
    got, _ = to_input(
        x.numpy(),
        lengths.numpy(),
        cfg,
        torch.device("cpu"),
        knobs,
        torch.Generator().manual_seed(0),
    )
    want = reference.build_input(augmented, lengths, cfg.streams, cfg.score)
    assert _bits(got) == _bits(want)
    assert np.isfinite(got.numpy()).all()
