"""Turning one ragged clip into fixed-size model input: frame sampling, persons, normalization.

Each step is a small function over one clip so the shards stage, `predict`, the tests and the
notebook comparison all use the same code; `clip_views` is the whole of it, from a raw clip as a
PYSKL pickle holds it to what the shards store. Output layout: [views, frames, persons, 17, 3]
float32 with channels (x, y, score), zero after the clip's sampled length and for absent persons.
"""

from __future__ import annotations

import zlib

import numpy as np

from pipeline.core import skeleton
from pipeline.core.params import ShardsParams
from pipeline.dataset.subset import DTYPE

CHANNELS = ("x", "y", "score")


def frame_indices(
    length: int, frames: int, sampling: str, views: int, rng: np.random.Generator | None
) -> np.ndarray:
    """Frame numbers to keep, [views, n] with n = min(length, frames).

    `uniform` splits the clip into `frames` equal segments and takes each segment's middle frame
    (view 0) or a random frame of each segment (views 1..), as PYSKL's UniformSample does at
    test time; clips shorter than `frames` keep every frame instead of repeating any, so the
    true length stays meaningful. `head` keeps the first frames, as the notebook did.
    """
    if sampling == "head" or length <= frames:
        return np.broadcast_to(np.arange(min(length, frames)), (views, min(length, frames)))
    edges = np.linspace(0.0, length, frames + 1)
    starts, widths = edges[:-1], np.diff(edges)
    offsets = np.full((views, frames), 0.5)
    if views > 1:
        offsets[1:] = rng.random((views - 1, frames))
    return np.minimum((starts + offsets * widths).astype(np.int64), length - 1)


def person_order(score: np.ndarray, persons: int, order: str) -> np.ndarray:
    """Indices of the persons to keep: the most confident ones (`score`) or the first stored."""
    if order == "first":
        return np.arange(min(persons, score.shape[0]))
    mean = score.reshape(score.shape[0], -1).astype(np.float32).mean(axis=1)
    return np.argsort(-mean, kind="stable")[:persons]


def _body_frame(
    xy: np.ndarray, score: np.ndarray, threshold: float
) -> tuple[np.ndarray, float] | None:
    """Centre (mean hip midpoint) and scale (median torso length) of one person, if visible."""
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
    """Normalize coordinates [P, T, 17, 2] float32 of one clip, computed over all its frames.

    `image`: centre and half-size of the image, so coordinates fall in [-1, 1].
    `video_mean`: minus each person's per-joint mean over the clip (the notebook's).
    `body`: minus the main person's hip centre, divided by their torso length; clips where the
    hips or shoulders are never seen fall back to `image`.
    """
    h, w = img_hw
    half = np.array([w / 2, h / 2], dtype=np.float32)
    if mode == "video_mean":
        p, t = xy.shape[:2]
        flat = xy.reshape(p, t, -1)  # the notebook's [T, 34] per person, same reduction order
        return (flat - flat.mean(axis=1, keepdims=True)).reshape(xy.shape)
    if mode == "body":
        frame = _body_frame(xy[0], score[0], threshold)
        if frame is not None:
            centre, scale = frame
            return (xy - centre.astype(np.float32)) / np.float32(scale)
    return (xy - half) / half


def rare_joints(visible: np.ndarray, seen: int, min_visibility: float) -> list[int]:
    """Joints detected in fewer than `min_visibility` of the `seen` training person-frames.

    A model cannot learn a joint the training data hardly shows; where another split shows it
    (other people, another camera), it would only add inputs the model never learned to read.
    """
    if seen == 0:
        return []
    return [int(j) for j in np.flatnonzero(visible / seen < min_visibility)]


def build_clip(
    keypoint: np.ndarray,
    keypoint_score: np.ndarray,
    img_hw: tuple[int, int],
    shards_cfg: ShardsParams,
    views: int,
    rng: np.random.Generator | None = None,
    hidden_joints: list[int] | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """One clip [M, T, 17, 2] + scores [M, T, 17] -> ([views, frames, persons, 17, 3], length).

    `hidden_joints` are zeroed everywhere, as if never detected. `out`, a float32 array of
    that shape, is filled and returned instead of a new one: the shards stage reuses one
    buffer for all its clips, sparing an allocation (and its page faults) per clip."""
    keep = person_order(keypoint_score, shards_cfg.persons, shards_cfg.person_order)
    xy = keypoint[keep].astype(np.float32)
    score = keypoint_score[keep].astype(np.float32)
    xy = normalize(xy, score, shards_cfg.normalize, img_hw, shards_cfg.min_score)
    # Zero undetected and hidden joints before sampling frames rather than in the output:
    # the same values end up zero, but with 10 test views the output is several times larger.
    if shards_cfg.min_score > 0:
        low = score < shards_cfg.min_score
        np.copyto(xy, 0.0, where=low[..., None])
        np.copyto(score, 0.0, where=low)
    if hidden_joints:
        xy[:, :, hidden_joints] = 0.0
        score[:, :, hidden_joints] = 0.0
    idx = frame_indices(xy.shape[1], shards_cfg.frames, shards_cfg.sampling, views, rng)
    n, p = idx.shape[1], len(keep)
    shape = (views, shards_cfg.frames, shards_cfg.persons, skeleton.NUM_JOINTS, 3)
    if out is None:
        out = np.zeros(shape, np.float32)
    else:
        if out.shape != shape or out.dtype != np.float32:
            raise ValueError(f"out: expected float32 {shape}, found {out.dtype} {out.shape}")
        # only what the clip does not fill below: frames past its length, absent persons
        out[:, n:] = 0.0
        out[:, :n, p:] = 0.0
    out[:, :n, :p, :, :2] = xy[:, idx].transpose(1, 2, 0, 3, 4)
    out[:, :n, :p, :, 2] = score[:, idx].transpose(1, 2, 0, 3)
    return out, n


def views_for(split: str, shards_cfg: ShardsParams) -> int:
    """Sampled views stored per clip: several of train (a different one each epoch) and test
    (averaged at test time), one of val; head sampling has only one."""
    if shards_cfg.sampling != "uniform":
        return 1
    return {"train": shards_cfg.train_views, "test": shards_cfg.test_views}.get(split, 1)


def view_rng(keypoint: np.ndarray, keypoint_score: np.ndarray, seed: int) -> np.random.Generator:
    """The random stream of one clip's sampled views, keyed by `seed` and the clip's own values
    rather than its place in the subset: a clip gets the same views wherever it is preprocessed,
    in the shards stage or by `predict` from a raw pickle. (CRC-32 is ample for a key, and fast
    enough to cost the shards stage nothing noticeable.)"""
    shape = [int(n) for n in keypoint.shape]
    return np.random.default_rng(
        [
            seed,
            *shape,
            zlib.crc32(np.ascontiguousarray(keypoint)),
            zlib.crc32(np.ascontiguousarray(keypoint_score)),
        ]
    )


def clip_views(
    keypoint: np.ndarray,
    keypoint_score: np.ndarray,
    img_hw: tuple[int, int],
    shards_cfg: ShardsParams,
    views: int,
    hidden_joints: list[int] | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """A raw clip as the shards store it: its values rounded to the subset's float16, then
    `build_clip` with `views` sampled views drawn from `view_rng`."""
    keypoint = keypoint.astype(DTYPE, copy=False)
    keypoint_score = keypoint_score.astype(DTYPE, copy=False)
    rng = view_rng(keypoint, keypoint_score, shards_cfg.seed) if views > 1 else None
    return build_clip(keypoint, keypoint_score, img_hw, shards_cfg, views, rng, hidden_joints, out)
