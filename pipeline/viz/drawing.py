"""Skeleton clips drawn with Pillow: COCO-17 bones on the clip's image frame, with its labels.

Frames are palette images drawn with a fixed palette, so every colour in a GIF is exactly one
of PALETTE (left bones one colour, right bones another, whatever the encoder does) and a GIF
of a few dozen frames stays a few tens of kB. No display is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from pipeline.core.errors import fail
from pipeline.core.skeleton import BONES, LEFT, RIGHT
from pipeline.files.atomic import atomic_path

PALETTE = {
    "background": (24, 24, 28),  # around the image frame: the header and footer bands
    "image": (52, 56, 66),  # the clip's image frame (img_shape), scaled
    "text": (235, 235, 235),
    "dim": (150, 150, 160),
    "left": (66, 153, 225),  # blue: left bones and joints of the first person
    "right": (237, 137, 54),  # orange: right ones
    "left2": (150, 205, 245),  # the same, lighter, for every further person
    "right2": (250, 205, 140),
    "centre": (235, 235, 235),  # the nose and eyes' root
    "right_answer": (72, 187, 120),
    "wrong_answer": (245, 101, 101),
}
INDEX = {name: i for i, name in enumerate(PALETTE)}
# Joints scored below this are undetected (as shards.min_score's default treats them), as are
# joints at (0, 0), whatever their score: no bone, no dot.
MIN_SCORE = 0.05
# Pillow holds every frame of a GIF in memory (a byte a pixel) before writing it: a clip's
# img_shape, the width and the frame count set that size, so it is checked before drawing.
# The image frame may be at most this many pixels high (a portrait 9:16 video at the widest
# --width, 4096, is 7282) ...
MAX_HEIGHT = 8192
# ... and the frames of one GIF together at most this many pixels (256 MiB; 300 frames at the
# default width of 320 take 27 M).
MAX_PIXELS = 1 << 28


@dataclass(frozen=True)
class Caption:
    """What a clip's frames say besides the skeleton: its name, true and predicted class."""

    name: str
    actual: str | None = None
    predicted: str | None = None
    confidence: float | None = None


def _palette_image(size: tuple[int, int]) -> Image.Image:
    image = Image.new("P", size, INDEX["background"])
    flat = [channel for colour in PALETTE.values() for channel in colour]
    image.putpalette(flat + [0] * (768 - len(flat)))
    return image


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _bone_colours(person: int) -> tuple[int, int]:
    second = "2" if person else ""
    return INDEX["left" + second], INDEX["right" + second]


def _side(joint: int, left: int, right: int) -> int:
    return left if joint in LEFT else right if joint in RIGHT else INDEX["centre"]


def frame_indices(total: int, limit: int | None) -> np.ndarray:
    """`limit` frames spread evenly over `total` (all of them when limit is None or larger)."""
    if limit is None or limit >= total:
        return np.arange(total)
    return np.linspace(0, total - 1, limit).round().astype(int)


def draw_clip(
    keypoint: np.ndarray,
    score: np.ndarray,
    img_shape: tuple[int, int],
    caption: Caption,
    width: int = 320,
    frames: int | None = None,
    source: str = "",
) -> list[Image.Image]:
    """The clip's frames (keypoint [M, T, 17, 2] in pixels, score [M, T, 17]), `width` pixels
    wide: a header with the true and predicted class, the skeletons on the image frame, and a
    footer with the frame counter. `frames` evenly spaced frames, or all. A clip whose GIF
    would take more than MAX_PIXELS (or whose frame is over MAX_HEIGHT) is refused, naming
    `source` (by default the clip's name)."""
    height, img_width = (int(v) for v in img_shape)
    scale = width / img_width
    area = max(1, round(height * scale))
    font_size = max(10, width // 24)
    line = font_size + 4
    top, bottom = 2 * line + 4, 2 * line + 4  # footer: the clip's name, then the frame counter
    total = keypoint.shape[1] if keypoint.shape[0] else 1
    count = len(frame_indices(total, frames))
    _check_size(source or caption.name, (height, img_width), width, area, top + bottom, count)
    font = _font(font_size)
    header = _header(caption)
    name = _fitted(caption.name, font, width - 8)
    images = []
    for t in frame_indices(total, frames):
        image = _palette_image((width, top + area + bottom))
        draw = ImageDraw.Draw(image)
        draw.fontmode = "1"  # no anti-aliasing: text stays in the palette's colours
        draw.rectangle((0, top, width - 1, top + area - 1), fill=INDEX["image"])
        for person in range(keypoint.shape[0]):
            _draw_person(draw, keypoint[person, t] * scale, score[person, t], top, person, width)
        for row, (text, colour) in enumerate(header):
            draw.text((4, 2 + row * line), text, fill=INDEX[colour], font=font)
        _legend(draw, font, width, header[0][0])
        draw.text((4, top + area + 2), name, fill=INDEX["dim"], font=font)
        draw.text(
            (4, top + area + 2 + line), f"frame {t + 1}/{total}", fill=INDEX["dim"], font=font
        )
        images.append(image)
    return images


def _check_size(
    where: str, img_shape: tuple[int, int], width: int, area: int, bands: int, count: int
) -> None:
    if area > MAX_HEIGHT:
        raise fail(
            where,
            f"img_shape {img_shape} at --width {width} makes the image {width}x{area} pixels; "
            f"the limit is {MAX_HEIGHT} pixels high",
        )
    pixels = width * (area + bands) * count
    if pixels > MAX_PIXELS:
        raise fail(
            where,
            f"{count} frames of {width}x{area + bands} pixels make {pixels:,} pixels; the limit "
            f"for one GIF is {MAX_PIXELS:,}: draw fewer with --frames (or a smaller --width)",
        )


def _fitted(text: str, font: ImageFont.ImageFont, width: float) -> str:
    """`text`, or its start and end around '...' where it is wider than `width` pixels: a clip's
    name differs from its neighbours' at the end (..._g04_c01), so the end is kept whole."""
    measure = ImageDraw.Draw(Image.new("P", (1, 1))).textlength
    if measure(text, font=font) <= width:
        return text
    for keep in range(len(text) - 1, 0, -1):
        head, tail = text[: keep // 3], text[len(text) - (keep - keep // 3) :]
        if measure(f"{head}...{tail}", font=font) <= width:
            return f"{head}...{tail}"
    return "..."


def _header(caption: Caption) -> list[tuple[str, str]]:
    lines = [(f"true: {caption.actual if caption.actual is not None else '?'}", "text")]
    if caption.predicted is None:
        lines.append(("predicted: (no prediction)", "dim"))
    else:
        right = caption.actual == caption.predicted
        confidence = "" if caption.confidence is None else f" ({caption.confidence:.2f})"
        lines.append(
            (
                f"predicted: {caption.predicted}{confidence}",
                "right_answer" if right else "wrong_answer",
            )
        )
    return lines


def _legend(draw: ImageDraw.ImageDraw, font: ImageFont.ImageFont, width: int, first: str) -> None:
    """`left right` in their colours at the top right, where the first line leaves room."""
    used = 4 + draw.textlength(first + "  ", font=font)
    gap = draw.textlength(" ", font=font)
    right_x = width - 4 - draw.textlength("right", font=font)
    left_x = right_x - gap - draw.textlength("left", font=font)
    if left_x > used:
        draw.text((left_x, 2), "left", fill=INDEX["left"], font=font)
        draw.text((right_x, 2), "right", fill=INDEX["right"], font=font)


def _draw_person(
    draw: ImageDraw.ImageDraw,
    points: np.ndarray,
    score: np.ndarray,
    top: int,
    person: int,
    width: int,
) -> None:
    seen = (score >= MIN_SCORE) & points.any(axis=-1)  # PYSKL's undetected joint is at (0, 0)
    left, right = _bone_colours(person)
    xy = [(float(x), float(y) + top) for x, y in points]
    thickness = max(1, width // 160)
    for child, parent in BONES:
        if seen[child] and seen[parent]:
            draw.line((xy[child], xy[parent]), fill=_side(child, left, right), width=thickness)
    radius = thickness + 1
    for joint, (x, y) in enumerate(xy):
        if seen[joint]:
            box = (x - radius, y - radius, x + radius, y + radius)
            draw.ellipse(box, fill=_side(joint, left, right))


def save_gif(frames: Sequence[Image.Image], path: str | Path, fps: float) -> None:
    """An endlessly looping GIF, written atomically."""
    with atomic_path(path) as tmp:
        frames[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=list(frames[1:]),
            duration=max(20, round(1000 / fps)),
            loop=0,
            optimize=False,
        )
