"""`bench.accuracy` (make accuracy) without the mime5 data: its error table, its --set checks and
its cross-validation by subject (on a tiny dataset named as mime5 is, one epoch per run).

The full run needs ../shared/realdata/mime5_2d.pkl and minutes per setup, so it is a benchmark,
not a test; these cover what it adds on top of the pipeline's own stages.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_dataset, write_pkl

from bench import accuracy

pytestmark = pytest.mark.slow  # stages in subprocesses or trained workspaces


def test_errors_keeps_only_misclassified_clips_with_the_group_extract_recorded() -> None:
    predictions = pd.DataFrame(
        {
            "frame_dir": ["p25_guitar_01", "p25_drums_02", "p3_boxing_01", "p33_drums_04"],
            "actual": ["guitar", "drums", "boxing", "drums"],
            "predicted": ["drums", "drums", "boxing", "boxing"],
            "confidence": [0.9, 0.8, 0.7, 0.6],
            "top3": ["drums|guitar|violin"] * 4,
        }
    )
    groups = pd.DataFrame(
        {
            "frame_dir": ["p3_boxing_01", "p33_drums_04", "p25_guitar_01", "p25_drums_02"],
            "group": [3, 33, 25, 25],
        }
    )
    wrong = accuracy.errors(predictions, groups)
    assert wrong["frame_dir"].tolist() == ["p25_guitar_01", "p33_drums_04"]
    assert wrong["group"].tolist() == [25, 33]
    assert wrong["predicted"].tolist() == ["drums", "boxing"]
    assert wrong["confidence"].tolist() == [0.9, 0.6]
    assert "top3" not in wrong.columns


def test_errors_of_a_perfect_run_is_an_empty_table_with_the_columns() -> None:
    predictions = pd.DataFrame(
        {
            "frame_dir": ["p1_rowing_01"],
            "actual": ["rowing"],
            "predicted": ["rowing"],
            "confidence": [0.99],
            "top3": ["rowing|boxing|drums"],
        }
    )
    groups = pd.DataFrame({"frame_dir": ["p1_rowing_01"], "group": [1]})
    wrong = accuracy.errors(predictions, groups)
    assert wrong.empty
    assert list(wrong.columns) == ["frame_dir", "actual", "predicted", "confidence", "group"]


@pytest.mark.parametrize(
    ("item", "expected"),
    [("model.hiden=128", "model.hiden: no such key"), ("model.hidden", "expected key=value")],
)
def test_a_bad_set_stops_with_one_line_before_any_work(
    item: str, expected: str, tmp_path: Path, capsys
) -> None:
    pkl = tmp_path / "mime5_2d.pkl"
    pkl.write_bytes(b"not read: the overrides are checked first")
    dest, out = tmp_path / "ws", tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        accuracy.main(["--pkl", str(pkl), "--dest", str(dest), "--out", str(out), "--set", item])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err
    assert not dest.exists() and not out.exists()


def test_folds_hold_out_every_train_subject_once(tmp_path: Path) -> None:
    # mime5's naming (p<subject>_<class>_<nn>, splits train/test), 5 train subjects
    classes = ("boxing", "drums")
    data = make_dataset(
        labels=(0, 1),
        groups=range(1, 8),
        test_groups=(1, 2),
        frames=(12, 20),
        split_names=("train", "test"),
        name=lambda label, g, c: f"p{g}_{classes[label]}_{c:02d}",
    )
    pkl = write_pkl(data, tmp_path / "mime5_2d.pkl")
    dest, out = tmp_path / "ws", tmp_path / "out"
    tiny = [
        "model.epochs=1",
        "model.hidden=8",
        "shards.test_views=2",
        "train.threads=1",
        "model.eval.clips=2",
    ]
    accuracy.main(
        [
            "--pkl",
            str(pkl),
            "--dest",
            str(dest),
            "--out",
            str(out),
            "--only",
            "improved",
            "--seeds",
            "0",
            "--folds",
            "2",
            "--set",
            *tiny,
        ]
    )
    runs = pd.read_csv(out / "results.csv")
    assert runs["fold"].tolist() == [0, 1]
    assert runs["val_clips"].sum() == 5 * 2 * 2  # every train clip validated exactly once
    assert (runs["val_clips"] > 0).all()
    # the workspace was left at the last fold, so extract did rerun for it
    meta = json.loads((dest / "data" / "subset" / "meta.json").read_text())
    assert meta["validation"] == "group, fold 1 of 2"
    summary = (out / "summary.md").read_text()
    assert "2-fold cross-validation by subject" in summary
    assert summary.splitlines()[2].rstrip(" |").endswith("folds")
    assert {"seed", "fold", "group"} <= set(pd.read_csv(out / "errors.csv").columns)


def test_fewer_than_two_folds_is_a_usage_error(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        accuracy.main(["--pkl", str(tmp_path / "absent.pkl"), "--folds", "1"])
    assert exc.value.code == 2
    assert "--folds: expected an integer >= 2, found '1'" in capsys.readouterr().err


def five_subjects(folder: Path) -> Path:
    """A tiny pickle named as mime5's is: subjects p1..p5 (p1 in test), two classes."""
    classes = ("boxing", "drums")
    data = make_dataset(
        labels=(0, 1),
        groups=range(1, 6),
        test_groups=(1,),
        frames=(12, 20),
        split_names=("train", "test"),
        name=lambda label, g, c: f"p{g}_{classes[label]}_{c:02d}",
    )
    return write_pkl(data, folder / "mime5_2d.pkl")


@pytest.mark.slow
def test_the_backbones_table_runs_each_candidate_under_one_protocol(tmp_path: Path) -> None:
    pkl = five_subjects(tmp_path)
    out = tmp_path / "out"
    tiny = [
        "model.epochs=1",
        "model.hidden=8",
        "shards.test_views=2",
        "train.threads=1",
        "model.eval.clips=2",
    ]
    only = ["stgcnpp", "tcn (improved)"]
    args = ["--pkl", str(pkl), "--dest", str(tmp_path / "ws"), "--out", str(out)]
    accuracy.main([*args, "--table", "backbones", "--only", *only, "--seeds", "0", "--set", *tiny])
    runs = pd.read_csv(out / "results.csv")
    assert runs["setup"].tolist() == only
    assert (runs["train_wall_s"] > 0).all() and runs["test_accuracy"].between(0, 1).all()
    assert "stgcnpp" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_the_ensemble_row_is_each_folds_fuse_with_its_streams_alone_beside_it(
    tmp_path: Path,
) -> None:
    pkl = five_subjects(tmp_path)
    dest, out = tmp_path / "ws", tmp_path / "out"
    tiny = [
        "ensemble.epochs=1",
        "ensemble.hidden=8",
        "shards.test_views=2",
        "train.threads=1",
        "ensemble.eval.clips=2",
    ]
    args = ["--pkl", str(pkl), "--dest", str(dest), "--out", str(out), "--table", "backbones"]
    accuracy.main([*args, "--only", "tcn ensemble", "--seeds", "0", "--folds", "2", "--set", *tiny])
    runs = pd.read_csv(out / "results.csv")
    streams = [f"tcn ensemble: {s} alone" for s in ("joint", "bone", "motion", "bone_motion")]
    assert runs["setup"].tolist() == ["tcn ensemble", *streams] * 2
    assert runs["fold"].tolist() == [0] * 5 + [1] * 5
    for _, fold in runs.groupby("fold"):
        fused, alone = fold.iloc[0], fold.iloc[1:]
        # the four trainings are the ensemble's cost; the fused row carries the chosen weights
        assert fused["train_cpu_s"] == pytest.approx(alone["train_cpu_s"].sum(), abs=0.2)
        weights = [fused[f"weight_{s}"] for s in ("joint", "bone", "motion", "bone_motion")]
        assert sum(weights) == pytest.approx(1.0)
        assert (alone["val_clips"] == fused["val_clips"]).all()
    assert runs.loc[runs["setup"] == "tcn ensemble", "val_clips"].sum() == 4 * 2 * 2
    # the workspace holds the last fold's fuse: its figures are that fold's rows
    metrics = json.loads((dest / "metrics" / "ensemble.json").read_text())
    meta = json.loads((dest / "data" / "subset" / "meta.json").read_text())
    assert meta["validation"] == "group, fold 1 of 2"
    last = runs[runs["fold"] == 1].set_index("setup")
    assert last.loc["tcn ensemble", "val_accuracy"] == metrics["val_accuracy"]
    assert last.loc["tcn ensemble", "test_accuracy"] == metrics["accuracy"]
    assert last.loc["tcn ensemble: bone alone", "val_accuracy"] == metrics["val_accuracy_bone"]
    assert last.loc["tcn ensemble: motion alone", "test_accuracy"] == metrics["accuracy_motion"]
    # the table pools each row's val accuracy over the folds, the streams' too
    table = accuracy.summarize(runs)
    for setup, g in runs.groupby("setup"):
        pooled = (g["val_accuracy"] * g["val_clips"]).sum() / g["val_clips"].sum()
        assert table.loc[setup, "val accuracy"] == f"{pooled:.3f}"
    assert table.index.tolist() == ["tcn ensemble", *streams]
    summary = (out / "summary.md").read_text()
    assert all(f"| {setup} " in summary for setup in table.index)
