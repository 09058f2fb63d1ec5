"""Reading PYSKL skeleton pickles safely, and checking what they hold.

A pickle can run any code it names, and the UCF101 file comes from the internet; so every
pickle goes through `pipeline.files.unpickler.RestrictedUnpickler`, which builds only plain
containers and numpy arrays, within bounds set by the file's size (see there). Anything
else is refused with one line before it can run or allocate. Arrays of 4 KB or more are made
on the file's pages, mapped copy-on-write: writable, and read only when used.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.errors import fail, opening
from pipeline.core.skeleton import MAX_IMAGE_SIDE, NUM_JOINTS
from pipeline.files.inputs import refuse_special
from pipeline.files.unpickler import Refused, RestrictedUnpickler, clip

FLOAT16_MAX = float(np.finfo(np.float16).max)


def load_pickle(path: str | Path) -> Any:
    """Load a pickle through the restricted unpickler; any failure is one PipelineError line."""
    path = Path(path)
    refuse_special(path)  # a FIFO would block the unpickler forever
    with opening(
        path,
        missing="file not found",
        folder="expected a pickle file, found a folder",
        unreadable="cannot read the pickle file",
    ):
        handle = open(path, "rb")  # closed by the `with` below, once loaded
    try:
        with handle:
            return RestrictedUnpickler(handle, os.fstat(handle.fileno()).st_size).load()
    except Refused as exc:
        raise fail(str(path), f"not a usable pickle: {exc}") from None
    except EOFError:
        raise fail(str(path), "the file is empty or truncated (ran out of data)") from None
    except MemoryError:
        raise fail(str(path), "not enough memory to load the pickle") from None
    except Exception as exc:  # a corrupt stream can raise nearly anything while decoding
        text = clip(str(exc), 200)
        raise fail(str(path), f"not a valid pickle ({type(exc).__name__}: {text})") from None


def check_dataset(data: Any, source: str) -> tuple[dict[str, list[str]], list[Mapping[str, Any]]]:
    """The top level of a PYSKL pickle: {'split': {name: [frame_dir]}, 'annotations': [dict]}."""
    if not isinstance(data, Mapping):
        raise fail(source, f"expected a dict with 'split' and 'annotations', found {_kind(data)}")
    for key in ("split", "annotations"):
        if key not in data:
            raise fail(source, f"missing top-level key {key!r}")
    splits, annotations = data["split"], data["annotations"]
    if not isinstance(splits, Mapping) or not all(
        isinstance(k, str) and isinstance(v, list | tuple) for k, v in splits.items()
    ):
        raise fail(source, "'split' must map split names to lists of frame_dir names")
    if not isinstance(annotations, list | tuple):
        raise fail(source, f"'annotations' must be a list, found {_kind(annotations)}")
    for name, members in splits.items():
        for item in members:
            if not isinstance(item, str):
                raise fail(
                    source, f"split {name!r}: expected frame_dir strings, found {_kind(item)}"
                )
    return dict(splits), list(annotations)


def _kind(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array of shape {value.shape} and dtype {clip(str(value.dtype), 40)}"
    return type(value).__name__


def _show(value: Any, limit: int = 60) -> str:
    """A value for an error message: one line, short (arrays by shape and dtype)."""
    return clip(" ".join(_brief(value, levels=3).split()), limit)


_BRACKETS = {list: "[]", tuple: "()", set: "{}", frozenset: "{}", dict: "{}"}


def _brief(value: Any, levels: int, items: int = 4) -> str:
    """repr() of the first few items of the first few levels: bounded work on any value, even
    one nested a million deep or expanding to 10**30 items through shared references."""
    if isinstance(value, np.ndarray):
        return _kind(value)
    if isinstance(value, str | bytes | bytearray):
        return repr(value[:80])
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"<int of {value.bit_length()} bits>"
    if value is None or isinstance(value, bool | int | float | np.number | np.bool_):
        return repr(value)
    kind = next((k for k in _BRACKETS if isinstance(value, k)), None)
    if kind is None:
        return f"<{type(value).__name__}>"
    left, right = _BRACKETS[kind]
    if kind in (set, frozenset) and not value:
        return f"{type(value).__name__}()"
    if levels == 0:
        return f"{left}...{right}"
    if kind is dict:
        parts = [
            f"{_brief(k, levels - 1)}: {_brief(v, levels - 1)}"
            for k, v in itertools.islice(value.items(), items)
        ]
    else:
        parts = [_brief(v, levels - 1) for v in itertools.islice(value, items)]
    if len(value) > items:
        parts.append("...")
    comma = "," if kind is tuple and len(value) == 1 else ""
    return f"{left}{', '.join(parts)}{comma}{right}"


def as_int(value: Any) -> int | None:
    """An integer field's value, or None for anything else: bools, floats, and integers beyond
    int64 (a pickle can hold a 10**100000-digit one, which str() refuses to print)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        return None
    value = int(value)
    return value if -(2**63) <= value < 2**63 else None


def _all_finite(values: np.ndarray) -> bool:
    """np.isfinite(values).all(), read from the bits for float16: the real file is float16, and
    this check over every kept clip was most of extract's time."""
    if values.dtype == np.float16 and values.size:
        exponent_all_ones = 0x7C00  # inf and NaN; finite values have a smaller magnitude
        return int((values.view(np.uint16) & 0x7FFF).max()) < exponent_all_ones
    return bool(np.isfinite(values).all())


def check_annotation(ann: Any, source: str, position: int, labelled: bool = True) -> int:
    """Check one annotation fully; return its person count (0 = degenerate clip, to be skipped).

    Raises PipelineError naming the file, the clip and the field on anything malformed. With
    `labelled` False a clip may have no label (clips to classify); one it has is still checked.
    """
    if not isinstance(ann, Mapping):
        raise fail(source, f"annotations[{position}]: expected a dict, found {_kind(ann)}")
    clip = ann.get("frame_dir")
    # index.csv must read back the same names: a carriage return or other control character
    # would split a CSV row, so names are printable text (as every real frame_dir is).
    if not isinstance(clip, str) or not clip or not clip.isprintable():
        raise fail(
            source,
            f"annotations[{position}].frame_dir: expected a non-empty string of printable "
            f"characters, found {_show(clip)}",
        )
    where = f"clip {clip!r}"
    for key in ("label", "keypoint", "keypoint_score", "img_shape", "total_frames"):
        if key not in ann and (labelled or key != "label"):
            raise fail(source, f"{where}: missing key {key!r}")
    label = as_int(ann.get("label", 0))
    if label is None or label < 0:
        raise fail(source, f"{where}: label must be an integer >= 0, found {_show(ann['label'])}")
    shape = ann["img_shape"]
    if not (
        isinstance(shape, tuple | list | np.ndarray)
        and np.ndim(shape) == 1  # not a 0-d array, which has no len()
        and len(shape) == 2
        and all(0 < (as_int(s) or 0) <= MAX_IMAGE_SIDE for s in shape)
    ):
        raise fail(
            source,
            f"{where}: img_shape must be (height, width), each in 1..{MAX_IMAGE_SIDE}, "
            f"found {_show(shape)}",
        )

    kp, score = ann["keypoint"], ann["keypoint_score"]
    if not isinstance(kp, np.ndarray) or kp.dtype.kind != "f":
        raise fail(source, f"{where}: keypoint must be a float array, found {_kind(kp)}")
    if kp.ndim != 4 or kp.shape[2:] != (NUM_JOINTS, 2):
        raise fail(
            source,
            f"{where}: keypoint must have shape [persons, frames, {NUM_JOINTS}, 2], "
            f"found {kp.shape}",
        )
    persons, frames = kp.shape[:2]
    if not isinstance(score, np.ndarray) or score.dtype.kind != "f":
        raise fail(source, f"{where}: keypoint_score must be a float array, found {_kind(score)}")
    if score.shape != kp.shape[:3]:
        raise fail(
            source,
            f"{where}: keypoint_score shape {score.shape} does not match keypoint {kp.shape[:3]}",
        )
    total = as_int(ann["total_frames"])
    if total is None or total < 0:
        found = _show(ann["total_frames"])
        raise fail(source, f"{where}: total_frames must be an integer >= 0, found {found}")
    if persons == 0:
        return 0
    if frames == 0 or total == 0:
        raise fail(source, f"{where}: the clip has zero frames (keypoint shape {kp.shape})")
    if total != frames:
        raise fail(source, f"{where}: total_frames is {total} but keypoint holds {frames} frames")
    if not _all_finite(kp):
        raise fail(source, f"{where}: keypoint holds NaN or infinite coordinates")
    if not _all_finite(score):
        raise fail(source, f"{where}: keypoint_score holds NaN or infinite values")
    for field, values in (("keypoint", kp), ("keypoint_score", score)):
        if values.dtype == np.float16:
            continue  # a finite float16 is within the float16 range by definition
        largest = float(np.abs(values).max())
        if largest > FLOAT16_MAX:  # the subset stores float16: larger values would become inf
            raise fail(
                source,
                f"{where}: {field} holds {largest:g}, beyond the float16 range "
                f"(+-{FLOAT16_MAX:g}) the subset stores",
            )
    return persons
