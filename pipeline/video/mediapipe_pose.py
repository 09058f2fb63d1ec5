"""MediaPipe Pose (BlazePose) as the default estimator: offline on a CPU, no GPU, no download.

The legacy `mp.solutions.pose` of mediapipe 0.10.14 ships its detector and its full landmark
model in the wheel (model_complexity 1; the lite and heavy models of complexities 0 and 2 are
downloaded at run time, so they are refused here). It finds one person per pass and follows
that person from frame to frame. For a second person the frame is run again with the first
person's box blanked out, through a second tracker: each extra person costs one more pass, and
people who overlap much (a hug) or are small and far away are often missed.

BlazePose's 33 landmarks map onto COCO-17 by index; landmark visibility is the score.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.core.errors import fail
from pipeline.video.estimator import no_people

# COCO-17 (PYSKL's order) from BlazePose's 33 landmarks.
COCO_FROM_BLAZEPOSE = (0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28)
VERSION = "0.10.14"
# The box of a found person is grown by this share of its size before it is blanked out for the
# next pass: landmarks sit inside the body's outline, the pixels of hair and clothes beyond.
MARGIN = 0.15


def _import_mediapipe() -> Any:
    try:
        import mediapipe as mp
    except ImportError as exc:
        raise fail(
            "mediapipe",
            f"the pose estimator is not installed ({exc}); "
            f'install it with `pip install -e ".[video]"` (make installs it)',
        ) from None
    return mp


class MediaPipePose:
    """BlazePose through mediapipe's legacy solution API, `persons` passes per frame."""

    def __init__(
        self,
        persons: int = 1,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        model_complexity: int = 1,
    ) -> None:
        if model_complexity != 1:
            raise fail(
                "model_complexity",
                f"expected 1 (the model the mediapipe wheel ships), found {model_complexity}",
            )
        self.persons = persons
        self.min_detection_confidence = min_detection_confidence
        self.min_tracking_confidence = min_tracking_confidence
        self.model_complexity = model_complexity
        self._passes: list[Any] = []

    def settings(self) -> dict[str, Any]:
        return {
            "estimator": "mediapipe-pose",
            "version": VERSION,
            "persons": self.persons,
            "model_complexity": self.model_complexity,
            "min_detection_confidence": self.min_detection_confidence,
            "min_tracking_confidence": self.min_tracking_confidence,
            "margin": MARGIN,
        }

    def start(self) -> None:
        self.close()
        mp = _import_mediapipe()
        self._passes = [
            mp.solutions.pose.Pose(
                static_image_mode=False,
                model_complexity=self.model_complexity,
                smooth_landmarks=True,
                min_detection_confidence=self.min_detection_confidence,
                min_tracking_confidence=self.min_tracking_confidence,
            )
            for _ in range(self.persons)
        ]

    def detect(self, frame: np.ndarray) -> np.ndarray:
        if not self._passes:
            self.start()
        height, width = frame.shape[:2]
        found = []
        image = frame
        for k, pose in enumerate(self._passes):
            result = pose.process(image)
            if result.pose_landmarks is None:
                break  # a later pass on the same pixels would find no one either
            marks = result.pose_landmarks.landmark
            person = np.array(
                [
                    (marks[i].x * width, marks[i].y * height, marks[i].visibility)
                    for i in COCO_FROM_BLAZEPOSE
                ],
                np.float32,
            )
            # a landmark guessed beyond the frame is not seen: score 0, kept on the border
            outside = (person[:, 0] < 0) | (person[:, 0] > width) | (person[:, 1] < 0)
            outside |= person[:, 1] > height
            person[:, 0] = np.clip(person[:, 0], 0, width)
            person[:, 1] = np.clip(person[:, 1], 0, height)
            person[:, 2] = np.where(outside, 0.0, np.clip(person[:, 2], 0.0, 1.0))
            found.append(person)
            if k + 1 < len(self._passes):
                image = _blank(image if k else image.copy(), person)
        return np.stack(found) if found else no_people()

    def close(self) -> None:
        for pose in self._passes:
            pose.close()
        self._passes = []


def _blank(image: np.ndarray, person: np.ndarray) -> np.ndarray:
    """The image with the person's box (grown by MARGIN) painted in its mean colour."""
    height, width = image.shape[:2]
    (x0, y0), (x1, y1) = person[:, :2].min(0), person[:, :2].max(0)
    dx, dy = (x1 - x0) * MARGIN, (y1 - y0) * MARGIN
    left, right = int(max(0, x0 - dx)), int(min(width, x1 + dx + 1))
    top, bottom = int(max(0, y0 - dy)), int(min(height, y1 + dy + 1))
    if right > left and bottom > top:
        image[top:bottom, left:right] = image[::8, ::8].reshape(-1, 3).mean(0).astype(image.dtype)
    return image
