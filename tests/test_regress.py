"""The speed regression check of `make test` (bench/regress.py): hot paths as ratios to a
reference timed in the same run, against recorded bounds."""

from __future__ import annotations

import dataclasses
import json

import pytest

from bench import regress


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> list[regress.HotPath]:
    return regress.hot_paths(tmp_path_factory.mktemp("regress"))


@pytest.mark.slow
def test_hot_paths_stay_within_their_recorded_bounds(paths) -> None:
    bounds = json.loads(regress.BOUNDS.read_text())
    assert {p.name for p in paths} <= set(bounds), "every hot path has a recorded bound"
    faults = regress.check(regress.ratios(paths), bounds)
    assert not faults, "\n".join(faults)


@pytest.mark.slow
def test_a_deliberately_slowed_hot_path_fails_the_check(paths) -> None:
    shards = next(p for p in paths if p.name == "shards")

    def twice() -> None:  # the same work done twice: what a regression of 2x looks like
        shards.run()
        shards.run()

    slowed = dataclasses.replace(shards, run=twice)
    bounds = json.loads(regress.BOUNDS.read_text())
    faults = regress.check(regress.ratios([slowed]), bounds)
    assert len(faults) == 1 and faults[0].startswith("shards: build_clips"), faults
    assert regress.check(regress.ratios([shards]), bounds) == []


def test_the_check_compares_with_the_bound_and_its_slack() -> None:
    bounds = {"a": {"what": "x vs y", "ratio": 2.0}}
    assert regress.check({"a": 2.9}, bounds) == []
    assert regress.check({"a": 3.1}, bounds) == [
        "a: x vs y: ratio 3.10, more than 1.5 x its recorded 2.00"
    ]
    assert "no recorded bound" in regress.check({"b": 1.0}, bounds)[0]


def test_recording_one_hot_path_keeps_the_others_bounds(tmp_path, monkeypatch) -> None:
    bounds = tmp_path / "regression.json"
    old = {"a": {"what": "a vs x", "ratio": 2.0}, "b": {"what": "b vs y", "ratio": 3.0}}
    bounds.write_text(json.dumps({**old, "_recorded": {"date": "2026-12-06"}}))
    monkeypatch.setattr(regress, "BOUNDS", bounds)
    paths = [regress.HotPath(n, f"{n} vs z", lambda: None, lambda: None) for n in ("a", "b")]
    regress.record(paths, {"a": 1.23456, "b": 9.0}, ["a"])
    got = json.loads(bounds.read_text())
    assert got["a"]["ratio"] == 1.235 and got["a"]["what"] == "a vs z"
    assert set(got["a"]["recorded"]) == {"load_average", "date"}
    assert got["b"] == old["b"] and got["_recorded"] == {"date": "2026-12-06"}
    regress.record(paths, {"a": 1.0, "b": 9.0}, ["a", "b"])
    assert set(json.loads(bounds.read_text())) == {"a", "b"}
