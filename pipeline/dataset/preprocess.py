"""Turning ragged clips into fixed-size model input: frame sampling, persons, normalization.

`build_clips` does it for a batch of clips at once, with whole-batch numpy operations rather
than a loop of small ones per clip (which cost the shards stage most of its time); `predict`
(`clip_views`, a batch of one) and the tests use it, the shards stage its two halves
(`build_table`, then the gather a few clips at a time). Output layout:
[clips, views, frames, persons, 17, 3] float32 with channels (x, y, score), zero after each
clip's sampled length and for absent persons.

Every value equals what the plain per-clip definition gives (tests/preprocess_reference.py,
checked bit for bit by tests/test_preprocess.py): elementwise steps commute with picking frames,
so only the per-clip statistics (person order, body centre and scale, video mean) read all of
a clip's frames, and each uses the reduction order numpy's per-clip call would.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

from pipeline.core import skeleton
from pipeline.core.params import ShardsParams
from pipeline.dataset.subset import Clips

CHANNELS = ("x", "y", "score")
# each pair is stored side by side, which `_body_frames` reads as one unit
assert skeleton.RIGHT_HIP == skeleton.LEFT_HIP + 1
assert skeleton.RIGHT_SHOULDER == skeleton.LEFT_SHOULDER + 1


def person_order(score: np.ndarray, persons: int, order: str) -> np.ndarray:
    """Indices of the persons to keep: the most confident ones (`score`) or the first stored."""
    if order == "first":
        return np.arange(min(persons, score.shape[0]))
    mean = score.reshape(score.shape[0], -1).astype(np.float32).mean(axis=1)
    return np.argsort(-mean, kind="stable")[:persons]


def rare_joints(visible: np.ndarray, seen: int, min_visibility: float) -> list[int]:
    """Joints detected in fewer than `min_visibility` of the `seen` training person-frames.

    A model cannot learn a joint the training data hardly shows; where another split shows it
    (other people, another camera), it would only add inputs the model never learned to read.
    """
    if seen == 0:
        return []
    return [int(j) for j in np.flatnonzero(visible / seen < min_visibility)]


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
    words = [
        seed,
        *(int(n) for n in keypoint.shape),
        zlib.crc32(np.ascontiguousarray(keypoint)),
        zlib.crc32(np.ascontiguousarray(keypoint_score)),
    ]
    # words below 2**32 seed the same stream as a list or a uint32 array; the array skips
    # SeedSequence's per-word conversion, half the time of a test clip's view stream
    entropy = np.array(words, np.uint32) if 0 <= min(words) and max(words) < 2**32 else words
    return np.random.default_rng(entropy)


def _kept_persons(clips: Clips, persons: int, order: str) -> np.ndarray:
    """[clips, persons]: the stored person behind each kept slot (padded past a clip's count).

    `score` order: the persons with the highest mean score first, ties in stored order, as
    `person_order` ranks them in float32. The means are taken here in float64 for all clips at
    once (exact but for rounding: the scores are float16); a clip whose ranking hangs on a gap
    that float32 rounding could close (relative 1e-4, while a float32 sum of n >= 0 values errs
    by about log2(n) * 6e-8) is ranked by `person_order` itself."""
    n = len(clips)
    keep = np.broadcast_to(np.arange(persons), (n, persons)).copy()
    several = np.flatnonzero(clips.persons > 1)  # one person needs no ordering
    if order != "score" or len(several) == 0:
        return keep
    if (clips.score.view(np.uint16) > 0x8000).any():  # a negative score: no bound holds
        _rank_exactly(clips, several, persons, keep)
        return keep
    m, t, start = clips.persons[several], clips.frames[several], clips.start[several]
    # one entry per stored person of these clips: its clip, its place in it, its first row
    owner = np.repeat(np.arange(len(several)), m)
    person = np.arange(len(owner)) - (np.cumsum(m) - m)[owner]
    first = start[owner] + person * t[owner]
    # each row's sum, exact in float64 (17 float16 values need at most 45 bits), by einsum:
    # its loop is several times as fast as sum(axis=1) over rows this short
    per_row = np.empty(len(clips.score) + 1)
    np.einsum("ij->i", clips.score, dtype=np.float64, out=per_row[:-1])
    per_row[-1] = 0.0
    bounds = np.stack([first, first + t[owner]], axis=1).ravel()
    mean = np.add.reduceat(per_row, bounds)[::2] / (t[owner] * clips.score.shape[1])
    # ranked by clip, then mean descending, then stored person: each clip keeps its block,
    # so `person` also numbers the ranks within a clip
    ranked = np.lexsort((person, -mean, owner))
    ordered = mean[ranked]
    # a gap between neighbours that decides the kept persons or their order must be clear
    close = np.abs(np.diff(ordered)) <= 1e-4 * np.abs(ordered[1:]) + 1e-30
    unsure = np.unique(owner[1:][close & (owner[:-1] == owner[1:]) & (person[1:] <= persons)])
    take = (person < persons) & ~np.isin(owner, unsure)
    keep[several[owner[take]], person[take]] = person[ranked][take]
    _rank_exactly(clips, several[unsure], persons, keep)
    return keep


def _rank_exactly(clips: Clips, chosen: np.ndarray, persons: int, keep: np.ndarray) -> None:
    """keep[k] = `person_order` of clip k's scores, for each of `chosen`."""
    for k in chosen:
        m, t, start = int(clips.persons[k]), int(clips.frames[k]), int(clips.start[k])
        order = person_order(clips.score[start : start + m * t].reshape(m, t, -1), persons, "score")
        keep[k, : len(order)] = order


def _frame_indices(clips: Clips, frames: int, sampling: str, views: int, seed: int) -> np.ndarray:
    """[clips, views, frames]: the frame kept in each slot (the first min(T, frames) are used).

    `uniform` splits a clip into `frames` equal segments and takes each segment's middle frame
    (view 0) or a random frame of each segment (views 1..), as PYSKL's UniformSample does at
    test time; clips shorter than `frames` keep every frame instead of repeating any, so the
    true length stays meaningful. `head` keeps the first frames, as the notebook did. The
    segment edges are np.linspace(0, T, frames + 1), written out so one expression serves
    every clip."""
    t = clips.frames
    idx = np.broadcast_to(np.arange(frames), (len(clips), views, frames)).copy()
    long = np.flatnonzero(t > frames) if sampling == "uniform" else np.empty(0, np.int64)
    if len(long) == 0:
        return idx
    edges = np.arange(frames + 1, dtype=np.float64) * (t[long].astype(np.float64) / frames)[:, None]
    edges[:, -1] = t[long]
    starts, widths = edges[:, :-1], np.diff(edges, axis=1)
    offsets = np.full((len(long), views, frames), 0.5)
    if views > 1:
        for k, c in enumerate(long):
            m, tc, start = int(clips.persons[c]), int(t[c]), int(clips.start[c])
            rows = slice(start, start + m * tc)
            keypoint = clips.keypoint[rows].reshape(m, tc, skeleton.NUM_JOINTS, 2)
            score = clips.score[rows].reshape(m, tc, skeleton.NUM_JOINTS)
            offsets[k, 1:] = view_rng(keypoint, score, seed).random((views - 1, frames))
    sampled = (starts[:, None] + offsets * widths[:, None]).astype(np.int64)
    idx[long] = np.minimum(sampled, (t[long] - 1)[:, None, None])
    return idx


def _joint_pair(values: np.ndarray, joint: int, rows: np.ndarray) -> np.ndarray:
    """values[rows, joint : joint + 2] as float32 [len(rows), 2 * channels]: the two joints'
    values are adjacent in a row, so each row's are gathered as one 4- or 8-byte unit."""
    values = np.ascontiguousarray(values)
    width = 2 * values.itemsize * math.prod(values.shape[2:])
    unit = np.ndarray(
        (len(values),),
        f"<u{width}",
        buffer=values,
        offset=joint * width // 2,
        strides=values.strides[:1],
    )
    return unit[rows].view(values.dtype).reshape(len(rows), -1).astype(np.float32)


def _body_frames(
    clips: Clips, first: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre (mean hip midpoint) and scale (median torso length) of each clip's main person,
    and whether they were seen (hips in some frame, and hips with shoulders in some frame, at a
    torso length above 1e-3).

    Per clip this is hip_mid[hips].mean(axis=0), a sequential float32 sum, and np.median of
    the torso lengths; here both over all clips' frames at once: np.add.at sums in index order
    from 0.0 as numpy's sum does (so all -0.0 sums to 0.0), and the median reads a sort by
    clip. Only the hips and shoulders are read."""
    n, t = len(clips), clips.frames
    clip_of = np.repeat(np.arange(n), t)
    frame = np.arange(len(clip_of)) - (np.cumsum(t) - t)[clip_of]
    rows = (clips.start + first * t)[clip_of] + frame
    # [frames, 4]: left x, left y, right x, right y (scores: left, right)
    hip = _joint_pair(clips.keypoint, skeleton.LEFT_HIP, rows)
    shoulder = _joint_pair(clips.keypoint, skeleton.LEFT_SHOULDER, rows)
    hip_seen = _joint_pair(clips.score, skeleton.LEFT_HIP, rows) > threshold
    shoulder_seen = _joint_pair(clips.score, skeleton.LEFT_SHOULDER, rows) > threshold
    hips = hip_seen[:, 0] & hip_seen[:, 1]
    both = hips & shoulder_seen[:, 0] & shoulder_seen[:, 1]
    hip_x, hip_y = (hip[:, 0] + hip[:, 2]) / 2, (hip[:, 1] + hip[:, 3]) / 2
    shoulder_x, shoulder_y = (
        (shoulder[:, 0] + shoulder[:, 2]) / 2,
        (shoulder[:, 1] + shoulder[:, 3]) / 2,
    )
    owner = clip_of[hips]
    count = np.bincount(owner, minlength=n)
    total = np.zeros((2, n), np.float32)
    np.add.at(total[0], owner, hip_x[hips])
    np.add.at(total[1], owner, hip_y[hips])
    centre = (total.T.astype(np.float64) / np.maximum(count, 1)[:, None]).astype(np.float32)
    torso_x = shoulder_x[both] - hip_x[both]
    torso_y = shoulder_y[both] - hip_y[both]
    lengths = np.sqrt(torso_x * torso_x + torso_y * torso_y)
    owner = clip_of[both]
    # sorted by clip, then length: lengths are >= 0, so their bits sort as the values do
    key = np.sort((owner.astype(np.uint64) << 32) | lengths.view(np.uint32))
    ordered = np.append((key & 0xFFFFFFFF).astype(np.uint32).view(np.float32), np.float32(0))
    k = np.bincount(owner, minlength=n)
    base = np.cumsum(k) - k
    a = ordered[np.where(k > 0, base + (k - 1) // 2, len(lengths))]
    b = ordered[np.where(k > 0, base + k // 2, len(lengths))]
    median = np.where(k % 2 == 1, a, (a + b) / np.float32(2))
    seen = (count > 0) & (k > 0) & (median.astype(np.float64) > 1e-3)
    return centre, median, seen


def _normalization(
    clips: Clips, keep: np.ndarray, shards_cfg: ShardsParams
) -> tuple[np.ndarray, np.ndarray]:
    """Per clip and stored person: (sub, div) [clips * (persons stored or 1), 17 * 2], so that
    a row's normalized coordinates are (xy - sub) / div (x, y alternating, as stored); persons
    not kept get anything. The score is left as it is.

    `image`: centre and half-size of the image, so coordinates fall in [-1, 1].
    `video_mean`: minus each person's per-joint mean over the clip (the notebook's).
    `body`: minus the main person's hip centre, divided by their torso length; clips where the
    hips or shoulders are never seen fall back to `image`.
    Statistics are over all of a clip's frames, before any joint is zeroed."""
    n, persons = keep.shape
    joints = skeleton.NUM_JOINTS
    if shards_cfg.normalize == "video_mean":
        stored = int(clips.persons.max())
        sub = np.zeros((n, stored, joints * 2), np.float32)
        for c in range(n):
            m, t, start = int(clips.persons[c]), int(clips.frames[c]), int(clips.start[c])
            chosen = keep[c, : min(m, persons)]
            rows = start + (chosen[:, None] * t + np.arange(t))  # [p, t]
            # the notebook's [T, 34] per person, same reduction order
            flat = clips.keypoint[rows].astype(np.float32).reshape(len(chosen), t, -1)
            sub[c, chosen] = flat.mean(axis=1)
        return sub.reshape(n * stored, -1), np.ones((n * stored, joints * 2), np.float32)
    sub = (clips.img_hw[:, ::-1] / 2).astype(np.float32)  # w/2, h/2
    div = sub.copy()
    if shards_cfg.normalize == "body":
        centre, scale, seen = _body_frames(clips, keep[:, 0], shards_cfg.min_score)
        sub[seen] = centre[seen]
        div[seen] = scale[seen][:, None]
    return np.tile(sub, joints), np.tile(div, joints)


# a table row's joint: x and y as one 8-byte unit, then the score (float32 [17, 3] as stored)
_JOINT = np.dtype({"names": ["xy", "score"], "formats": ["<u8", "<f4"], "offsets": [0, 8]})


def build_clips(
    clips: Clips,
    shards_cfg: ShardsParams,
    views: int,
    hidden_joints: list[int] | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Clips -> ([clips, views, frames, persons, 17, 3] float32, sampled lengths [clips]):
    `build_table` gathered, into `out` when given (a C-contiguous float32 array of that
    shape)."""
    frames, persons, joints = shards_cfg.frames, shards_cfg.persons, skeleton.NUM_JOINTS
    shape = (len(clips), views, frames, persons, joints, 3)
    if out is None:
        out = np.empty(shape, np.float32)
    elif out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out: expected float32 {shape}, found {out.dtype} {out.shape}")
    table, slots, lengths = build_table(clips, shards_cfg, views, hidden_joints)
    np.take(table, slots, axis=0, out=out, mode="clip")
    return out, lengths


def build_table(
    clips: Clips,
    shards_cfg: ShardsParams,
    views: int,
    hidden_joints: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Clips -> (table [rows, 17, 3] float32, slots [clips, views, frames, persons], sampled
    lengths [clips]): the clips as the shards store them are np.take(table, slots, axis=0).

    Views 1.. of a clip longer than `frames` are drawn from its `view_rng`. Joints scored
    below `min_score` and `hidden_joints` are zeroed (x, y and score), as if never detected.
    Each subset row the output uses is normalized once, into the table, whose last row is
    zeros for the empty slots. The gather is left to the caller, so that the shards stage
    can gather and write a few clips at a time while they are in the CPU's cache."""
    frames, persons = shards_cfg.frames, shards_cfg.persons
    n = len(clips)
    lengths = np.minimum(clips.frames, frames)
    if n == 0:
        empty = np.zeros((1, skeleton.NUM_JOINTS, 3), np.float32)
        return empty, np.zeros((0, views, frames, persons), np.int64), lengths
    keep = _kept_persons(clips, persons, shards_cfg.person_order)
    idx = _frame_indices(clips, frames, shards_cfg.sampling, views, shards_cfg.seed)
    sub, div = _normalization(clips, keep, shards_cfg)
    # the subset row behind each (clip, view, frame, person) slot, and whether it is filled
    filled = (np.arange(frames)[None, None, :, None] < lengths[:, None, None, None]) & (
        np.arange(persons) < np.minimum(clips.persons, persons)[:, None, None, None]
    )
    t = clips.frames[:, None, None, None]
    start = clips.start[:, None, None, None]
    rows = np.where(filled, start + keep[:, None, None] * t + idx[..., None], 0)
    filled = np.broadcast_to(filled, rows.shape)
    used = np.zeros(len(clips.score), bool)
    used[rows[filled]] = True
    needed = np.flatnonzero(used)
    clip_of = np.searchsorted(clips.start, needed, side="right") - 1
    group = clip_of  # each row's (sub, div) row: its clip's, or its clip's person's
    if len(sub) > n:
        stored = len(sub) // n
        group = clip_of * stored + (needed - clips.start[clip_of]) // clips.frames[clip_of]
    table = _table(clips, needed, group, (sub, div), shards_cfg.min_score, hidden_joints)
    position = np.cumsum(used) - 1
    return table, np.where(filled, position[rows], len(needed)), lengths


_TABLE_STEP = 2048  # table rows built per step: the step's arrays (about 1 MB) stay in cache


def _table(
    clips: Clips,
    needed: np.ndarray,
    group: np.ndarray,
    normalization: tuple[np.ndarray, np.ndarray],
    min_score: float,
    hidden_joints: list[int] | None,
) -> np.ndarray:
    """[len(needed) + 1, 17, 3]: subset rows `needed`, row i normalized by row group[i] of
    (sub, div), joints zeroed where unseen; the last row zeros.

    Coordinates and scores are converted, normalized and zeroed apart, each step one pass
    over contiguous data, then interleaved (numpy's loops over the 2 coordinates of a
    [rows, 17, 3] table cost many times a contiguous pass); a few thousand rows at a time,
    so that all but the table itself stays in the CPU's cache."""
    k, joints = len(needed), skeleton.NUM_JOINTS
    sub, div = normalization
    table = np.empty((k + 1, joints), _JOINT)
    step = max(1, min(k, _TABLE_STEP))
    keypoint = np.empty((step, joints, 2), clips.keypoint.dtype)
    score16 = np.empty((step, joints), clips.score.dtype)
    xy, by = np.empty((step, 2 * joints), np.float32), np.empty((step, 2 * joints), np.float32)
    score = np.empty((step, joints), np.float32)
    unseen = np.zeros((step, joints), bool)
    for first in range(0, k, step):
        m = min(step, k - first)
        rows, groups = needed[first : first + m], group[first : first + m]
        np.take(clips.keypoint, rows, axis=0, out=keypoint[:m], mode="clip")
        np.copyto(xy[:m], keypoint[:m].reshape(m, -1))
        np.subtract(xy[:m], np.take(sub, groups, axis=0, out=by[:m], mode="clip"), out=xy[:m])
        np.divide(xy[:m], np.take(div, groups, axis=0, out=by[:m], mode="clip"), out=xy[:m])
        np.take(clips.score, rows, axis=0, out=score16[:m], mode="clip")
        np.copyto(score[:m], score16[:m])
        pairs = xy[:m].view(np.uint64)  # [m, 17]: a joint's x and y, zeroed together
        if min_score > 0 or hidden_joints:
            if min_score > 0:  # 0 zeroes none, as in the per-clip definition: not even < 0
                np.less(score[:m], min_score, out=unseen[:m])
            if hidden_joints:
                unseen[:m, hidden_joints] = True
            np.copyto(pairs, 0, where=unseen[:m])
            np.copyto(score[:m], 0.0, where=unseen[:m])
        table["xy"][first : first + m] = pairs
        table["score"][first : first + m] = score[:m]
    flat = table.view(np.float32).reshape(k + 1, joints, 3)
    flat[k] = 0.0
    return flat


def clip_views(
    keypoint: np.ndarray,
    keypoint_score: np.ndarray,
    img_hw: tuple[int, int],
    shards_cfg: ShardsParams,
    views: int,
    hidden_joints: list[int] | None = None,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """One raw clip [M, T, 17, 2] + scores [M, T, 17] as the shards store it: its values rounded
    to the subset's float16, then `build_clips` -> ([views, frames, persons, 17, 3], length).
    `out`, a float32 array of that shape, is filled and returned instead of a new one."""
    clip = Clips.one(keypoint, keypoint_score, img_hw)
    shape = (views, shards_cfg.frames, shards_cfg.persons, skeleton.NUM_JOINTS, 3)
    if out is not None and (out.shape != shape or out.dtype != np.float32):
        raise ValueError(f"out: expected float32 {shape}, found {out.dtype} {out.shape}")
    built, lengths = build_clips(clip, shards_cfg, views, hidden_joints)
    if out is None:
        return built[0], int(lengths[0])
    out[...] = built[0]
    return out, int(lengths[0])
