"""Reading PYSKL skeleton pickles safely, and checking what they hold.

A pickle can run any code it names, and the UCF101 file comes from the internet; so every
pickle goes through `RestrictedUnpickler`, which resolves only the few numpy globals an array
needs. Anything else (os.system, builtins.eval, ...) is refused before it can be called.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.errors import fail
from pipeline.skeleton import NUM_JOINTS

FLOAT16_MAX = float(np.finfo(np.float16).max)

# numpy moved its internals from numpy.core to numpy._core in 2.0; pickles name either.
_NUMPY_GLOBALS = {
    (module, name)
    for prefix in ("numpy.core", "numpy._core")
    for module, name in (
        (f"{prefix}.multiarray", "_reconstruct"),
        (f"{prefix}.multiarray", "scalar"),
        (f"{prefix}.numeric", "_frombuffer"),
    )
}
ALLOWED_GLOBALS = _NUMPY_GLOBALS | {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.dtypes", "Float16DType"),
    ("numpy.dtypes", "Float32DType"),
    ("numpy.dtypes", "Float64DType"),
    ("numpy.dtypes", "Int64DType"),
    ("numpy.dtypes", "Int32DType"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # protocol-2 pickles store array bytes as latin-1 text through it
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain containers, and nothing else."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f"refused to load global {module}.{name} "
            "(only numpy arrays and plain containers are allowed)"
        )


def load_pickle(path: str | Path) -> Any:
    """Load a pickle through the restricted unpickler; any failure is one PipelineError line."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            return RestrictedUnpickler(handle, encoding="latin1").load()
    except FileNotFoundError:
        raise fail(str(path), "file not found") from None
    except IsADirectoryError:
        raise fail(str(path), "expected a pickle file, found a folder") from None
    except pickle.UnpicklingError as exc:
        raise fail(str(path), f"not a usable pickle: {exc}") from None
    except EOFError:
        raise fail(str(path), "the file is empty or truncated (ran out of data)") from None
    except MemoryError:
        raise fail(str(path), "not enough memory to load the pickle") from None
    except Exception as exc:  # a corrupt stream can raise nearly anything while decoding
        raise fail(str(path), f"not a valid pickle ({type(exc).__name__}: {exc})") from None


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
        return f"array of shape {value.shape} and dtype {value.dtype}"
    return type(value).__name__


def _show(value: Any, limit: int = 60) -> str:
    """A value for an error message: one line, short (arrays by shape and dtype)."""
    if isinstance(value, np.ndarray):
        return _kind(value)
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    return None


def _all_finite(values: np.ndarray) -> bool:
    """np.isfinite(values).all(), read from the bits for float16: the real file is float16, and
    this check over every kept clip was most of extract's time."""
    if values.dtype == np.float16 and values.size:
        exponent_all_ones = 0x7C00  # inf and NaN; finite values have a smaller magnitude
        return int((values.view(np.uint16) & 0x7FFF).max()) < exponent_all_ones
    return bool(np.isfinite(values).all())


def check_annotation(ann: Any, source: str, position: int) -> int:
    """Check one annotation fully; return its person count (0 = degenerate clip, to be skipped).

    Raises PipelineError naming the file, the clip and the field on anything malformed.
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
        if key not in ann:
            raise fail(source, f"{where}: missing key {key!r}")
    label = as_int(ann["label"])
    if label is None or label < 0:
        raise fail(source, f"{where}: label must be an integer >= 0, found {_show(ann['label'])}")
    shape = ann["img_shape"]
    if not (
        isinstance(shape, tuple | list | np.ndarray)
        and len(shape) == 2
        and all((as_int(s) or 0) > 0 for s in shape)
    ):
        raise fail(source, f"{where}: img_shape must be (height, width) > 0, found {_show(shape)}")

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

