"""Class names for the labels of a PYSKL pickle, which stores only integer labels.

In order of preference: an explicit label-map file, names parsed from `frame_dir` with a regex
(UCF101's `v_<ClassName>_g01_c01`), else `class_<label>`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from pipeline.core.errors import fail
from pipeline.files.inputs import MIB, read_bytes

# A label map names a few hundred classes in a few KiB.
LABEL_MAP_LIMIT = 16 * MIB


def read_label_map(path: str | Path) -> dict[int, str]:
    """Lines of `label name`, or plain names with line i naming label i; blank lines ignored."""
    path = Path(path)
    try:
        text = read_bytes(path, LABEL_MAP_LIMIT, "the label map").decode("utf-8")
        lines = [line.strip() for line in text.splitlines()]
    except OSError as exc:
        raise fail(str(path), f"cannot read the label map ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise fail(str(path), "the label map is not UTF-8 text") from None
    lines = [line for line in lines if line]
    pairs = [line.split(maxsplit=1) for line in lines]
    if lines and all(len(p) == 2 and p[0].isdigit() for p in pairs):
        mapping = {int(p[0]): p[1] for p in pairs}
        if len(mapping) != len(pairs):
            raise fail(str(path), "a label is named twice")
        return mapping
    return dict(enumerate(lines))


def from_names(clips: Iterable[tuple[str, int]], pattern: str) -> dict[int, str] | None:
    """Names parsed from frame_dirs; None when any clip does not match or a label gets two names."""
    regex = re.compile(pattern)
    names: dict[int, str] = {}
    for frame_dir, label in clips:
        found = regex.search(frame_dir)
        if not found or names.setdefault(label, found.group(1)) != found.group(1):
            return None
    return names


def resolve(
    labels: list[int],
    clips: Iterable[tuple[str, int]],
    pattern: str,
    label_map: str | None,
    source: str = "data.pkl",
) -> list[str]:
    """One name for each of `labels`, in the same order; `source` is the file of the clips."""
    if label_map is not None:
        mapping: Mapping[int, str] = read_label_map(label_map)
        missing = [label for label in labels if label not in mapping]
        if missing:
            raise fail(label_map, f"no name for label {missing[0]} (the file names {len(mapping)})")
        return _distinct(labels, [mapping[label] for label in labels], label_map, "the label map")
    parsed = from_names(clips, pattern)
    if parsed is not None and all(label in parsed for label in labels):
        names = [parsed[label] for label in labels]
        # the clips' names and labels disagree, or the pattern is too coarse: either way the
        # names come from the clips, and the line names the key
        return _distinct(labels, names, source, f"data.class_pattern {pattern!r}")
    return [f"class_{label}" for label in labels]


def _distinct(labels: list[int], names: list[str], where: str, what: str) -> list[str]:
    """`names`, once no two labels share one: two classes of one name would be merged in every
    report (per_class.csv would list the name twice, one of them with support 0)."""
    first: dict[str, int] = {}
    for label, name in zip(labels, names, strict=True):
        if name in first:
            raise fail(
                where,
                f"{what} gives labels {first[name]} and {label} the same class name "
                f"{name!r}; each class needs its own name",
            )
        first[name] = label
    return names
