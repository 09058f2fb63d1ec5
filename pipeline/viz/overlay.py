"""A prediction drawn over a video's own frames: every person's COCO-17 skeleton (left side
blue, right side orange, as in the skeleton GIFs of `pipeline.viz.drawing`) and the top classes
with their probabilities, written as an .mp4 (OpenCV, mp4v) or a .gif (Pillow), atomically.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.core.errors import fail
from pipeline.core.skeleton import BONES, LEFT, RIGHT
from pipeline.files.atomic import atomic_path
from pipeline.viz.drawing import MIN_SCORE, PALETTE, _font, save_gif

FORMATS = (".mp4", ".gif")
GIF_FPS_MAX = 15.0  # a GIF keeps every n-th frame to stay near this rate (and small)
GIF_WIDTH = 320  # and is at most this wide: 36 frames of 640 pixels made 3.6 MB


def _colour(joint: int, person: int) -> tuple[int, int, int]:
    side = "left" if joint in LEFT else "right" if joint in RIGHT else "centre"
    return PALETTE[side if side == "centre" or not person else side + "2"]


def draw_frame(
    frame: np.ndarray,
    keypoint: np.ndarray,
    score: np.ndarray,
    lines: Sequence[str],
    width: int,
) -> Image.Image:
    """One RGB frame, scaled to `width`, with the people of this frame (keypoint [M, 17, 2] in
    the frame's pixels, score [M, 17]) and `lines` of text at the top left."""
    height, frame_width = frame.shape[:2]
    scale = width / frame_width
    image = Image.fromarray(frame).resize((width, max(1, round(height * scale))))
    draw = ImageDraw.Draw(image)
    thickness = max(2, width // 200)
    for person in range(keypoint.shape[0]):
        seen = score[person] >= MIN_SCORE
        xy = [(float(x) * scale, float(y) * scale) for x, y in keypoint[person]]
        for child, parent in BONES:
            if seen[child] and seen[parent]:
                draw.line((xy[child], xy[parent]), fill=_colour(child, person), width=thickness)
        radius = thickness + 1
        for joint, (x, y) in enumerate(xy):
            if seen[joint]:
                box = (x - radius, y - radius, x + radius, y + radius)
                draw.ellipse(box, fill=_colour(joint, person), outline=(0, 0, 0))
    font = _font(max(12, width // 32))
    line = font.size + 6 if hasattr(font, "size") else 18
    band = (0, 0, max(draw.textlength(t, font=font) for t in lines) + 12, line * len(lines) + 8)
    if lines:
        draw.rectangle(band, fill=PALETTE["background"])
        for row, text in enumerate(lines):
            colour = PALETTE["text"] if row == 0 else PALETTE["dim"]
            draw.text((6, 4 + row * line), text, fill=colour, font=font)
    return image


def top_lines(probabilities: dict[str, float], top: int = 3) -> list[str]:
    return [
        f"{k + 1}. {name} {p:.2f}" for k, (name, p) in enumerate(probabilities.items()) if k < top
    ]


def write(
    path: str | Path,
    frames: Iterable[np.ndarray],
    keypoint: np.ndarray,
    score: np.ndarray,
    lines: Sequence[str],
    fps: float,
    width: int = 640,
) -> int:
    """Draw every frame (keypoint [M, T, 17, 2], score [M, T, 17], one frame t per frame) and
    write them to `path` (.mp4 or .gif); returns the frames written."""
    path = Path(path)
    kind = path.suffix.lower()
    if kind not in FORMATS:
        raise fail(str(path), f"--render: expected a file name ending in {' or '.join(FORMATS)}")
    width = min(width, GIF_WIDTH) if kind == ".gif" else width
    drawn = (
        draw_frame(frame, keypoint[:, t], score[:, t], lines, width)
        for t, frame in enumerate(frames)
    )
    if kind == ".gif":
        step = max(1, round(fps / GIF_FPS_MAX)) if fps > 0 else 1
        images = [image for t, image in enumerate(drawn) if t % step == 0]
        if not images:
            raise fail(str(path), "no frame to draw")
        save_gif(images, path, (fps or 25.0) / step)
        return len(images)
    return _write_mp4(path, drawn, fps or 25.0)


def _write_mp4(path: Path, images: Iterator[Image.Image], fps: float) -> int:
    import cv2

    count = 0
    with atomic_path(path) as tmp:
        # OpenCV picks the container from the file name: the temporary one ends in .mp4
        named = tmp.with_name(tmp.name + ".mp4")
        writer = None
        try:
            for image in images:
                rgb = np.asarray(image.convert("RGB"))
                if writer is None:
                    size = (rgb.shape[1] // 2 * 2, rgb.shape[0] // 2 * 2)  # even, for codecs
                    writer = cv2.VideoWriter(str(named), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
                    if not writer.isOpened():
                        raise fail(str(path), "OpenCV cannot write an mp4 (mp4v) video here")
                writer.write(cv2.cvtColor(rgb[: size[1], : size[0]], cv2.COLOR_RGB2BGR))
                count += 1
            if writer is None:
                raise fail(str(path), "no frame to draw")
            writer.release()
            os.replace(named, tmp)
        finally:
            if writer is not None:
                writer.release()
            named.unlink(missing_ok=True)
    return count
