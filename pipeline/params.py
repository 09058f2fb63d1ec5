"""Read params.yaml and check each section a stage uses, so bad values stop before any work.

The schema below is the single statement of what every knob accepts; a value of the wrong type
or range ends in one line naming `params.yaml`, the dotted key, what was expected and what was
found (exit code 2 through `errors.cli`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError, fail
from pipeline.rules import (
    boolean,
    classes,
    folds,
    hex_digest,
    http_url,
    int_range,
    integer,
    number,
    one_of,
    regex_with_group,
    show,
    split_name,
    streams,
    string,
)

PARAMS_FILE = "params.yaml"
MODEL_SECTIONS = (
    "baseline",
    "model",
)  # stage name -> section: baseline -> baseline, improved -> model
STAGE_SECTION = {"baseline": "baseline", "improved": "model"}

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
