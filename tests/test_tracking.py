"""pipeline.video.tracking: the people an estimator finds, frame by frame, linked into tracks."""

from __future__ import annotations

import numpy as np

from pipeline.video import tracking


def test_tracks_follow_people_who_swap_places_in_the_list() -> None:
    """Two people, listed in a different order each frame: the tracks follow the boxes."""
    left = np.zeros((17, 3), np.float32)
    left[:, 0], left[:, 1], left[:, 2] = np.linspace(0, 10, 17), np.linspace(0, 30, 17), 0.9
    right = left.copy()
    right[:, 0] += 100
    right[:, 2] = 0.5
    frames = [np.stack([left, right]) if t % 2 else np.stack([right, left]) for t in range(6)]
    frames[3] = frames[3][:1]  # one frame misses someone
    keypoint, score = tracking.track(frames, persons=2)
    assert keypoint.shape == (2, 6, 17, 2)
    assert np.allclose(keypoint[0, :, 0, 0], 0)  # the higher-scored person first
    assert np.allclose(keypoint[1, [0, 1, 2, 4, 5], 0, 0], 100)
    assert np.allclose(score[1, 3], 0) and np.allclose(score[0, 3], 0.9)
    one, _ = tracking.track(frames, persons=1)
    assert one.shape == (1, 6, 17, 2)
    none, _ = tracking.track([np.zeros((0, 17, 3), np.float32)] * 3, persons=2)
    assert none.shape == (0, 3, 17, 2)


def test_a_person_lost_for_a_while_stays_one_track() -> None:
    """Missing for longer than MAX_GAP, then found again nearby: joined into one track; a
    second person elsewhere, seen only at the same time, stays apart."""
    person = np.zeros((17, 3), np.float32)
    person[:, 0], person[:, 1], person[:, 2] = np.linspace(50, 70, 17), np.linspace(0, 60, 17), 1
    other = person.copy()
    other[:, 0] += 300
    gap = tracking.MAX_GAP + 5
    frames = [person[None]] * 5 + [np.zeros((0, 17, 3), np.float32)] * gap
    frames += [np.stack([person + [8, 0, 0], other])] * 5
    keypoint, score = tracking.track(frames, persons=2)
    found = score.max(-1) > 0
    assert found[0].sum() == 10 and found[0, :5].all() and found[0, -5:].all()
    assert found[1].sum() == 5 and np.allclose(keypoint[1, -1, 0, 0], 350)
