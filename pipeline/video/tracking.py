"""Linking the people an estimator finds frame by frame into tracks, by the overlap of their boxes.

Each new frame's people are matched to the tracks greedily, best box IoU first (a match needs
IoU >= MIN_IOU with the track's last box, seen at most MAX_GAP frames ago); people left over
start new tracks. Tracks that never share a frame and meet where one ends and the other
begins (boxes overlapping, or centres nearer than the larger box's diagonal) are then joined:
a person the estimator lost for a while, or whose box jumped, stays one track. The `persons`
tracks kept are those with the highest summed scores (the
people most seen, most surely), in PYSKL's layout: frames where a track has no one are zeros.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pipeline.video.estimator import NUM_JOINTS

MIN_IOU = 0.1
MAX_GAP = 15  # frames a track may miss its person and still be matched again


def box(person: np.ndarray) -> np.ndarray:
    """x0, y0, x1, y1 of a person's joints [17, 3] (all of them: scores do not gate it)."""
    return np.concatenate([person[:, :2].min(0), person[:, :2].max(0)])


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None).prod()
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return float(inter / union) if union > 0 else 0.0


def track(detections: Sequence[np.ndarray], persons: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame people ([n, 17, 3] each) -> keypoint [M, T, 17, 2] and keypoint_score
    [M, T, 17], float32, M <= persons (0 when no one was ever found)."""
    frames = len(detections)
    tracks: list[dict[int, np.ndarray]] = []  # frame -> person [17, 3]
    last: list[tuple[int, np.ndarray]] = []  # (frame, box) each track was last seen
    for t, people in enumerate(detections):
        boxes = [box(p) for p in people]
        pairs = sorted(
            (
                (iou(b, last[k][1]), k, j)
                for k in range(len(tracks))
                if t - last[k][0] <= MAX_GAP
                for j, b in enumerate(boxes)
            ),
            reverse=True,
        )
        used_tracks, used_people = set(), set()
        for overlap, k, j in pairs:
            if overlap < MIN_IOU:
                break
            if k in used_tracks or j in used_people:
                continue
            used_tracks.add(k)
            used_people.add(j)
            tracks[k][t] = people[j]
            last[k] = (t, boxes[j])
        for j, person in enumerate(people):
            if j not in used_people:
                tracks.append({t: person})
                last.append((t, boxes[j]))
    tracks = stitch(tracks)
    strength = [sum(float(p[:, 2].sum()) for p in seen.values()) for seen in tracks]
    kept = sorted(range(len(tracks)), key=lambda k: (-strength[k], k))[:persons]
    keypoint = np.zeros((len(kept), frames, NUM_JOINTS, 2), np.float32)
    score = np.zeros((len(kept), frames, NUM_JOINTS), np.float32)
    for m, k in enumerate(kept):
        for t, person in tracks[k].items():
            keypoint[m, t] = person[:, :2]
            score[m, t] = person[:, 2]
    return keypoint, score


def _near(a: np.ndarray, b: np.ndarray) -> bool:
    if iou(a, b) >= MIN_IOU:
        return True
    reach = max(np.hypot(*(a[2:] - a[:2])), np.hypot(*(b[2:] - b[:2])))
    return float(np.hypot(*((a[:2] + a[2:]) - (b[:2] + b[2:])) / 2)) < reach


def stitch(tracks: list[dict[int, np.ndarray]]) -> list[dict[int, np.ndarray]]:
    """Join tracks with disjoint frames that meet (see the module docstring), the strongest
    first, until none can be joined."""
    tracks = sorted(tracks, key=lambda seen: -sum(float(p[:, 2].sum()) for p in seen.values()))
    joined = True
    while joined:
        joined = False
        for a in range(len(tracks)):
            for b in range(a + 1, len(tracks)):
                one, two = tracks[a], tracks[b]
                if one.keys() & two.keys():
                    continue
                first, second = (one, two) if min(one) < min(two) else (two, one)
                end, start = max(first), min(second)
                if start < end:  # interleaved in time: two people taking turns
                    continue
                if _near(box(first[end]), box(second[start])):
                    tracks[a] = {**one, **two}
                    del tracks[b]
                    joined = True
                    break
            if joined:
                break
    return tracks
