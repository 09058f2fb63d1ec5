"""The pose estimator interface: frames in, COCO-17 keypoints and scores out.

An estimator sees one video's frames in order (RGB, uint8, [height, width, 3]) and returns, for
each frame, the people it found as an array [people, 17, 3]: x and y in that frame's pixels and a
score in [0, 1] per joint. `tracking.track` then links the people of successive frames into at
most `persons` tracks, so an estimator that finds every person in a frame (a detector and a
top-down pose model, say) plugs in without touching the rest. `settings` names everything that
changes its output: the per-video cache is keyed by it.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

NUM_JOINTS = 17


class Estimator(Protocol):
    """What `pipeline.video` needs of a pose estimator."""

    def settings(self) -> dict[str, Any]:
        """Its name, version and every setting that changes its output (JSON values)."""
        ...

    def start(self) -> None:
        """Forget the previous video (tracking state): the next frame starts a new one."""
        ...

    def detect(self, frame: np.ndarray) -> np.ndarray:
        """The people in one RGB frame: [people, 17, 3] of x, y (pixels) and score."""
        ...

    def close(self) -> None: ...


def no_people() -> np.ndarray:
    return np.zeros((0, NUM_JOINTS, 3), np.float32)
