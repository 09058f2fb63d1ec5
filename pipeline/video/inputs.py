"""The videos to turn into a dataset: a folder of `<class>/<clip>.<ext>`, or a CSV file of
`video,label[,split][,group]` rows (paths relative to the CSV's folder, or absolute).

Each video gets a class name, a group (the people or scene it shows: whole groups go to one
split) and, from a CSV, a split. Bad input is one line naming the file, row and field.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import fail, opening
from pipeline.video.decode import EXTENSIONS

SEPARATOR = "__"  # between class, group and clip name in frame_dir (see pipeline.pose)
COLUMNS = ("video", "label", "split", "group")


@dataclass(frozen=True)
class Video:
    path: Path
    label_name: str
    group: str
    split: str | None = None

    @property
    def frame_dir(self) -> str:
        return SEPARATOR.join((self.label_name, self.group, self.path.stem))


def _name(value: str, what: str, where: str) -> str:
    value = value.strip()
    if not value or not value.isprintable() or SEPARATOR in value or "/" in value:
        raise fail(
            where,
            f"{what}: expected a non-empty name without '/' or {SEPARATOR!r}, found {value!r}",
        )
    return value


def read(source: str | Path, group_pattern: str | None = None) -> list[Video]:
    """The videos `source` lists, sorted by frame_dir; `group_pattern` (a regex whose group 1
    is the group, searched in the file name) groups folder videos and CSV rows with no group."""
    source = Path(source)
    if not source.exists():
        raise fail(str(source), "not found: expected a folder of <class>/<clip> videos or a CSV")
    regex = _compile(group_pattern)
    videos = _folder(source, regex) if source.is_dir() else _csv(source, regex)
    names: dict[str, Path] = {}
    for video in videos:
        if video.frame_dir in names:
            raise fail(
                str(video.path),
                f"same class, group and file name as {names[video.frame_dir]}: rename one",
            )
        names[video.frame_dir] = video.path
    return sorted(videos, key=lambda v: v.frame_dir)


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise fail("--group-pattern", f"not a valid regex ({exc})") from None
    if regex.groups < 1:
        raise fail("--group-pattern", f"expected a regex with a group, found {pattern!r}")
    return regex


def _group(path: Path, given: str | None, regex: re.Pattern[str] | None, where: str) -> str:
    if given:
        return _name(given, "group", where)
    if regex is None:
        return _name(path.stem, "the file name (its own group)", where)
    match = regex.search(path.name)
    if match is None or not match.group(1):
        raise fail(str(path), f"--group-pattern {regex.pattern!r} finds no group in its name")
    return _name(match.group(1), "group", str(path))


def _folder(root: Path, regex: re.Pattern[str] | None) -> list[Video]:
    videos = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix.lower() in EXTENSIONS:
                label = _name(folder.name, "class folder", str(folder))
                videos.append(Video(path, label, _group(path, None, regex, str(path))))
    if not videos:
        raise fail(
            str(root),
            f"no videos found: expected <class>/<clip> files ending in {', '.join(EXTENSIONS)}",
        )
    return videos


def _csv(path: Path, regex: re.Pattern[str] | None) -> list[Video]:
    with opening(
        path,
        missing="file not found",
        folder="expected a CSV file, found a folder",
        unreadable="cannot read the file",
    ):
        text = path.read_bytes()
    try:
        lines = text.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise fail(str(path), "expected a UTF-8 CSV of video,label[,split][,group]") from None
    rows = list(csv.DictReader(lines))
    header = [c.strip() for c in (csv.reader(lines[:1]).__next__() if lines else [])]
    if not header:
        raise fail(str(path), "empty: expected a header video,label[,split][,group] and rows")
    missing = [c for c in COLUMNS[:2] if c not in header]
    unknown = [c for c in header if c not in COLUMNS]
    if missing or unknown:
        raise fail(
            str(path),
            f"header: expected columns video,label[,split][,group], found {','.join(header)}",
        )
    if not rows:
        raise fail(str(path), "no rows: expected one row per video after the header")
    videos = []
    for number, row in enumerate(rows, start=2):
        where = f"{path}: line {number}"
        values = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if not values.get("video"):
            raise fail(where, "video: expected a file name, found nothing")
        video = Path(values["video"])
        video = video if video.is_absolute() else path.parent / video
        if not video.is_file():
            raise fail(where, f"video: file not found: {video}")
        split = values.get("split") or None
        videos.append(
            Video(
                video,
                _name(values.get("label", ""), "label", where),
                _group(video, values.get("group"), regex, where),
                None if split is None else _name(split, "split", where),
            )
        )
    with_split = sum(v.split is not None for v in videos)
    if 0 < with_split < len(videos):
        raise fail(str(path), "split: expected a split in every row or in none")
    return videos
