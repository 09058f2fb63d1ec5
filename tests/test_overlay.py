"""pipeline.viz.overlay: skeletons and the top classes drawn over real frames, as .mp4 or .gif."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import PipelineError
from pipeline.core.skeleton import J
from pipeline.viz import overlay
from pipeline.viz.drawing import PALETTE

pytestmark = pytest.mark.slow  # stages in subprocesses or trained workspaces

FRAMES = 6


def scene() -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Grey 200x100 frames (each a shade apart: GIF writers merge equal frames); one person
    whose left wrist sits at (40, 60) in every frame."""
    frames = [np.full((100, 200, 3), 128 + t, np.uint8) for t in range(FRAMES)]
    keypoint = np.zeros((1, FRAMES, 17, 2), np.float32)
    keypoint[0, :, :, 0] = np.linspace(20, 80, 17)
    keypoint[0, :, :, 1] = np.linspace(10, 90, 17)
    keypoint[0, :, J["left_wrist"]] = (40, 60)
    score = np.ones((1, FRAMES, 17), np.float32)
    return frames, keypoint, score


def near(colour: np.ndarray, want: tuple[int, int, int], tolerance: int = 40) -> bool:
    return bool(np.abs(colour.astype(int) - want).max() <= tolerance)


def test_gif_draws_the_skeleton_over_the_frames(tmp_path: Path) -> None:
    frames, keypoint, score = scene()
    lines = overlay.top_lines({"wave": 0.7, "clap": 0.2, "run": 0.1})
    assert lines == ["1. wave 0.70", "2. clap 0.20", "3. run 0.10"]
    count = overlay.write(tmp_path / "a.gif", frames, keypoint, score, lines, fps=30, width=400)
    assert count == FRAMES // 2  # 30 fps kept near 15
    gif = Image.open(tmp_path / "a.gif")
    assert gif.n_frames == count and gif.size == (320, 160)  # GIFs at most 320 wide
    rgb = np.asarray(gif.convert("RGB"))
    wrist = rgb[round(60 * 1.6), round(40 * 1.6)]
    assert near(wrist, PALETTE["left"]), wrist
    assert near(rgb[150, 300], (128, 128, 128))  # the frame itself, away from the drawing
    assert not near(rgb[5, 5], (128, 128, 128))  # the text band at the top left


def test_mp4_has_every_frame(tmp_path: Path) -> None:
    cv2 = pytest.importorskip("cv2", reason="the video extra is not installed")
    frames, keypoint, score = scene()
    count = overlay.write(tmp_path / "a.mp4", frames, keypoint, score, ["1. wave 0.70"], fps=25)
    assert count == FRAMES
    capture = cv2.VideoCapture(str(tmp_path / "a.mp4"))
    read = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        read.append(frame)
    assert len(read) == FRAMES and read[0].shape == (320, 640, 3)
    wrist = read[0][round(60 * 3.2), round(40 * 3.2)][::-1]  # BGR
    assert near(wrist, PALETTE["left"], 60), wrist
    assert [p.name for p in tmp_path.iterdir()] == ["a.mp4"]  # no temporaries left


def test_other_formats_are_refused(tmp_path: Path) -> None:
    frames, keypoint, score = scene()
    with pytest.raises(PipelineError, match="expected a file name ending in .mp4 or .gif"):
        overlay.write(tmp_path / "a.avi", frames, keypoint, score, [], fps=25)
