"""Which clips to look at: a predictions table, its most confident errors, and for each class
its most confident correct clip. Shared by `render` and the `plots` stage's gallery.

A predictions table is what evaluate writes (metrics/<name>/predictions.csv): one row per clip
with `frame_dir`, `predicted` and `confidence`, and `actual` for clips of known class.
"""

from __future__ import annotations

import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.errors import PipelineError, fail
from pipeline.dataset.subset import Subset
from pipeline.files.inputs import refuse_special
from pipeline.viz.drawing import Caption

COLUMNS = ("frame_dir", "predicted", "confidence")


def read_predictions(path: str | os.PathLike[str]) -> pd.DataFrame:
    """The table, checked: the columns above (and `actual` if present) and confidences in 0..1.

    Names stay text (a class named "1" or "nan" is not a number)."""
    path = Path(path)
    text = {"frame_dir": str, "predicted": str, "actual": str}
    refuse_special(path)  # a FIFO would block the reader forever
    try:
        table = pd.read_csv(path, dtype=text, keep_default_na=False)
    except FileNotFoundError:
        raise fail(
            str(path),
            "predictions not found: run `dvc repro` (evaluate writes them)"
            " or name a predictions CSV with --predictions",
        ) from None
    except (OSError, UnicodeDecodeError, ValueError, pd.errors.ParserError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise fail(str(path), f"not a readable predictions CSV ({reason})") from None
    for column in COLUMNS:
        if column not in table.columns:
            raise fail(
                str(path),
                f"no column {column!r} (a predictions CSV has "
                f"{', '.join(COLUMNS)} and optionally actual)",
            )
    confidence = pd.to_numeric(table["confidence"], errors="coerce")
    bad = ~confidence.between(0, 1)
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise fail(
            str(path),
            f"column 'confidence', row {row + 1}: expected a number in 0..1, "
            f"found {table['confidence'].iloc[row]!r}",
        )
    table["confidence"] = confidence
    return table


def most_confident_errors(table: pd.DataFrame, count: int) -> pd.DataFrame:
    """Up to `count` rows whose prediction is wrong, the most confident first (ties: in order)."""
    wrong = table[table["actual"] != table["predicted"]]
    return wrong.sort_values("confidence", ascending=False, kind="stable").head(count)


def best_correct_per_class(table: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    """For each class in `classes` order that has a correct prediction, its most confident one."""
    right = table[table["actual"] == table["predicted"]]
    best = right.sort_values("confidence", ascending=False, kind="stable")
    best = best.drop_duplicates("actual").set_index("actual")
    return best.loc[[name for name in classes if name in best.index]].reset_index()


@dataclass(frozen=True)
class Clip:
    name: str
    keypoint: np.ndarray  # [persons, frames, 17, 2], pixels
    score: np.ndarray  # [persons, frames, 17]
    img_shape: tuple[int, int]  # (height, width)
    actual: str | None  # the true class's name, when known


def missing_clip(source: str | os.PathLike[str], name: str, held: list[str]) -> PipelineError:
    example = f", such as {held[0]!r}" if held else ""
    return fail(str(source), f"no clip named {name!r} (it holds {len(held)} clips{example})")


def subset_clips(folder: Path, names: list[str]) -> list[Clip]:
    """The named clips of the subset in `folder` (as extract writes it), in the order named."""
    subset = Subset(folder)
    try:
        return _clips_of(subset, names)
    finally:
        subset.close()


def _clips_of(subset: Subset, names: list[str]) -> list[Clip]:
    index = subset.index
    position = {name: i for i, name in enumerate(index["frame_dir"])}
    clips = []
    for name in names:
        if name not in position:
            raise missing_clip(subset.folder, name, list(index["frame_dir"]))
        i = position[name]
        keypoint, score = subset.clip(i)
        row = index.iloc[i]
        clips.append(
            Clip(
                name,
                keypoint.astype(np.float32),
                score.astype(np.float32),
                (int(row["img_h"]), int(row["img_w"])),
                row["class_name"],
            )
        )
    return clips


def caption(clip: Clip, table: pd.DataFrame | None) -> Caption:
    """The clip's labels: its true class, and its prediction when `table` lists it."""
    rows = table[table["frame_dir"] == clip.name] if table is not None else table
    if rows is None or not len(rows):
        return Caption(clip.name, clip.actual)
    row = rows.iloc[0]
    return Caption(clip.name, clip.actual, row["predicted"], float(row["confidence"]))


def file_name(clip: str, prefix: str = "") -> str:
    """A clip's GIF name: its frame_dir with anything but letters, digits, '.', '-' and '_'
    replaced, so no name can reach outside the output folder. A name that had to change gets
    a digest of the original: 'a b' and 'a/b' would otherwise both write a_b.gif."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", clip).lstrip(".")
    if safe != clip:
        safe = f"{safe or 'clip'}-{zlib.crc32(clip.encode()):08x}"
    return prefix + safe + ".gif"
