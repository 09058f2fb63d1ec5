"""bench/README.md's tables are generated from the saved figures, which DVC reads as metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import stage_env

from bench import report
from bench.__main__ import BENCHMARKS
from bench.report import Check, Row


def test_the_readme_tables_are_those_the_saved_figures_make() -> None:
    text = report.README.read_text()
    assert len(report._BLOCK.findall(text)) == 4  # extract ..., ddp sweep, predict, pose
    assert report.tables(text) == text, "run `python -m bench.report` (tables are never typed)"
    assert report.main(["--check"]) == 0


def test_every_benchmark_is_a_dvc_metric() -> None:
    declared = yaml.safe_load((report.ROOT / "bench" / "dvc.yaml").read_text())["metrics"]
    assert declared == [f"metrics/{name}.json" for name in BENCHMARKS]


def row(rate: float) -> Row:
    return Row(
        name="shards, 101 classes",
        wall_s=2.0,
        rss_bytes=300 * report.MB,
        throughput=rate,
        reference="shards on disk 1.15 GiB",
        ratio=0.1,
        checks=[Check("clips/s", rate, 5000.0, at_most=False)],
        note="a note",
    )


def test_saved_figures_are_numbers_and_read_back_as_the_same_rows(tmp_path: Path) -> None:
    report.save("shards", [row(4000.0)], "a run", {"load_before": 0.5}, tmp_path)
    numbers = json.loads((tmp_path / "shards.json").read_text())
    leaves = [v for r in numbers.values() for v in r.values()]
    assert all(isinstance(v, (int, float)) for v in leaves), numbers  # bools are ints
    assert numbers["shards_101_classes"]["throughput"] == 4000.0
    assert numbers["shards_101_classes"]["met"] is False
    header, rows = report.load_rows("shards", tmp_path)
    assert header == "a run" and report.table(rows) == report.table([row(4000.0)])
    text = "x\n<!-- bench: shards extract -->\nold\n<!-- /bench -->\ny\n"
    made = report.tables(text, tmp_path)
    assert "| shards, 101 classes | 2.00 s | 300 MiB | 4,000 clips/s |" in made
    assert "- `shards`: a run\n- `extract`: not measured yet" in made
    assert made.startswith("x\n") and made.endswith("<!-- /bench -->\ny\n") and "old" not in made


@pytest.mark.slow
@pytest.mark.e2e
def test_dvc_metrics_diff_shows_a_speed_change_between_two_commits(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "bench").mkdir(parents=True)
    shutil.copy(report.ROOT / "bench" / "dvc.yaml", repo / "bench" / "dvc.yaml")
    env = stage_env()

    def run(*args: str) -> str:
        done = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, check=True)
        return done.stdout

    run("git", "init", "-q")
    run("dvc", "init", "-q")
    report.save("shards", [row(3770.0)], "before", {"load_before": 0.2}, repo / "bench" / "metrics")
    run("git", "add", "-A")
    run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "before")
    report.save("shards", [row(5210.0)], "after", {"load_before": 0.3}, repo / "bench" / "metrics")
    diff = run("dvc", "metrics", "diff")
    line = next(x for x in diff.splitlines() if "shards_101_classes.throughput" in x)
    assert [float(v) for v in line.split()[-3:]] == [3770, 5210, 1440], diff
