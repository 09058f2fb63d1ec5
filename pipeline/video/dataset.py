"""Poses of labelled videos -> a PYSKL 2D dataset, the format the extract stage reads.

Labels are the class names in sorted order (0, 1, ...); `frame_dir` is `<class>__<group>__<clip>`
so that `data.class_pattern: '^(.+?)__'` names the classes and `data.group_pattern: '__(.+?)__'`
the groups. Splits come from the CSV, or are made by group: whole groups to `test`, drawn with a
seed until each class (that has two groups or more) holds `test_fraction` of its videos there,
so one person (or scene) is never on both sides.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from pipeline.video.cache import Poses
from pipeline.video.inputs import Video

TRAIN, TEST = "train", "test"


def class_names(videos: Sequence[Video]) -> list[str]:
    """The classes in label order: numerically when every name is a number, else by name."""
    names = sorted({v.label_name for v in videos})
    if all(name.isdigit() for name in names):
        names.sort(key=int)
    return names


def split_by_group(videos: Sequence[Video], test_fraction: float, seed: int) -> dict[str, list]:
    """{'train': [frame_dir], 'test': [frame_dir]}, whole groups on one side."""
    members: dict[str, list[Video]] = defaultdict(list)
    for video in videos:
        members[video.group].append(video)
    per_class: dict[str, int] = defaultdict(int)
    groups_of: dict[str, set[str]] = defaultdict(set)
    for video in videos:
        per_class[video.label_name] += 1
        groups_of[video.label_name].add(video.group)
    wanted = {
        name: max(1, round(test_fraction * count)) if len(groups_of[name]) >= 2 else 0
        for name, count in per_class.items()
    }
    taken: dict[str, int] = defaultdict(int)
    order = sorted(members)
    np.random.default_rng(seed).shuffle(order)
    test = set()
    for group in order:
        classes = {v.label_name for v in members[group]}
        # a group joins test while a class it holds still needs test videos, and only if that
        # leaves every class it holds a train video
        needed = any(taken[c] < wanted[c] for c in classes)
        room = all(
            taken[c] + sum(v.label_name == c for v in members[group]) < per_class[c]
            for c in classes
        )
        if needed and room:
            test.add(group)
            for video in members[group]:
                taken[video.label_name] += 1
    return {
        TRAIN: [v.frame_dir for v in videos if v.group not in test],
        TEST: [v.frame_dir for v in videos if v.group in test],
    }


def splits_of(videos: Sequence[Video], test_fraction: float, seed: int) -> dict[str, list]:
    if videos and videos[0].split is not None:
        named: dict[str, list[str]] = defaultdict(list)
        for video in videos:
            named[str(video.split)].append(video.frame_dir)
        return dict(sorted(named.items()))
    return split_by_group(videos, test_fraction, seed)


def annotation(video: Video, poses: Poses, label: int) -> dict[str, Any]:
    frames = poses.keypoint.shape[1]
    return {
        "frame_dir": video.frame_dir,
        "label": label,
        "keypoint": poses.keypoint.astype(np.float32),
        "keypoint_score": poses.keypoint_score.astype(np.float32),
        "img_shape": tuple(poses.img_shape),
        "original_shape": tuple(poses.img_shape),
        "total_frames": frames,
    }


def dataset(
    videos: Sequence[Video], poses: Sequence[Poses], test_fraction: float, seed: int
) -> dict[str, Any]:
    """The PYSKL dict: {'split': {name: [frame_dir]}, 'annotations': [...]}."""
    labels = {name: i for i, name in enumerate(class_names(videos))}
    annotations = [
        annotation(video, found, labels[video.label_name])
        for video, found in zip(videos, poses, strict=True)
    ]
    return {"split": splits_of(videos, test_fraction, seed), "annotations": annotations}
