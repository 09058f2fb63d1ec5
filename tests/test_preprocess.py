"""The whole-batch preprocessing equals the per-clip definition bit for bit (issue 27)."""

from __future__ import annotations

import dataclasses
import itertools
import zlib

import numpy as np
import preprocess_reference as reference
import pytest

from pipeline.core import params
from pipeline.dataset import preprocess
from pipeline.dataset.subset import DTYPE, Clips


def random_clips(
    rng: np.random.Generator, count: int
) -> list[tuple[np.ndarray, np.ndarray, tuple]]:
    """Clips of every kind the stage meets: 1-3 persons, short and long, hips or shoulders
    never seen, joints at one point (torso length 0), scores around min_score, ties, negative
    scores."""
    clips = []
    for k in range(count):
        m, t = int(rng.integers(1, 4)), int(rng.choice([1, 2, 7, 63, 64, 65, 150, 301]))
        keypoint = rng.normal(150, 60, (m, t, 17, 2))
        score = rng.random((m, t, 17))
        kind = k % 7
        if kind == 1:
            score[:, :, 11:13] = 0.0  # hips never seen: image fallback
        elif kind == 2:
            score[:, :, 5:7] = 0.0  # shoulders never seen
        elif kind == 3:
            keypoint[:] = 100.0  # torso length 0
        elif kind == 4:
            score[:] = 0.5  # persons tied on score
            keypoint = np.round(keypoint)
        elif kind == 5:
            keypoint[..., 0] = -0.0
        elif kind == 6:
            score[:, ::2, 7] = -0.25  # a negative score: below any min_score, kept at 0
        clips.append((keypoint, score, (int(rng.integers(100, 500)), int(rng.integers(100, 700)))))
    return clips


def batch_of(clips: list[tuple[np.ndarray, np.ndarray, tuple]]) -> Clips:
    sizes = [kp.shape[0] * kp.shape[1] for kp, _, _ in clips]
    return Clips(
        keypoint=np.concatenate([kp.astype(DTYPE).reshape(-1, 17, 2) for kp, _, _ in clips]),
        score=np.concatenate([s.astype(DTYPE).reshape(-1, 17) for _, s, _ in clips]),
        start=np.cumsum([0, *sizes[:-1]]).astype(np.int64),
        persons=np.array([kp.shape[0] for kp, _, _ in clips], np.int64),
        frames=np.array([kp.shape[1] for kp, _, _ in clips], np.int64),
        img_hw=np.array([hw for _, _, hw in clips], np.int64),
    )


CONFIGS = list(
    itertools.product(
        ["body", "image", "video_mean"], ["uniform", "head"], ["score", "first"], [1, 2], [0.0, 0.3]
    )
)


@pytest.mark.slow  # 48 cases, about 8 s in all
@pytest.mark.parametrize(("normalize", "sampling", "order", "persons", "min_score"), CONFIGS)
def test_build_clips_equals_the_per_clip_definition_bit_for_bit(
    normalize, sampling, order, persons, min_score
):
    cfg = dataclasses.replace(
        params.load("shards")["shards"],
        normalize=normalize,
        sampling=sampling,
        person_order=order,
        persons=persons,
        min_score=min_score,
    )
    clips = random_clips(np.random.default_rng(len(normalize) + persons), 12)
    for views, hidden in ((1, None), (5, [3, 4])):
        got, lengths = preprocess.build_clips(batch_of(clips), cfg, views, hidden)
        for k, (keypoint, score, hw) in enumerate(clips):
            want, n = reference.clip_views(keypoint, score, hw, cfg, views, hidden)
            assert lengths[k] == n
            assert got[k].tobytes() == want.tobytes(), f"clip {k}: {keypoint.shape}"


def test_clip_views_is_a_batch_of_one():
    cfg = params.load("shards")["shards"]
    keypoint, score, hw = random_clips(np.random.default_rng(5), 1)[0]
    out = np.full((10, cfg.frames, cfg.persons, 17, 3), np.nan, np.float32)
    got, n = preprocess.clip_views(keypoint, score, hw, cfg, 10, None, out)
    want, m = reference.clip_views(keypoint, score, hw, cfg, 10)
    assert got is out and n == m and got.tobytes() == want.tobytes()
    with pytest.raises(ValueError, match="out: expected float32"):
        preprocess.clip_views(keypoint, score, hw, cfg, 10, None, out[:1])


@pytest.mark.parametrize("seed", [0, 7, 2**40])
def test_view_streams_are_keyed_by_the_seed_the_shape_and_the_clips_checksums(seed):
    """The stream `view_rng` draws is default_rng([seed, *shape, crc32 of keypoints, crc32 of
    scores]) however the key is handed over: the shards' test views depend on it."""
    keypoint, score, _ = random_clips(np.random.default_rng(3), 1)[0]
    keypoint, score = keypoint.astype(DTYPE), score.astype(DTYPE)
    key = [seed, *keypoint.shape, zlib.crc32(keypoint), zlib.crc32(score)]
    want = np.random.default_rng(key).random(8)
    assert preprocess.view_rng(keypoint, score, seed).random(8).tobytes() == want.tobytes()
