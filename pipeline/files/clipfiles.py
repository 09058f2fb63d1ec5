"""Clips to classify, read from a user's file: a PYSKL 2D pickle (every annotation, or one of its
splits), or one clip as `.npz` or `.json` with the fields `keypoint` [M, T, 17, 2], optionally
`keypoint_score` [M, T, 17] (1 where absent), and `img_shape` [height, width].

Pickles go through the restricted reader (`pklio`), an `.npz` is read with pickle disabled, and
every clip is checked as the extract stage checks a pickle's (`pklio.check_annotation`): bad
input is one line naming the file, the clip and the field.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import fail, opening
from pipeline.files import pklio
from pipeline.files.inputs import MIB, check_regular, read_bytes, size_text

SINGLE = (".npz", ".json")  # one clip per file; anything else is read as a pickle
FIELDS = "keypoint [M, T, 17, 2], optional keypoint_score [M, T, 17], img_shape [height, width]"
# The memory one clip file may ask for. A clip of 10 persons over 10 minutes at 30 fps holds
# 24 MiB of keypoints; an .npz whose arrays claim more is refused before any is read (its
# header can claim terabytes in a few bytes, its compressed data unpack to gigabytes).
CLIP_LIMIT = 256 * MIB
# A JSON clip is parsed whole into Python numbers (some 30 bytes each, from some 8 characters).
JSON_LIMIT = 32 * MIB
HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


@dataclass(frozen=True)
class Clip:
    frame_dir: str
    keypoint: np.ndarray  # [M, T, 17, 2]
    keypoint_score: np.ndarray  # [M, T, 17]
    img_hw: tuple[int, int]
    label: int | None = None  # the pickle's label, where it has one


def read(path: str | Path, split: str | None = None) -> tuple[list[Clip], list[str]]:
    """The clips of a file, in its order (a split's own order with `split`), and the names of
    those left out for holding no person (as extract leaves them out)."""
    path = Path(path)
    if path.suffix.lower() not in SINGLE:
        return _pickled_clips(path, split)
    if split is not None:
        raise fail(str(path), f"--split {split}: only a pickle has splits; this file is one clip")
    return [read_clip(path)], []


def _pickled_clips(path: Path, split: str | None) -> tuple[list[Clip], list[str]]:
    source = str(path)
    splits, annotations = pklio.check_dataset(pklio.load_pickle(path), source)
    chosen = list(range(len(annotations)))
    if split is not None:
        if split not in splits:
            raise fail(source, f"split {split!r} not found (the file has {sorted(splits)})")
        where = {
            ann["frame_dir"]: i
            for i, ann in enumerate(annotations)
            if isinstance(ann, Mapping) and isinstance(ann.get("frame_dir"), str)
        }
        missing = [name for name in splits[split] if name not in where]
        if missing:
            raise fail(
                source, f"split {split!r} names clip {missing[0]!r}, which has no annotation"
            )
        chosen = [where[name] for name in splits[split]]
    clips, empty, seen = [], [], set()
    for i in chosen:
        ann = annotations[i]
        persons = pklio.check_annotation(ann, source, i, labelled=False)
        name = ann["frame_dir"]
        if name in seen:
            raise fail(source, f"clip {name!r} appears twice")
        seen.add(name)
        if persons == 0:
            empty.append(name)
            continue
        label = pklio.as_int(ann["label"]) if "label" in ann else None
        h, w = (int(s) for s in ann["img_shape"])
        clips.append(Clip(name, ann["keypoint"], ann["keypoint_score"], (h, w), label))
    return clips, empty


def read_clip(path: Path) -> Clip:
    """One clip from an .npz or .json file, named after the file."""
    fields = _npz(path) if path.suffix.lower() == ".npz" else _json(path)
    return from_fields(fields, path.stem, str(path))


def from_fields(fields: Mapping[str, Any], name: str, source: str) -> Clip:
    """A clip from its fields (keypoint, optional keypoint_score, img_shape), checked."""
    for key in ("keypoint", "img_shape"):
        if key not in fields or fields[key] is None:
            raise fail(source, f"missing field {key!r} (expected {FIELDS})")
    keypoint = _floats(fields["keypoint"], "keypoint", source)
    if fields.get("keypoint_score") is not None:
        score = _floats(fields["keypoint_score"], "keypoint_score", source)
    else:  # every joint as surely seen: no threshold zeroes any
        score = np.ones(keypoint.shape[:3], np.float32)
    shape = fields["img_shape"]
    if np.ndim(shape) != 1:
        raise fail(source, f"img_shape: expected [height, width], found a {np.ndim(shape)}-d value")
    ann = {
        "frame_dir": name,
        "keypoint": keypoint,
        "keypoint_score": score,
        "img_shape": shape,
        "total_frames": keypoint.shape[1] if keypoint.ndim > 1 else 0,
    }
    if pklio.check_annotation(ann, source, 0, labelled=False) == 0:
        raise fail(source, f"the clip holds no person (keypoint shape {keypoint.shape})")
    h, w = (int(s) for s in shape)
    return Clip(name, keypoint, score, (h, w))


def _npz(path: Path) -> dict[str, Any]:
    with opening(
        path,
        missing="file not found",
        folder="expected an .npz file, found a folder",
        unreadable="cannot read the file",
    ):
        check_regular(path)
        try:
            _check_npz_sizes(path)
            with np.load(path, allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}
        except (ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise fail(str(path), f"not a readable .npz file ({exc}); expected {FIELDS}") from None


def _check_npz_sizes(path: Path) -> None:
    """Every array of the archive holds what its header claims, and all together fit in
    CLIP_LIMIT: checked from the headers, before numpy allocates what they claim."""
    with open(path, "rb") as handle:
        if handle.read(6) == b"\x93NUMPY":
            raise fail(
                str(path),
                "a single .npy array, not an .npz archive of named fields; save the clip with "
                f"np.savez(path, keypoint=..., img_shape=...) ({FIELDS})",
            )
    with zipfile.ZipFile(path) as archive:
        members = archive.infolist()
        total = sum(info.file_size for info in members)
        if total > CLIP_LIMIT:
            raise fail(
                str(path),
                f"its arrays unpack to {size_text(total)}, over the limit of "
                f"{size_text(CLIP_LIMIT)} for one clip",
            )
        for info in members:
            with archive.open(info) as member:
                version = np.lib.format.read_magic(member)
                read_header = HEADER_READERS.get(version)
                if read_header is None:
                    raise ValueError(f"unsupported .npy format version {version}")
                shape, _, dtype = read_header(member)
            claimed = math.prod(shape) * dtype.itemsize
            if claimed > info.file_size:
                raise fail(
                    str(path),
                    f"field {info.filename.removesuffix('.npy')!r}: its header claims shape "
                    f"{shape} of {dtype} ({size_text(claimed)}), more than the "
                    f"{size_text(info.file_size)} it holds",
                )


def _json(path: Path) -> dict[str, Any]:
    with opening(
        path,
        missing="file not found",
        folder="expected a .json file, found a folder",
        unreadable="cannot read the file",
    ):
        text = read_bytes(path, JSON_LIMIT, "the JSON clip")
    try:
        fields = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise fail(str(path), f"not valid JSON ({exc})") from None
    if not isinstance(fields, dict):
        raise fail(str(path), f"expected a JSON object with {FIELDS}")
    return fields


def _floats(value: Any, key: str, source: str) -> np.ndarray:
    """A field as a float array (integers converted); anything else, ragged lists included, is
    an error naming the field."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError):  # numpy refuses nested lists of unequal lengths
        array = np.asarray(None)
    if array.dtype.kind in "iu":
        array = array.astype(np.float32)
    if array.dtype.kind != "f":
        found = "other values" if array.dtype == object else f"values of type {array.dtype}"
        raise fail(source, f"{key}: expected an array of numbers ({FIELDS}), found {found}")
    return array
