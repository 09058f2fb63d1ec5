"""The per-clip definition of the shards' preprocessing: the oracle for pipeline.dataset.preprocess.

This is the code the shards stage ran clip by clip before its whole-batch rewrite (issue 27):
plain, one small numpy step at a time. tests/test_preprocess.py checks `build_clips` against it
bit for bit; the function-level tests of test_shards.py read it to say what each step means.
"""

from __future__ import annotations

import numpy as np

from pipeline.core import skeleton
from pipeline.core.params import ShardsParams
from pipeline.dataset.preprocess import person_order, view_rng
from pipeline.dataset.subset import DTYPE


def frame_indices(
    length: int, frames: int, sampling: str, views: int, rng: np.random.Generator | None
) -> np.ndarray:
    """Frame numbers to keep, [views, n] with n = min(length, frames)."""
    if sampling == "head" or length <= frames:
        return np.broadcast_to(np.arange(min(length, frames)), (views, min(length, frames)))
    edges = np.linspace(0.0, length, frames + 1)
    starts, widths = edges[:-1], np.diff(edges)
    offsets = np.full((views, frames), 0.5)
    if views > 1:
        offsets[1:] = rng.random((views - 1, frames))
    return np.minimum((starts + offsets * widths).astype(np.int64), length - 1)


def _body_frame(
    xy: np.ndarray, score: np.ndarray, threshold: float
) -> tuple[np.ndarray, float] | None:
    hips = (score[:, skeleton.LEFT_HIP] > threshold) & (score[:, skeleton.RIGHT_HIP] > threshold)
    shoulders = (score[:, skeleton.LEFT_SHOULDER] > threshold) & (
        score[:, skeleton.RIGHT_SHOULDER] > threshold
    )
    if not hips.any():
        return None
    hip_mid = (xy[:, skeleton.LEFT_HIP] + xy[:, skeleton.RIGHT_HIP]) / 2
    centre = hip_mid[hips].mean(axis=0)
    both = hips & shoulders
    if not both.any():
        return None
    shoulder_mid = (xy[:, skeleton.LEFT_SHOULDER] + xy[:, skeleton.RIGHT_SHOULDER]) / 2
    scale = float(np.median(np.linalg.norm(shoulder_mid[both] - hip_mid[both], axis=1)))
    return (centre, scale) if scale > 1e-3 else None


def normalize(
    xy: np.ndarray, score: np.ndarray, mode: str, img_hw: tuple[int, int], threshold: float
) -> np.ndarray:
    """Normalize coordinates [P, T, 17, 2] float32 of one clip, computed over all its frames."""
    h, w = img_hw
    half = np.array([w / 2, h / 2], dtype=np.float32)
    if mode == "video_mean":
        p, t = xy.shape[:2]
        flat = xy.reshape(p, t, -1)
        return (flat - flat.mean(axis=1, keepdims=True)).reshape(xy.shape)
    if mode == "body":
        frame = _body_frame(xy[0], score[0], threshold)
        if frame is not None:
            centre, scale = frame
            return (xy - centre.astype(np.float32)) / np.float32(scale)
    return (xy - half) / half


def build_clip(
    keypoint: np.ndarray,
    keypoint_score: np.ndarray,
    img_hw: tuple[int, int],
    shards_cfg: ShardsParams,
    views: int,
    rng: np.random.Generator | None = None,
    hidden_joints: list[int] | None = None,
) -> tuple[np.ndarray, int]:
    """One clip [M, T, 17, 2] + scores [M, T, 17] -> ([views, frames, persons, 17, 3], length)."""
    keep = person_order(keypoint_score, shards_cfg.persons, shards_cfg.person_order)
    xy = keypoint[keep].astype(np.float32)
    score = keypoint_score[keep].astype(np.float32)
    xy = normalize(xy, score, shards_cfg.normalize, img_hw, shards_cfg.min_score)
    if shards_cfg.min_score > 0:
        low = score < shards_cfg.min_score
        np.copyto(xy, 0.0, where=low[..., None])
        np.copyto(score, 0.0, where=low)
    if hidden_joints:
        xy[:, :, hidden_joints] = 0.0
        score[:, :, hidden_joints] = 0.0
    idx = frame_indices(xy.shape[1], shards_cfg.frames, shards_cfg.sampling, views, rng)
    n, p = idx.shape[1], len(keep)
    out = np.zeros(
        (views, shards_cfg.frames, shards_cfg.persons, skeleton.NUM_JOINTS, 3), np.float32
    )
    out[:, :n, :p, :, :2] = xy[:, idx].transpose(1, 2, 0, 3, 4)
    out[:, :n, :p, :, 2] = score[:, idx].transpose(1, 2, 0, 3)
    return out, n


def clip_views(
    keypoint: np.ndarray,
    keypoint_score: np.ndarray,
    img_hw: tuple[int, int],
    shards_cfg: ShardsParams,
    views: int,
    hidden_joints: list[int] | None = None,
) -> tuple[np.ndarray, int]:
    """A raw clip rounded to float16, then `build_clip` with views drawn from `view_rng`."""
    keypoint = keypoint.astype(DTYPE, copy=False)
    keypoint_score = keypoint_score.astype(DTYPE, copy=False)
    rng = view_rng(keypoint, keypoint_score, shards_cfg.seed) if views > 1 else None
    return build_clip(keypoint, keypoint_score, img_hw, shards_cfg, views, rng, hidden_joints)
