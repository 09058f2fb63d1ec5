"""params.yaml as typed sections: one dataclass per section, the single statement of its keys.

Each field's type says what it holds; its rule (from `pipeline.core.rules`) says which values are
allowed, derived from the type where the type says it all (`Literal[...]` choices, `bool`, a
nested section). Loading checks a section against its class and hands on an instance, so a
stage reads `cfg.hidden`, never `cfg["hidden"]`. A value of the wrong type or range ends in one
line naming `params.yaml`, the dotted key, what was expected and what was found (exit code 2
through `errors.cli`). The values themselves live in params.yaml only: there are no defaults
here, and a key missing from the file is an error.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

from pipeline.core.errors import PipelineError, fail, opening
from pipeline.core.paths import STREAM_MODEL
from pipeline.core.rules import (
    Check,
    boolean,
    classes,
    distinct_choices,
    folds,
    hex_digest,
    http_url,
    int_range,
    integer,
    mapping,
    module_callable,
    names_to_paths,
    number,
    one_of,
    regex_with_group,
    regex_with_group_or_null,
    show,
    split_name,
    string,
)
from pipeline.files.inputs import read_bytes

PARAMS_FILE = "params.yaml"
# Stage name -> params section of the model stages (`dvc exp run -S model.hidden=...` tunes the
# improved model). dvc.yaml's foreach states the same map, as DVC needs it there.
STAGE_SECTION = {"baseline": "baseline", "improved": "model"}

# Seeds reach numpy's legacy seeding, sklearn's random_state and torch.manual_seed: the range
# all of them accept, so a bad seed is named here rather than failing deep inside one of them.
SEED = integer(0, 2**32 - 1)

Stream = Literal["joint", "bone", "motion", "bone_motion"]
STREAMS: tuple[str, ...] = get_args(Stream)
# The fusion's stream models are named `stream-<stream>` (STREAM_MODEL, from core.paths: in
# models/streams/): the `ensemble` section, its streams set to that one, with the stream's own
# overrides, for each stream that fusion.streams lists.


def rule(check: Check) -> Any:
    """A field's rule, for fields whose type alone does not say which values are allowed."""
    return field(metadata={"check": check})


class Section:
    """A params section. Subclasses are dataclasses whose fields are the section's keys."""

    def relation(self) -> str | None:
        """A rule between keys, checked once each key has passed its own: the whole error
        text (`<key>: expected ..., found ...`), or None."""
        return None


@dataclass(frozen=True)
class DataParams(Section):
    source: Literal["ucf101", "synthetic"]
    pkl: str = rule(string())
    url: str = rule(http_url)
    md5: str | None = rule(hex_digest("md5"))
    sha256: str | None = rule(hex_digest("sha256"))
    split: int = rule(integer(1, 99))
    train_split: str | None = rule(split_name)
    test_split: str | None = rule(split_name)
    classes: str | list[int] = rule(classes)
    class_pattern: str = rule(regex_with_group)
    label_map: str | None = rule(string(nullable=True))
    val_by: Literal["group", "clip"]
    group_pattern: str = rule(regex_with_group)
    val_fraction: float = rule(number(0.01, 0.99))
    folds: int | None = rule(folds)
    fold: int = rule(integer(0))
    seed: int = rule(SEED)

    def relation(self) -> str | None:
        if self.folds and self.fold >= self.folds:
            expected = f"an integer in [0, {self.folds - 1}] (data.folds is {self.folds})"
            return f"data.fold: expected {expected}, found {self.fold}"
        return None

    def split_names(self) -> tuple[str, str]:
        """The train and test split names this section selects."""
        return self.train_split or f"train{self.split}", self.test_split or f"test{self.split}"


@dataclass(frozen=True)
class FetchParams(Section):
    retries: int = rule(integer(0, 100))
    backoff: float = rule(number(0.0, 600.0))
    timeout: float = rule(number(0.1, 3600.0))


@dataclass(frozen=True)
class SyntheticParams(Section):
    clips_per_group: list[int] = rule(int_range)
    frames: list[int] = rule(int_range)
    mirror: str | None = rule(string(nullable=True))
    seed: int = rule(SEED)


@dataclass(frozen=True)
class ShardsParams(Section):
    frames: int = rule(integer(1, 100000))
    sampling: Literal["uniform", "head"]
    normalize: Literal["image", "video_mean", "body"]
    persons: int = rule(integer(1, 2))
    person_order: Literal["score", "first"]
    min_score: float = rule(number(0.0, 1.0))
    min_joint_visibility: float = rule(number(0.0, 1.0))
    train_views: int = rule(integer(1, 100))
    test_views: int = rule(integer(1, 100))
    seed: int = rule(SEED)
    size: int = rule(integer(1))
    workers: int = rule(integer(0, 512))


@dataclass(frozen=True)
class PoseParams(Section):
    """Your own videos -> PYSKL pickles (the `pose@<name>` stages; `python -m pipeline.pose`'s
    options, as params)."""

    videos: dict[str, str] = rule(names_to_paths)
    estimator: str = rule(module_callable)
    options: dict[str, Any] = rule(mapping)
    persons: int = rule(integer(1, 16))
    stride: int = rule(integer(1, 10000))
    max_side: int = rule(integer(32, 100000))
    group_pattern: str | None = rule(regex_with_group_or_null)
    test_fraction: float = rule(number(0.0, 1.0, hi_open=True))
    seed: int = rule(SEED)
    workers: int = rule(integer(0, 512))


@dataclass(frozen=True)
class TrainParams(Section):
    device: Literal["auto", "cpu", "cuda"]
    seed: int = rule(SEED)
    batch_size: int = rule(integer(1, 1 << 20))
    threads: int = rule(integer(0, 1024))
    nproc: int = rule(integer(1, 1024))
    amp: bool
    drop_last: bool

    def relation(self) -> str | None:
        return batch_split(self.batch_size, self.nproc, "train.nproc")


@dataclass(frozen=True)
class AugmentParams(Section):
    scale: float = rule(number(0.0, 1.0, hi_open=True))
    rotate: float = rule(number(0.0, 180.0))
    flip: float = rule(number(0.0, 1.0))
    temporal: float = rule(number(0.0, 1.0, hi_open=True))
    drop: float = rule(number(0.0, 1.0, hi_open=True))
    stretch: float = rule(number(0.0, 1.0, hi_open=True))


@dataclass(frozen=True)
class EvalParams(Section):
    clips: int = rule(integer(1, 100))
    flip: bool


# Backbone name -> its settings section, filled in by `pipeline.models.registry.register` as each
# backbone's module is imported. params cannot import the models itself: the data stages read
# params without torch. Only a model section needs them, see `backbones`.
BACKBONES: dict[str, type[Section]] = {}


def backbones() -> Mapping[str, type[Section]]:
    """The registered backbones and their settings. Importing `pipeline.models` registers them;
    every stage that reads a model section builds a model, so it imports them anyway."""
    importlib.import_module("pipeline.models")
    return BACKBONES


def _arch(v: Any) -> str | None:
    return one_of(*backbones())(v)


@dataclass(frozen=True)
class ModelParams(Section):
    """A model section: `baseline`, or `model` (the improved model).

    The keys every backbone reads, then one sub-section per backbone named after it
    (`model.lstm.pool`, `model.stgcnpp.frame_pool`), its own settings. The section's own
    `arch` must have its sub-section; the others may be there too (params.yaml holds them all,
    so `-S model.arch=...` alone switches backbone) and are checked when they are.
    """

    arch: str = rule(_arch)
    hidden: int = rule(integer(1, 4096))
    layers: int = rule(integer(1, 32))
    dropout: float = rule(number(0.0, 1.0, hi_open=True))
    streams: list[Stream] = rule(distinct_choices(get_args(Stream)))
    score: bool
    epochs: int = rule(integer(1, 10000))
    optimizer: Literal["adam", "adamw", "sgd"]
    lr: float = rule(number(1e-8, 10.0))
    weight_decay: float = rule(number(0.0, 1.0))
    schedule: Literal["constant", "cosine"]
    warmup_epochs: int = rule(integer(0, 10000))
    label_smoothing: float = rule(number(0.0, 1.0, hi_open=True))
    select: Literal["best", "last"]
    augment: AugmentParams
    eval: EvalParams
    # Backbone name -> its settings, from the sub-sections named after the backbones.
    nets: Mapping[str, Section] = field(default_factory=dict, metadata={"backbones": True})

    @property
    def net(self) -> Any:
        """The settings of this section's own backbone (`arch`)."""
        return self.nets[self.arch]

    def relation(self) -> str | None:
        if self.arch not in self.nets:
            return f"{self.arch} is missing (arch {self.arch} reads its own settings there)"
        return None


def overrides(v: Any) -> str | None:
    """A mapping of a model section's keys to values (each checked by `stream_config`)."""
    return None if isinstance(v, Mapping) else "a mapping of model keys to values ({} for none)"


@dataclass(frozen=True)
class FusionParams(Section):
    """Late fusion: one model per input stream, their probabilities averaged with weights
    chosen on validation. `streams` lists the streams trained and fused, in the order fuse
    weighs them (dvc.yaml's `foreach` makes a stage of each). Each stream's mapping overrides
    the `ensemble` section's keys for that stream's model alone (its `streams` is the stream
    itself); every stream keeps its mapping, listed or not, as dvc.yaml names `fusion.<stream>`."""

    streams: list[Stream] = rule(distinct_choices(STREAMS))
    joint: dict[str, Any] = rule(overrides)
    bone: dict[str, Any] = rule(overrides)
    motion: dict[str, Any] = rule(overrides)
    bone_motion: dict[str, Any] = rule(overrides)
    step: float = rule(number(0.01, 1.0))

    def relation(self) -> str | None:
        if abs(1.0 / self.step - round(1.0 / self.step)) > 1e-9:
            expected = "1 divided by a whole number (0.1, 0.25, ...)"
            return f"fusion.step: expected {expected}, found {self.step}"
        return None


def batch_split(batch_size: int, processes: int, what: str) -> str | None:
    """train.batch_size is the global batch: each of the processes takes an equal share."""
    if batch_size % processes:
        return (
            f"{what}: expected a divisor of train.batch_size ({batch_size}), the global "
            f"batch that the processes share equally, found {processes}"
        )
    return None


NO_AUGMENT = AugmentParams(**{f.name: 0.0 for f in dataclasses.fields(AugmentParams)})

SECTIONS: dict[str, type[Section]] = {
    "data": DataParams,
    "fetch": FetchParams,
    "synthetic": SyntheticParams,
    "pose": PoseParams,
    "shards": ShardsParams,
    "train": TrainParams,
    "baseline": ModelParams,
    "model": ModelParams,
    "ensemble": ModelParams,
    "fusion": FusionParams,
}
S = TypeVar("S", bound=Section)


def _rule(cls: type[Section], name: str, metadata: Mapping[str, Any]) -> Check | type[Section]:
    """A field's check: its own rule, or what its type implies (choices, bool, a section)."""
    kind = get_type_hints(cls)[name]
    if isinstance(kind, type) and issubclass(kind, Section):
        return kind
    if get_origin(kind) is Literal:
        return one_of(*get_args(kind))
    if kind is bool:
        return boolean
    check = metadata.get("check")
    if check is None:
        raise TypeError(f"{cls.__name__}.{name}: a {kind} field needs a rule")
    return check


@functools.cache
def rules(cls: type[Section]) -> dict[str, Check | type[Section]]:
    """Key -> rule of a section, in the order of the class (and of params.yaml); the
    backbones' sub-sections (see `ModelParams`) are not among them."""
    return {
        f.name: _rule(cls, f.name, f.metadata)
        for f in dataclasses.fields(cls)
        if not f.metadata.get("backbones")
    }


def _backbones_field(cls: type[Section]) -> str | None:
    """The field holding a section's backbone sub-sections, if it has one."""
    found = [f.name for f in dataclasses.fields(cls) if f.metadata.get("backbones")]
    return found[0] if found else None


def _build(cls: type[S], values: Any, prefix: str, source: str) -> S:
    if not isinstance(values, Mapping):
        raise fail(source, f"{prefix}: expected a mapping, found {type(values).__name__}")
    schema = rules(cls)
    kwargs = {}
    for key, check in schema.items():
        where = f"{prefix}.{key}"
        if key not in values:
            raise fail(source, f"{where} is missing")
        value = values[key]
        if isinstance(check, type):
            kwargs[key] = _build(check, value, where, source)
            continue
        expected = check(value)
        if expected is not None:
            raise fail(source, f"{where}: expected {expected}, found {show(value)}")
        kwargs[key] = value
    known = list(schema)
    nets_field = _backbones_field(cls)
    if nets_field is not None:
        nets = backbones()
        known += list(nets)
        kwargs[nets_field] = {
            name: _build(settings, values[name], f"{prefix}.{name}", source)
            for name, settings in nets.items()
            if name in values
        }
    unknown = sorted(set(values) - set(known), key=str)  # YAML keys need not be strings
    if unknown:
        raise fail(source, f"{prefix}: unknown key {unknown[0]!r} (known: {', '.join(known)})")
    section = cls(**kwargs)
    problem = section.relation()
    if problem is not None:
        raise fail(source, problem if nets_field is None else f"{prefix}.{problem}")
    return section


def parse(name: str, values: Any, source: str = PARAMS_FILE) -> Any:
    """Section `name` built from plain values (params.yaml's, or a config stored in a
    checkpoint), every key checked; errors name `source` and the dotted key."""
    return _build(SECTIONS[name], values, name, source)


def plain(section: Section) -> dict[str, Any]:
    """A section as the plain values params.yaml holds (for checkpoints and fingerprints)."""
    out = dataclasses.asdict(section)  # type: ignore[call-overload]
    nets_field = _backbones_field(type(section))
    if nets_field is not None:
        out.update(out.pop(nets_field))  # the backbones' sub-sections, under their names
    return out


# params.yaml is a few KiB; a file far larger is not a params file, and YAML's parser would take
# minutes on it before any check could say so.
PARAMS_LIMIT = 1 << 20


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (YAML 1.2 forbids it, and
    DVC refuses such a params file) instead of keeping the last value silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(f"key {key!r} appears twice (lines {seen[key]} and {line})")
                seen[key] = line
            except TypeError:  # an unhashable key: the base class reports it
                break
        return super().construct_mapping(node, deep)


class _DuplicateKey(Exception):
    pass


def read(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The whole params file, unchecked (but no larger than PARAMS_LIMIT, without a key twice)."""
    path = Path(path)
    with opening(
        path,
        missing="params file not found (run from the project root)",
        folder="is a folder; expected the params file",
        unreadable="cannot read the params file",
    ):
        raw = read_bytes(path, PARAMS_LIMIT, "the params file")
    try:
        data = yaml.load(raw.decode("utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 (safe)
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise fail(
            str(path), f"not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line})"
        ) from None
    except _DuplicateKey as exc:
        raise fail(str(path), f"not valid params: {exc}") from None
    except yaml.YAMLError as exc:
        raise fail(str(path), f"not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise fail(str(path), "not valid YAML (nested too deeply)") from None
    except ValueError:  # an integer of more digits than Python converts
        limit = sys.get_int_max_str_digits()
        raise fail(str(path), f"not valid params: a number of more than {limit} digits") from None
    if not isinstance(data, dict):
        raise fail(str(path), "expected a mapping of sections at top level")
    return data


def load(*sections: str, path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    """The named sections of params.yaml, each checked and built as its class."""
    data = read(path)
    out = {}
    for name in sections:
        if name not in data:
            raise fail(str(path), f"section {name!r} is missing")
        out[name] = parse(name, data[name], str(path))
    return out


MODEL_NAMES = (*STAGE_SECTION, *(STREAM_MODEL + stream for stream in STREAMS))


def model_section(stage: str) -> str:
    """The params section of a model name (`baseline`, `improved`, or a stream model's
    `stream-<stream>`, built from the `ensemble` section)."""
    if stage not in MODEL_NAMES:
        raise PipelineError(f"model name: expected one of {list(MODEL_NAMES)}, found {stage!r}")
    return STAGE_SECTION.get(stage, "ensemble")


def model_argument(argv: list[str], module: str) -> str:
    """The one command-line argument of a model stage: `baseline`, `improved` or a stream
    model's `stream-<stream>`."""
    if len(argv) != 1 or argv[0] not in MODEL_NAMES:
        raise PipelineError(f"usage: python -m {module} {{{','.join(MODEL_NAMES)}}}")
    return argv[0]


def stream_config(model: Mapping[str, Any], fusion: FusionParams, stream: str) -> ModelParams:
    """The stream model's section: `model` (the `ensemble` section's plain values) with
    streams [stream] and the overrides of `fusion.<stream>`, each checked and named as that
    key."""
    where = f"fusion.{stream}"
    changes = dict(getattr(fusion, stream))
    schema = rules(ModelParams)
    for key, value in changes.items():
        if key in ("streams", "eval") or (key not in schema and key not in backbones()):
            known = [k for k in [*schema, *backbones()] if k not in ("streams", "eval")]
            raise fail(PARAMS_FILE, f"{where}: unknown key {key!r} (known: {', '.join(known)})")
        check = schema.get(key) or backbones()[key]
        if isinstance(check, type):
            _build(check, value, f"{where}.{key}", PARAMS_FILE)
        elif (expected := check(value)) is not None:
            raise fail(PARAMS_FILE, f"{where}.{key}: expected {expected}, found {show(value)}")
    return parse("ensemble", {**model, **changes, "streams": [stream]})


def load_model(name: str, path: str | Path = PARAMS_FILE) -> tuple[TrainParams, ModelParams]:
    """The train section and the config of model `name` (see `model_section`), checked."""
    section = model_section(name)
    if not name.startswith(STREAM_MODEL):
        loaded = load("train", section, path=path)
        return loaded["train"], loaded[section]
    loaded = load("train", "ensemble", "fusion", path=path)
    stream, listed = name.removeprefix(STREAM_MODEL), loaded["fusion"].streams
    if stream not in listed:  # fuse would never read it, and no stage owns its file
        raise fail(
            str(path),
            f"fusion.streams: expected a list naming {stream} (only the listed streams' models "
            f"are trained and fused), found {show(listed)}",
        )
    base = read(path)["ensemble"]
    return loaded["train"], stream_config(base, loaded["fusion"], stream)


def unknown_key(data: Mapping[Any, Any]) -> str | None:
    """The first key of a whole params file that no section has, as a message naming the
    nearest known key; None when every key is known. A stage checks only the sections it
    reads, so a key that no stage reads (a typo added with `dvc exp run -S +model.hiden=64`)
    is found only here (the `check` stage)."""
    return _unknown_in(data, SECTIONS, "")


def _unknown_in(values: Mapping[Any, Any], schema: Mapping[str, Any], prefix: str) -> str | None:
    import difflib

    for key, value in values.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in schema:
            near = difflib.get_close_matches(str(key), list(schema), n=1, cutoff=0.6)
            hint = f"did you mean {near[0]!r}?" if near else f"known: {', '.join(schema)}"
            return f"{prefix or 'top level'}: unknown key {str(key)!r} ({hint})"
        below = schema[key]
        if isinstance(below, type) and issubclass(below, Section) and isinstance(value, Mapping):
            below_schema: dict[str, Any] = dict(rules(below))
            if _backbones_field(below) is not None:  # and each backbone's own settings
                below_schema.update(backbones())
            problem = _unknown_in(value, below_schema, where)
            if problem is not None:
                return problem
    return None
