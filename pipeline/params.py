"""Read params.yaml and check each section a stage uses, so bad values stop before any work.

The schema below is the single statement of what every knob accepts; a value of the wrong type
or range ends in one line naming `params.yaml`, the dotted key, what was expected and what was
found (exit code 2 through `errors.cli`).
"""

from __future__ import annotations

import math
import re
import reprlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from pipeline.errors import PipelineError, fail

PARAMS_FILE = "params.yaml"
MODEL_SECTIONS = (
    "baseline",
    "model",
)  # stage name -> section: baseline -> baseline, improved -> model
STAGE_SECTION = {"baseline": "baseline", "improved": "model"}

Check = Callable[[Any], str | None]  # returns a description of what was expected, or None if fine


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    # an int is finite whatever its size (math.isfinite would overflow converting a huge one)
    return _is_int(v) or (isinstance(v, float) and math.isfinite(v))


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    def check(v: Any) -> str | None:
        ok = _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi)
        return None if ok else f"an integer{_range(lo, hi)}"

    return check


def number(lo: float | None = None, hi: float | None = None, hi_open: bool = False) -> Check:
    def check(v: Any) -> str | None:
        ok = _is_num(v) and (lo is None or v >= lo)
        ok = ok and (hi is None or (v < hi if hi_open else v <= hi))
        return None if ok else f"a number{_range(lo, hi, hi_open)}"

    return check


def _range(lo: float | None, hi: float | None, hi_open: bool = False) -> str:
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}{')' if hi_open else ']'}"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def one_of(*choices: Any) -> Check:
    def check(v: Any) -> str | None:
        return None if v in choices and type(v) is type(choices[0]) else f"one of {list(choices)}"

    return check


def string(nullable: bool = False) -> Check:
    """A non-empty string (a file path, say): no NUL character, which no path can hold."""

    def check(v: Any) -> str | None:
        if v is None and nullable:
            return None
        ok = isinstance(v, str) and v and "\0" not in v
        return None if ok else "a non-empty string" + (" or null" * nullable)

    return check


def http_url(v: Any) -> str | None:
    """An http(s) URL with a host: the only kind the fetch stage downloads."""
    expected = "an http:// or https:// URL"
    if not isinstance(v, str) or any(ch.isspace() or ord(ch) < 32 for ch in v):
        return expected + " (no spaces or control characters)" * isinstance(v, str)
    try:
        parts = urlsplit(v)
        _ = parts.port  # raises ValueError on a port out of range
    except ValueError as exc:
        return f"{expected} ({exc})"
    if parts.scheme.lower() not in ("http", "https"):
        return expected
    return None if parts.hostname else f"{expected} with a host name (this one has no host)"


def boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "true or false"


def hex_digest(length: int) -> Check:
    def check(v: Any) -> str | None:
        if v is None or (isinstance(v, str) and re.fullmatch(f"[0-9a-fA-F]{{{length}}}", v)):
            return None
        if _is_int(v):  # YAML reads unquoted digits as a number, dropping leading zeros
            return f"a {length}-digit hex digest in quotes (YAML read these digits as a number)"
        return f"null or a {length}-digit hex digest"

    return check


def regex_with_group(v: Any) -> str | None:
    try:
        ok = isinstance(v, str) and re.compile(v).groups >= 1
    except (re.error, RecursionError, OverflowError, ValueError):  # a huge count, deep nesting
        ok = False
    return None if ok else "a regular expression with one capture group"


def classes(v: Any) -> str | None:
    ok = v == "all" or (
        isinstance(v, list)
        and v
        and all(_is_int(x) and x >= 0 for x in v)
        and len(set(v)) == len(v)
    )
    return None if ok else '"all" or a non-empty list of distinct labels >= 0'


def int_range(v: Any) -> str | None:
    ok = isinstance(v, list) and len(v) == 2 and all(_is_int(x) and x >= 1 for x in v)
    return None if ok and v[0] <= v[1] else "[min, max] with 1 <= min <= max"


def streams(v: Any) -> str | None:
    allowed = {"joint", "bone", "motion"}
    ok = isinstance(v, list) and v and all(isinstance(x, str) for x in v)
    ok = ok and set(v) <= allowed and len(set(v)) == len(v)
    return None if ok else f"a non-empty list drawn from {sorted(allowed)}"


def folds(v: Any) -> str | None:
    return None if v is None or (_is_int(v) and v >= 2) else "null or an integer >= 2"


def split_name(v: Any) -> str | None:
    return None if v is None or (isinstance(v, str) and v) else "null or a split name"


# Seeds reach numpy's legacy seeding, sklearn's random_state and torch.manual_seed: the range
# all of them accept, so a bad seed is named here rather than failing deep inside one of them.
SEED = integer(0, 2**32 - 1)

AUGMENT = {
    "scale": number(0.0, 1.0, hi_open=True),
    "rotate": number(0.0, 180.0),
    "flip": number(0.0, 1.0),
    "temporal": number(0.0, 1.0, hi_open=True),
    "drop": number(0.0, 1.0, hi_open=True),
    "stretch": number(0.0, 1.0, hi_open=True),
}
EVAL = {"clips": integer(1, 100), "flip": boolean}
MODEL = {
    "arch": one_of("lstm", "tcn", "stgcn"),
    "hidden": integer(1, 4096),
    "layers": integer(1, 32),
    "dropout": number(0.0, 1.0, hi_open=True),
    "pool": one_of("packed", "padded"),
    "frame_pool": one_of("mean", "mean_max"),
    "streams": streams,
    "score": boolean,
    "epochs": integer(1, 10000),
    "optimizer": one_of("adam", "adamw", "sgd"),
    "lr": number(1e-8, 10.0),
    "weight_decay": number(0.0, 1.0),
    "schedule": one_of("constant", "cosine"),
    "warmup_epochs": integer(0, 10000),
    "label_smoothing": number(0.0, 1.0, hi_open=True),
    "select": one_of("best", "last"),
    "augment": AUGMENT,
    "eval": EVAL,
}
SCHEMA: dict[str, dict[str, Any]] = {
    "data": {
        "source": one_of("ucf101", "synthetic"),
        "pkl": string(),
        "url": http_url,
        "md5": hex_digest(32),
        "sha256": hex_digest(64),
        "split": integer(1, 99),
        "train_split": split_name,
        "test_split": split_name,
        "classes": classes,
        "class_pattern": regex_with_group,
        "label_map": string(nullable=True),
        "val_by": one_of("group", "clip"),
        "group_pattern": regex_with_group,
        "val_fraction": number(0.01, 0.99),
        "folds": folds,
        "fold": integer(0),
        "seed": SEED,
    },
    "fetch": {
        "retries": integer(0, 100),
        "backoff": number(0.0, 600.0),
        "timeout": number(0.1, 3600.0),
    },
    "synthetic": {
        "clips_per_group": int_range,
        "frames": int_range,
        "mirror": string(nullable=True),
        "seed": SEED,
    },
    "shards": {
        "frames": integer(1, 100000),
        "sampling": one_of("uniform", "head"),
        "normalize": one_of("image", "video_mean", "body"),
        "persons": integer(1, 2),
        "person_order": one_of("score", "first"),
        "min_score": number(0.0, 1.0),
        "min_joint_visibility": number(0.0, 1.0),
        "train_views": integer(1, 100),
        "test_views": integer(1, 100),
        "seed": SEED,
        "size": integer(1),
        "workers": integer(0, 512),
    },
    "train": {
        "device": one_of("auto", "cpu", "cuda"),
        "seed": SEED,
        "batch_size": integer(1, 1 << 20),
        "threads": integer(0, 1024),
        "amp": boolean,
        "drop_last": boolean,
    },
    "baseline": MODEL,
    "model": MODEL,
}


# A found value is shown shortened: YAML aliases can make a small file hold a value whose full
# repr would be huge (a list of lists of the same list, nested), and one line must stay short.
_SHOW = reprlib.Repr()
_SHOW.maxlevel = 2
_SHOW.maxlist = _SHOW.maxtuple = _SHOW.maxdict = _SHOW.maxset = 4
_SHOW.maxstring = _SHOW.maxlong = _SHOW.maxother = 100  # a whole sha256 fits


def show(value: Any) -> str:
    """A value as an error message quotes it: its repr, shortened."""
    return _SHOW.repr(value)


def _check(section: Mapping[str, Any], schema: Mapping[str, Any], prefix: str, source: str) -> None:
    if not isinstance(section, Mapping):
        raise fail(source, f"{prefix}: expected a mapping, found {type(section).__name__}")
    for key, rule in schema.items():
        where = f"{prefix}.{key}"
        if key not in section:
            raise fail(source, f"{where} is missing")
        value = section[key]
        if isinstance(rule, Mapping):
            _check(value, rule, where, source)
            continue
        expected = rule(value)
        if expected is not None:
            raise fail(source, f"{where}: expected {expected}, found {show(value)}")
    unknown = sorted(set(section) - set(schema), key=str)  # YAML keys need not be strings
    if unknown:
        raise fail(source, f"{prefix}: unknown key {unknown[0]!r} (known: {', '.join(schema)})")


def _fold_in_range(data: Mapping[str, Any]) -> str | None:
    folds, fold = data["folds"], data["fold"]
    if folds and fold >= folds:
        expected = f"an integer in [0, {folds - 1}] (data.folds is {folds})"
        return f"data.fold: expected {expected}, found {fold}"
    return None


# Rules between keys of one section, checked once each key has passed its own rule.
RELATIONS: dict[str, list[Callable[[Mapping[str, Any]], str | None]]] = {"data": [_fold_in_range]}


def _check_section(name: str, values: Any, source: str) -> None:
    _check(values, SCHEMA[name], name, source)
    for rule in RELATIONS.get(name, []):
        problem = rule(values)
        if problem is not None:
            raise fail(source, problem)


def read(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The whole params file, unchecked."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise fail(str(path), "params file not found (run from the project root)") from None
    except IsADirectoryError:
        raise fail(str(path), "is a folder; expected the params file") from None
    except OSError as exc:
        raise fail(str(path), f"cannot read the params file ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise fail(
            str(path), f"not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line})"
        ) from None
    except yaml.YAMLError as exc:
        raise fail(str(path), f"not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise fail(str(path), "not valid YAML (nested too deeply)") from None
    if not isinstance(data, dict):
        raise fail(str(path), "expected a mapping of sections at top level")
    return data


def load(*sections: str, path: str | Path = PARAMS_FILE) -> dict[str, dict[str, Any]]:
    """The named sections of params.yaml, each checked against SCHEMA."""
    data = read(path)
    out = {}
    for name in sections:
        if name not in data:
            raise fail(str(path), f"section {name!r} is missing")
        _check_section(name, data[name], str(path))
        out[name] = data[name]
    return out


def validate(section: str, values: Mapping[str, Any], source: str = PARAMS_FILE) -> None:
    """Check one section's values (e.g. a config stored in a checkpoint)."""
    _check_section(section, values, source)


def model_section(stage: str) -> str:
    """The params section of a model stage name (`baseline` or `improved`)."""
    if stage not in STAGE_SECTION:
        raise PipelineError(f"model name: expected one of {list(STAGE_SECTION)}, found {stage!r}")
    return STAGE_SECTION[stage]


def model_argument(argv: list[str], module: str) -> str:
    """The one command-line argument of a model stage: `baseline` or `improved`."""
    if len(argv) != 1 or argv[0] not in STAGE_SECTION:
        raise PipelineError(f"usage: python -m {module} {{{','.join(STAGE_SECTION)}}}")
    return argv[0]


def split_names(data: Mapping[str, Any]) -> tuple[str, str]:
    """The train and test split names the data section selects."""
    train = data["train_split"] or f"train{data['split']}"
    test = data["test_split"] or f"test{data['split']}"
    return train, test
