"""The COCO-17 skeleton, defined once: joint names, bones (child, parent) and left/right pairs;
and the largest image side a clip's `img_shape` may give."""

from __future__ import annotations

JOINTS: tuple[str, ...] = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
NUM_JOINTS = len(JOINTS)
# Pixels. Every reader of a clip's image size (a pickle, an npz, the subset's index.csv) holds
# it to 1..MAX_IMAGE_SIDE, so what one stage accepts the next reads back.
MAX_IMAGE_SIDE = 2**31
J = {name: i for i, name in enumerate(JOINTS)}

# Each joint's parent in a tree rooted at the nose, as PYSKL's coco layout uses for bone
# features; the root is its own parent so its bone vector is zero.
PARENTS: tuple[int, ...] = (0, 0, 0, 1, 2, 0, 0, 5, 6, 7, 8, 5, 6, 11, 12, 13, 14)
BONES: tuple[tuple[int, int], ...] = tuple((c, p) for c, p in enumerate(PARENTS) if c != p)

LEFT = tuple(i for i, n in enumerate(JOINTS) if n.startswith("left_"))
RIGHT = tuple(J["right_" + JOINTS[i][len("left_") :]] for i in LEFT)
# Index permutation that swaps every left joint with its right twin (for horizontal flips).
FLIP_INDEX: tuple[int, ...] = tuple(
    RIGHT[LEFT.index(i)] if i in LEFT else LEFT[RIGHT.index(i)] if i in RIGHT else i
    for i in range(NUM_JOINTS)
)

LEFT_HIP, RIGHT_HIP = J["left_hip"], J["right_hip"]
LEFT_SHOULDER, RIGHT_SHOULDER = J["left_shoulder"], J["right_shoulder"]
