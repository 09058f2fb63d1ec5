"""params.yaml loading and validation: every rule kind rejects a wrong value by its dotted key."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import random
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import (
    DELETE,
    PARAMS_YAML,
    call_stage,
    error_line,
    make_dataset,
    section,
    write_params,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import extract
from pipeline.core import params
from pipeline.core.errors import PipelineError
from pipeline.learning import features, runtime, training
from pipeline.models import build_model

SECTIONS = tuple(params.SECTIONS)


def test_project_params_load_and_validate_in_every_section(tmp_path):
    raw = yaml.safe_load(PARAMS_YAML.read_text())
    assert set(SECTIONS) <= set(raw)
    loaded = params.load(*SECTIONS, path=PARAMS_YAML)
    assert list(loaded) == list(SECTIONS)
    for name in SECTIONS:
        assert params.plain(loaded[name]) == raw[name]
        assert params.parse(name, raw[name]) == loaded[name]
    # a file rewritten through the test helper is equally valid
    write_params(tmp_path)
    assert params.load(*SECTIONS, path=tmp_path / "params.yaml") == loaded


def test_load_returns_only_the_sections_asked_for():
    loaded = params.load("shards", path=PARAMS_YAML)
    assert list(loaded) == ["shards"]
    assert isinstance(loaded["shards"], params.ShardsParams)
    assert loaded["shards"].frames == 64


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        # integer(lo, hi)
        ("shards.frames", 0, r"an integer in \[1, 100000\]"),
        ("shards.frames", "64", "an integer"),
        ("shards.frames", 64.0, "an integer"),
        ("shards.persons", 3, r"an integer in \[1, 2\]"),
        ("shards.persons", True, "an integer"),
        ("data.seed", -1, r"an integer in \[0, 4294967295\]"),
        ("train.seed", 2**64, r"an integer in \[0, 4294967295\]"),
        ("shards.seed", 2**40, r"an integer in \[0, 4294967295\]"),
        ("data.fold", -1, "an integer >= 0"),
        ("data.folds", 1, "null or an integer >= 2"),
        ("data.folds", 2.0, "null or an integer >= 2"),
        ("train.batch_size", None, "an integer"),
        # number(lo, hi, hi_open)
        ("data.val_fraction", 1.5, r"a number in \[0.01, 0.99\]"),
        ("data.val_fraction", 0.0, r"a number in \[0.01, 0.99\]"),
        ("data.val_fraction", "0.2", "a number"),
        ("data.val_fraction", float("nan"), "a number"),
        ("fetch.backoff", float("inf"), "a number"),
        ("model.dropout", 1.0, r"a number in \[0.0, 1.0\)"),
        ("model.lr", 0, r"a number in \[1e-08, 10.0\]"),
        ("shards.min_score", False, "a number"),
        # one_of
        ("shards.sampling", "random", r"one of \['uniform', 'head'\]"),
        ("shards.normalize", "Image", "one of"),
        ("train.device", "gpu", r"one of \['auto', 'cpu', 'cuda'\]"),
        ("data.val_by", None, "one of"),
        ("model.tcn.frame_pool", "max", r"one of \['mean', 'mean_max'\], found 'max'"),
        ("baseline.stgcnpp.frame_pool", None, "one of"),
        ("baseline.lstm.pool", "pack", r"one of \['packed', 'padded'\]"),
        # string / nullable string
        ("data.pkl", "", "a non-empty string"),
        ("data.pkl", None, "a non-empty string"),
        ("data.url", 5, "an http:// or https:// URL"),
        ("data.url", "ftp://host/x", "an http:// or https:// URL, found"),
        ("data.url", "http:///x", "URL with a host name \\(this one has no host\\)"),
        ("data.url", "http://host:99999/x", "URL \\(Port out of range"),
        ("data.url", "http://host/a b", "no spaces or control characters"),
        ("data.pkl", "a\0b", "a non-empty string"),
        ("data.label_map", 3, "a non-empty string or null"),
        ("synthetic.mirror", "", "a non-empty string or null"),
        # boolean
        ("train.amp", "yes", "true or false"),
        ("train.drop_last", 0, "true or false"),
        ("model.score", None, "true or false"),
        # hex digests
        ("data.md5", "xyz", "null or a 32-digit hex digest"),
        ("data.sha256", "a" * 63, "null or a 64-digit hex digest"),
        ("data.md5", 12345678901234567890123456789012, "hex digest in quotes \\(YAML read these"),
        # regular expression with a capture group
        ("data.group_pattern", r"_g\d+_", "a regular expression with one capture group"),
        ("data.class_pattern", "(unclosed", "a regular expression with one capture group"),
        # classes
        ("data.classes", "some", '"all" or a non-empty list of distinct labels >= 0'),
        ("data.classes", [], '"all" or a non-empty list'),
        ("data.classes", [0, 0], "distinct labels"),
        ("data.classes", [-1], "labels >= 0"),
        ("data.classes", [0.5], "labels >= 0"),
        ("data.classes", 3, '"all" or a non-empty list'),
        # [min, max] ranges
        ("synthetic.frames", [5, 1], r"\[min, max\] with 1 <= min <= max"),
        ("synthetic.clips_per_group", [0, 3], r"\[min, max\]"),
        ("synthetic.frames", [40], r"\[min, max\]"),
        # streams
        ("model.streams", [], "a non-empty list of distinct values from"),
        ("model.streams", ["joint", "joint"], "a non-empty list of distinct values from"),
        ("baseline.streams", ["rgb"], r"values from \['bone', 'bone_motion', 'joint', 'motion'\]"),
        # split names
        ("data.train_split", "", "null or a split name"),
        ("data.test_split", 1, "null or a split name"),
        # nested sections
        ("model.augment.scale", 1.0, r"a number in \[0.0, 1.0\)"),
        ("baseline.eval.clips", 0, r"an integer in \[1, 100\]"),
    ],
)
def test_each_rule_rejects_a_wrong_value_naming_the_dotted_key(tmp_path, key, value, expected):
    write_params(tmp_path, {key: value})
    section = key.split(".")[0]
    with pytest.raises(PipelineError) as excinfo:
        params.load(section, path=tmp_path / "params.yaml")
    text = str(excinfo.value)
    assert text.startswith(f"{tmp_path / 'params.yaml'}: {key}: expected "), text
    assert re.search(expected, text), text
    assert text.endswith(f"found {value!r}"), text


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"shards.frames": DELETE}, "shards.frames is missing"),
        ({"model.augment.flip": DELETE}, "model.augment.flip is missing"),
        ({"data.colour": "red"}, "data: unknown key 'colour'"),
        ({"model.eval.extra": 1}, "model.eval: unknown key 'extra'"),
        ({"model.augment": "none"}, "model.augment: expected a mapping, found str"),
        ({"train": [1, 2]}, "train: expected a mapping, found list"),
        ({"shards": DELETE}, "section 'shards' is missing"),
    ],
)
def test_structure_errors_name_the_key(tmp_path, override, expected):
    write_params(tmp_path, override)
    section = next(iter(override)).split(".")[0]
    with pytest.raises(PipelineError, match=re.escape(expected)):
        params.load(section, path=tmp_path / "params.yaml")


def test_an_error_in_one_section_does_not_affect_loading_another(tmp_path):
    write_params(tmp_path, {"model.hidden": 0})
    assert params.load("data", "shards", path=tmp_path / "params.yaml")["shards"].frames == 64
    with pytest.raises(PipelineError, match="model.hidden"):
        params.load("data", "model", path=tmp_path / "params.yaml")


def test_unreadable_params_files_name_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    with pytest.raises(PipelineError, match="params file not found"):
        params.read(path)
    path.write_text("data: [unclosed\n")
    with pytest.raises(PipelineError, match="not valid YAML"):
        params.read(path)
    path.write_text("- a\n- b\n")
    with pytest.raises(PipelineError, match="expected a mapping of sections at top level"):
        params.read(path)


def test_parse_checks_a_stored_config_by_section():
    good = copy.deepcopy(yaml.safe_load(PARAMS_YAML.read_text())["model"])
    assert params.parse("model", good, source="ckpt.pt").layers == good["layers"]
    good["layers"] = 0
    with pytest.raises(PipelineError, match=r"^ckpt.pt: model.layers: expected an integer"):
        params.parse("model", good, source="ckpt.pt")


def test_a_section_round_trips_through_its_plain_values():
    """What a checkpoint stores (plain values) builds the same section again."""
    model = section(
        "model", streams=["bone"], augment={**params.plain(params.NO_AUGMENT), "flip": 0.5}
    )
    assert model.augment.flip == 0.5 and model.eval.clips == 10
    assert params.parse("model", params.plain(model)) == model


def test_a_field_whose_type_does_not_say_what_it_accepts_needs_a_rule():
    """An int, a float or a list says nothing of its range: such a field without a rule of its
    own is refused when the section's rules are derived (for params.yaml's sections, at import)."""

    @dataclasses.dataclass(frozen=True)
    class Loose(params.Section):
        ok: bool
        count: int

    with pytest.raises(TypeError, match=r"Loose\.count: a <class 'int'> field needs a rule"):
        params.rules(Loose)


def test_split_names_default_to_the_numbered_official_split():
    data = section("data", split=2, train_split=None, test_split=None)
    assert data.split_names() == ("train2", "test2")
    assert replace(data, split=1).split_names() == ("train1", "test1")
    assert replace(data, train_split="train").split_names() == ("train", "test2")
    assert replace(data, train_split="train", test_split="test").split_names() == (
        "train",
        "test",
    )


def test_model_section_maps_stage_names():
    assert params.model_section("baseline") == "baseline"
    assert params.model_section("improved") == "model"
    with pytest.raises(PipelineError, match="model name: expected one of"):
        params.model_section("model")


# --- fuzzed values: a wrong value is one line naming its key, never another exception ------------


def _leaves(cls: type, prefix: str) -> list[str]:
    out = []
    sections = dict(params.rules(cls))
    if cls is params.ModelParams:  # and each backbone's own settings
        sections.update(params.backbones())
    for key, rule in sections.items():
        dotted = f"{prefix}.{key}"
        out += _leaves(rule, dotted) if isinstance(rule, type) else [dotted]
    return out


LEAVES = [key for name, cls in params.SECTIONS.items() for key in _leaves(cls, name)]
# Values at and beyond the edges of what some rule accepts, of every type YAML can produce.
EDGES = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2,
    3,
    100,
    2**31,
    2**32 - 1,
    2**32,
    2**63,
    2**64,
    10**400,
    0.0,
    -0.0,
    0.5,
    1.0,
    1e-9,
    10.5,
    1e308,
    float("nan"),
    float("inf"),
    -float("inf"),
    "",
    "\0",
    "all",
    "auto",
    "mean",
    "joint",
    "lstm",
    "http:///x",
    "ftp://h/x",
    "http://h:99999/",
    "https://h/x y",
    "^(v)_",
    "(",
    "a{99999999999}",
    "(" * 200 + ")" * 200,
    "0" * 32,
    "a" * 64,
    "/",
    ".",
    "params.yaml",
    [],
    [0],
    [0, 0],
    [1, 1],
    [[1]],
    ["joint", 1],
    [{}],
    {},
    {"a": 1},
    [None],
    [1.5, 2],
]
SCALARS = st.one_of(
    st.sampled_from(EDGES),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
VALUES = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=3),
    st.lists(st.lists(SCALARS, max_size=2), max_size=2),
    st.dictionaries(st.text(max_size=3), SCALARS, max_size=2),
)
TINY_DATA = make_dataset(
    labels=(0, 1), groups=range(1, 5), test_groups=(1,), clips_per_group=1, frames=(3, 5), seed=7
)


def _set(values: dict, dotted: str, value: object) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        values = values[key]
    values[last] = value


BUILD = {"arch", "hidden", "layers", "dropout", "streams", "score", *params.backbones()}
STEPS = {"optimizer", "lr", "weight_decay", "schedule", "warmup_epochs", "epochs"}


def _use(key: str, values: Any) -> None:
    """What the stages do first with a section the schema accepted (typed), for a changed
    `key`: none of it may fail."""
    section, _, field = key.partition(".")
    if section == "data":
        extract.select(values, copy.deepcopy(TINY_DATA), "f.pkl")
    elif section == "train":
        state = random.getstate(), np.random.get_state(), torch.get_rng_state()
        try:
            runtime.seed_everything(values.seed)
            np.random.default_rng(training.epoch_seed(values.seed, 1))
        finally:
            random.setstate(state[0])
            np.random.set_state(state[1])
            torch.set_rng_state(state[2])
    elif section == "shards":
        np.random.default_rng([values.seed, 0])
    elif field in STEPS:
        optimizer = training.make_optimizer(torch.nn.Linear(2, 2), values)
        schedule = training.make_schedule(optimizer, values, 3)
        optimizer.step()
        schedule.step()
    elif field.split(".")[0] in BUILD:
        channels = features.in_channels(values.streams, values.score)
        model = build_model(values, channels, 2, 3)
        x = torch.zeros(2, 9, 2, 17, 3)
        model.eval()(
            features.build_input(x, torch.tensor([9, 4]), values.streams, values.score),
            torch.tensor([9, 4]),
        )


@pytest.mark.slow
def test_every_key_accepts_an_edge_value_that_works_or_names_itself(tmp_path):
    """Each key of the schema set to each of EDGES in turn: refused in one line naming the key,
    or accepted and then usable where a stage uses it first (seeds seeded, data selected,
    models built and run). A seed numpy or torch would refuse is refused here instead."""
    raw = yaml.safe_load(PARAMS_YAML.read_text())
    for key in LEAVES:
        section = key.split(".")[0]
        for value in EDGES:
            values = copy.deepcopy(raw[section])
            _set(values, key.partition(".")[2], copy.deepcopy(value))
            try:
                typed = params.parse(section, values)
            except PipelineError as exc:
                text = str(exc)
                assert text.startswith(f"params.yaml: {key}") and "\n" not in text, (key, text)
                continue
            with contextlib.chdir(tmp_path):  # label_map paths resolve here
                try:
                    _use(key, typed)
                except PipelineError as exc:  # e.g. a group pattern no clip matches
                    assert "\n" not in str(exc), (key, value)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(st.tuples(st.sampled_from(LEAVES), VALUES), min_size=1, max_size=3))
@pytest.mark.slow
def test_fuzzed_values_load_or_fail_in_one_line_naming_a_changed_key(tmp_path, changes):
    """Random values of wrong types and ranges for random keys: params.load accepts them or
    raises a one-line PipelineError naming one of the changed keys. An accepted data section
    then goes through extract's selection on a tiny dataset, which must end cleanly too."""
    overrides = dict(changes)
    write_params(tmp_path, overrides)
    path = tmp_path / "params.yaml"
    try:
        loaded = params.load(*SECTIONS, path=path)
    except PipelineError as exc:
        text = str(exc)
        assert "\n" not in text and text.startswith(f"{path}: "), text
        assert any(key in text for key in overrides), (text, overrides)
        return
    with contextlib.chdir(tmp_path):  # a label_map path is read relative to here
        try:
            extract.select(loaded["data"], copy.deepcopy(TINY_DATA), "f.pkl")
        except PipelineError as exc:
            assert "\n" not in str(exc)


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "insert", "delete", "truncate"]),
            st.integers(0, 10**6),
            st.integers(0, 255),
        ),
        min_size=1,
        max_size=4,
    )
)
@pytest.mark.slow
def test_a_damaged_params_file_loads_or_fails_in_one_line(tmp_path, edits):
    """Random byte edits of the project's params.yaml (bad UTF-8, broken YAML, odd types)."""
    raw = bytearray(PARAMS_YAML.read_bytes())
    for kind, position, value in edits:
        at = position % max(len(raw), 1)
        if kind == "flip" and raw:
            raw[at] ^= value or 1
        elif kind == "insert":
            raw.insert(at, value)
        elif kind == "delete" and raw:
            del raw[at]
        else:
            del raw[at:]
    path = tmp_path / "params.yaml"
    path.write_bytes(bytes(raw))
    try:
        params.load(*SECTIONS, path=path)
    except PipelineError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(f"{path}: "), str(exc)


# --- keys no stage reads: the check stage ------------------------------------------------------


@pytest.mark.parametrize(
    ("dotted", "expected"),
    [
        ("model.hiden", "model: unknown key 'hiden' (did you mean 'hidden'?)"),
        ("baseline.eval.clip", "baseline.eval: unknown key 'clip' (did you mean 'clips'?)"),
        ("modle", "top level: unknown key 'modle' (did you mean 'model'?)"),
        ("model.tcn.frame_pol", "model.tcn: unknown key 'frame_pol' (did you mean 'frame_pool'?)"),
        (
            "zzz",
            "top level: unknown key 'zzz' (known: data, fetch, synthetic, pose, shards, train, "
            "baseline, model, ensemble, fusion)",
        ),
    ],
)
def test_an_unknown_key_anywhere_names_the_nearest_known_one(dotted: str, expected: str) -> None:
    values = yaml.safe_load(PARAMS_YAML.read_text())
    assert params.unknown_key(values) is None  # the project's own file: every key known
    *parents, last = dotted.split(".")
    node = values
    for key in parents:
        node = node[key]
    node[last] = 64
    assert params.unknown_key(values) == expected


def test_the_check_stage_stops_on_a_key_no_stage_reads(tmp_path: Path) -> None:
    write_params(tmp_path, {"model.hiden": 64})  # what `dvc exp run -S +model.hiden=64` writes
    assert error_line(call_stage("check", tmp_path)) == (
        "error: params.yaml: model: unknown key 'hiden' (did you mean 'hidden'?)"
    )
    write_params(tmp_path)
    done = call_stage("check", tmp_path)
    assert done.returncode == 0 and done.stdout == "check: every key of params.yaml is known\n"
