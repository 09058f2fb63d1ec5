"""params.yaml loading and validation: every rule kind rejects a wrong value by its dotted key."""

from __future__ import annotations

import copy
import re

import pytest
import yaml
from conftest import DELETE, PARAMS_YAML, write_params

from pipeline import params
from pipeline.errors import PipelineError

SECTIONS = tuple(params.SCHEMA)


def test_project_params_load_and_validate_in_every_section(tmp_path):
    raw = yaml.safe_load(PARAMS_YAML.read_text())
    assert set(SECTIONS) <= set(raw)
    loaded = params.load(*SECTIONS, path=PARAMS_YAML)
    assert list(loaded) == list(SECTIONS)
    for name in SECTIONS:
        assert loaded[name] == raw[name]
        params.validate(name, raw[name])
    # a file rewritten through the test helper is equally valid
    write_params(tmp_path)
    assert params.load(*SECTIONS, path=tmp_path / "params.yaml") == loaded


def test_load_returns_only_the_sections_asked_for():
    loaded = params.load("shards", path=PARAMS_YAML)
    assert list(loaded) == ["shards"]
    assert loaded["shards"]["frames"] == 64


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
        ("model.frame_pool", "max", r"one of \['mean', 'mean_max'\], found 'max'"),
        ("baseline.frame_pool", None, "one of"),
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
        ("model.streams", [], "a non-empty list drawn from"),
        ("model.streams", ["joint", "joint"], "a non-empty list drawn from"),
        ("baseline.streams", ["rgb"], r"drawn from \['bone', 'joint', 'motion'\]"),
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
    assert params.load("data", "shards", path=tmp_path / "params.yaml")["shards"]["frames"] == 64
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


def test_validate_checks_a_stored_config_by_section():
    good = copy.deepcopy(yaml.safe_load(PARAMS_YAML.read_text())["model"])
    params.validate("model", good, source="ckpt.pt")
    good["layers"] = 0
    with pytest.raises(PipelineError, match=r"^ckpt.pt: model.layers: expected an integer"):
        params.validate("model", good, source="ckpt.pt")


def test_split_names_default_to_the_numbered_official_split():
    data = {"split": 2, "train_split": None, "test_split": None}
    assert params.split_names(data) == ("train2", "test2")
    assert params.split_names({**data, "split": 1}) == ("train1", "test1")
    assert params.split_names({**data, "train_split": "train"}) == ("train", "test2")
    assert params.split_names({**data, "train_split": "train", "test_split": "test"}) == (
        "train",
        "test",
    )


def test_model_section_maps_stage_names():
    assert params.model_section("baseline") == "baseline"
    assert params.model_section("improved") == "model"
    with pytest.raises(PipelineError, match="model name: expected one of"):
        params.model_section("model")
