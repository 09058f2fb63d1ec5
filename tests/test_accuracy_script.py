"""`bench.accuracy` (make accuracy) without the mime5 data: its error table, its --set checks and
its cross-validation by subject (on a tiny dataset named as mime5 is, one epoch per run).

The full run needs ../shared/realdata/mime5_2d.pkl and minutes per setup, so it is a benchmark,
not a test; these cover what it adds on top of the pipeline's own stages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import make_dataset, write_pkl

from bench import accuracy
from pipeline.core.paths import STREAM_MODEL, SUBSET_DIR, curves_path

pytestmark = pytest.mark.slow  # stages in subprocesses or trained workspaces

# One epoch of a small improved model, one thread per run (the suite runs two tests at a time).
TINY = [
    "model.epochs=1",
    "model.hidden=8",
    "shards.test_views=2",
    "train.threads=1",
    "model.eval.clips=2",
]


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


# One cross-validated run of three setups feeds the tests below (a third of the cost of a run
# each): a graph net, the improved model and the ensemble, whose streams are two of the four and
# not in their usual order.
SETUPS = ["stgcnpp", "tcn (improved)", "tcn ensemble"]
STREAMS = [f"tcn ensemble: {s} alone" for s in ("bone", "motion")]
ENSEMBLE_TINY = [
    "ensemble.epochs=1",
    "ensemble.hidden=8",
    "ensemble.eval.clips=2",
    "fusion.streams=[bone,motion]",
]


@pytest.fixture(scope="module")
def cv(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("accuracy")
    pkl = five_subjects(tmp)
    dest, out = tmp / "ws", tmp / "out"
    args = ["--pkl", str(pkl), "--dest", str(dest), "--out", str(out), "--table", "backbones"]
    tiny = [*TINY, "shards.frames=16", *ENSEMBLE_TINY]
    accuracy.main([*args, "--only", *SETUPS, "--seeds", "0", "--folds", "2", "--set", *tiny])
    runs = pd.read_csv(out / "results.csv")
    return {"pkl": pkl, "tiny": tiny, "dest": dest, "out": out, "runs": runs}


def test_folds_hold_out_every_train_subject_once(cv: dict[str, Any]) -> None:
    runs = cv["runs"][cv["runs"]["setup"] == "tcn (improved)"]
    assert runs["fold"].tolist() == [0, 1]
    assert runs["val_clips"].sum() == 4 * 2 * 2  # every train clip validated exactly once
    assert (runs["val_clips"] > 0).all()
    # one epoch: the final epoch is the selected one, so the two val accuracies are one
    assert runs["final_val_accuracy"].tolist() == runs["val_accuracy"].tolist()
    # the workspace was left at the last fold, so extract did rerun for it
    meta = json.loads((cv["dest"] / "data" / "subset" / "meta.json").read_text())
    assert meta["validation"] == "group, fold 1 of 2"
    summary = (cv["out"] / "summary.md").read_text()
    assert "2-fold cross-validation by subject" in summary
    assert summary.splitlines()[2].rstrip(" |").endswith("folds")
    assert {"seed", "fold", "group"} <= set(pd.read_csv(cv["out"] / "errors.csv").columns)


def test_only_folds_runs_one_fold_as_the_whole_run_did_and_a_stopped_run_keeps_it(
    cv: dict[str, Any], tmp_path: Path, monkeypatch
) -> None:
    """What a share of a cross-validation on another core measures: fold 1 alone, as in the
    whole run. Then Ctrl-C during the next run (seed 1's): the finished run stays in --out.
    (One test, so one training serves both.)"""
    real, calls = accuracy.measure, []

    def stopped_at_the_second(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(accuracy, "measure", stopped_at_the_second)
    dest, out = tmp_path / "ws", tmp_path / "out"
    args = ["--pkl", str(cv["pkl"]), "--dest", str(dest), "--out", str(out), "--table", "backbones"]
    setup = ["--only", "tcn (improved)", "--seeds", "0", "1", "--folds", "2", "--only-folds", "1"]
    with pytest.raises(SystemExit) as exc:
        accuracy.main([*args, *setup, "--set", *cv["tiny"]])
    assert exc.value.code == 130 and len(calls) == 2
    alone = pd.read_csv(out / "results.csv")
    assert alone["fold"].tolist() == [1] and alone["seed"].tolist() == [0]
    whole = cv["runs"].set_index(["setup", "fold"]).loc[("tcn (improved)", 1)]
    for column in ("val_clips", "val_accuracy", "test_accuracy", "macro_f1", "best_epoch"):
        assert alone.loc[0, column] == whole[column], column
    summary = (out / "summary.md").read_text()
    assert "(1 runs," in summary.splitlines()[0]
    assert "2-fold cross-validation by subject" in summary
    assert set(pd.read_csv(out / "errors.csv")["seed"]) <= {0}


def test_an_unknown_setup_is_a_usage_error_naming_the_tables_setups(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        accuracy.main(
            ["--pkl", str(tmp_path / "absent.pkl"), "--table", "backbones", "--only", "tcn"]
        )
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--only: expected setups of --table backbones (stgcn, stgcnpp," in err
    assert err.rstrip().endswith("found tcn")


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--only-folds", "0"], "--only-folds: expected --folds K beside it"),
        (
            ["--folds", "3", "--only-folds", "1", "3"],
            "--only-folds: expected folds 0..2, found [1, 3]",
        ),
    ],
)
def test_only_folds_outside_the_folds_is_a_usage_error(
    extra: list[str], expected: str, tmp_path: Path, capsys
) -> None:
    with pytest.raises(SystemExit) as exc:
        accuracy.main(["--pkl", str(tmp_path / "absent.pkl"), *extra])
    assert exc.value.code == 2
    assert expected in capsys.readouterr().err


def test_the_backbones_table_runs_each_candidate_under_one_protocol(cv: dict[str, Any]) -> None:
    runs = cv["runs"]
    assert runs["setup"].tolist() == [*SETUPS, *STREAMS] * 2  # seeds and folds outermost
    assert runs["fold"].tolist() == [0] * 5 + [1] * 5
    assert (runs["train_wall_s"] > 0).all() and runs["test_accuracy"].between(0, 1).all()
    assert "| stgcnpp " in (cv["out"] / "summary.md").read_text()


def test_the_ensemble_row_is_each_folds_fuse_with_its_streams_alone_beside_it(
    cv: dict[str, Any],
) -> None:
    runs = cv["runs"][cv["runs"]["setup"].str.startswith("tcn ensemble")]
    assert runs["setup"].tolist() == ["tcn ensemble", *STREAMS] * 2
    assert runs["fold"].tolist() == [0] * 3 + [1] * 3
    assert "weight_joint" not in runs and "weight_bone_motion" not in runs  # the listed alone
    for _, fold in runs.groupby("fold"):
        fused, alone = fold.iloc[0], fold.iloc[1:]
        # the streams' trainings are the ensemble's cost; the fused row carries the chosen weights
        assert fused["train_cpu_s"] == pytest.approx(alone["train_cpu_s"].sum(), abs=0.2)
        weights = [fused[f"weight_{s}"] for s in ("bone", "motion")]
        assert sum(weights) == pytest.approx(1.0)
        assert (alone["val_clips"] == fused["val_clips"]).all()
    assert runs.loc[runs["setup"] == "tcn ensemble", "val_clips"].sum() == 4 * 2 * 2
    # the workspace holds the last fold's fuse: its figures are that fold's rows
    metrics = json.loads((cv["dest"] / "metrics" / "ensemble.json").read_text())
    meta = json.loads((cv["dest"] / "data" / "subset" / "meta.json").read_text())
    assert meta["validation"] == "group, fold 1 of 2"
    last = runs[runs["fold"] == 1].set_index("setup")
    assert last.loc["tcn ensemble", "val_accuracy"] == metrics["val_accuracy"]
    assert last.loc["tcn ensemble", "test_accuracy"] == metrics["accuracy"]
    assert last.loc["tcn ensemble: bone alone", "val_accuracy"] == metrics["val_accuracy_bone"]
    assert last.loc["tcn ensemble: motion alone", "test_accuracy"] == metrics["accuracy_motion"]
    # a stream's final epoch as its training logged it; the fused row has no epochs
    bone = cv["dest"] / curves_path(STREAM_MODEL + "bone") / "metrics.json"
    curves = json.loads(bone.read_text())
    assert last.loc["tcn ensemble: bone alone", "final_val_accuracy"] == curves["val"]["acc"]
    assert runs.loc[runs["setup"] == "tcn ensemble", "final_val_accuracy"].isna().all()
    # the table pools each row's val accuracy over the folds, the streams' too
    table = accuracy.summarize(runs)
    for setup, g in runs.groupby("setup"):
        pooled = (g["val_accuracy"] * g["val_clips"]).sum() / g["val_clips"].sum()
        assert table.loc[setup, "val accuracy"] == f"{pooled:.3f}"
    assert table.index.tolist() == ["tcn ensemble", *STREAMS]
    summary = (cv["out"] / "summary.md").read_text()
    assert all(f"| {setup} " in summary for setup in table.index)


def cv_runs(seeds: tuple[int, ...], folds: int = 2) -> pd.DataFrame:
    """results.csv rows of `folds`-fold runs of one setup: fold k validates 10 + k clips, of
    which seed s gets 8 + s right; its test accuracy is 0.9 + s / 100 + k / 300."""
    return pd.DataFrame(
        {
            "setup": "tcn (improved)",
            "fold": fold,
            "seed": seed,
            "val_clips": 10 + fold,
            "test_accuracy": 0.9 + seed / 100 + fold / 300,
            "val_accuracy": (8 + seed) / (10 + fold),
            "final_val_accuracy": (7 + seed) / (10 + fold),
            "macro_f1": 0.9,
            "best_epoch": 20,
            "epochs": 30,
            "train_cpu_s": 100.0 + seed,
            "train_wall_s": 150.0,
        }
        for seed in seeds
        for fold in range(folds)
    )


PROTOCOL = "stage commands of this pipeline, CPU, with train.threads=1, 2-fold cross-validation"


def measured(folder: Path, runs: pd.DataFrame, protocol: str = PROTOCOL) -> Path:
    """An --out folder as a run of bench.accuracy leaves it."""
    accuracy.write_results(folder, runs, pd.DataFrame({"frame_dir": ["p1_drums_01"]}), protocol)
    return folder


def test_merge_summarizes_earlier_runs_together_with_the_spread_between_seeds(
    tmp_path: Path,
) -> None:
    first = measured(tmp_path / "seed0", cv_runs((0,)))
    more = measured(tmp_path / "seeds12", cv_runs((1, 2)))
    assert "by seed" in (more / "summary.md").read_text()  # a run of 2 seeds has the columns
    assert "by seed" not in (first / "summary.md").read_text()
    out = tmp_path / "all"
    accuracy.main(["--merge", str(first), str(more), "--out", str(out)])
    runs = pd.read_csv(out / "results.csv")
    assert runs["seed"].tolist() == [0, 0, 1, 1, 2, 2]
    assert len(pd.read_csv(out / "errors.csv")) == 2
    summary = (out / "summary.md").read_text()
    assert summary.splitlines()[0] == (
        f"mime5 test accuracy, mean ± std over seeds [0, 1, 2] (6 runs, {PROTOCOL}; "
        f"merged from {first}, {more})"
    )
    row = accuracy.summarize(runs).loc["tcn (improved)"]
    # per seed: val pooled over 21 clips, 16/21, 18/21, 20/21
    assert row["val accuracy"] == f"{18 / 21:.3f}"
    spread = pd.Series([16 / 21, 18 / 21, 20 / 21]).std(ddof=0)
    assert row["val accuracy by seed"] == f"{18 / 21:.3f} ± {spread:.3f}"
    assert row["test accuracy by seed"] == "0.912 ± 0.008"  # 0.902, 0.912, 0.922 (1/600 each)
    assert row["val accuracy, final epoch"] == f"{16 / 21:.3f}"  # (14 + 16 + 18) / 63
    assert (row["seeds"], row["folds"]) == (3, 2)
    assert f"| tcn (improved) | {row['test accuracy']} " in summary
    # a merged table merges again, naming the runs it came from
    later = measured(tmp_path / "seed3", cv_runs((3,)))
    again = tmp_path / "again"
    accuracy.main(["--merge", str(out), str(later), "--out", str(again)])
    assert pd.read_csv(again / "results.csv")["seed"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert (again / "summary.md").read_text().splitlines()[0] == (
        f"mime5 test accuracy, mean ± std over seeds [0, 1, 2, 3] (8 runs, {PROTOCOL}; "
        f"merged from {first}, {more}, {later})"
    )


def test_runs_from_before_the_final_epoch_column_pool_to_nan_not_to_a_part() -> None:
    runs = pd.concat([cv_runs((0,)).drop(columns="final_val_accuracy"), cv_runs((1,))])
    assert accuracy.summarize(runs).loc["tcn (improved)", "val accuracy, final epoch"] == "nan"
    assert accuracy.summarize(cv_runs((1,))).loc["tcn (improved)", "val accuracy, final epoch"] == (
        f"{16 / 21:.3f}"
    )


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        (lambda d: measured(d, cv_runs((1,)), PROTOCOL + ", with model.lr=0.004"), "protocol"),
        (lambda d: measured(d, cv_runs((0, 1))), "found 'tcn (improved)' seed 0 fold 0 twice"),
    ],
)
def test_merge_refuses_other_protocols_and_runs_counted_twice(
    second, expected: str, tmp_path: Path, capsys
) -> None:
    first = measured(tmp_path / "a", cv_runs((0,)))
    other = second(tmp_path / "b")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        accuracy.main(["--merge", str(first), str(other), "--out", str(out)])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and err.startswith("error: ")
    assert not out.exists()


def test_the_final_epochs_val_accuracy_is_read_from_the_curves_not_the_selected_one(
    tmp_path: Path, monkeypatch
) -> None:
    """A run whose selected epoch (0.95) is not its final one (0.90): each column gets its own."""
    monkeypatch.setattr(accuracy, "run_stage", lambda repo, *args: 0.0)  # the stages "ran"
    (tmp_path / SUBSET_DIR).mkdir(parents=True)
    (tmp_path / SUBSET_DIR / "meta.json").write_text(json.dumps({"counts": {"val": 20}}))
    (tmp_path / curves_path("improved")).mkdir(parents=True)
    curves = {"val": {"acc": 0.90}, "step": 30, "selected_epoch": 12, "selected_val_acc": 0.95}
    (tmp_path / curves_path("improved") / "metrics.json").write_text(json.dumps(curves))
    metrics = {"accuracy": 0.8, "val_accuracy": 0.95, "macro_f1": 0.8, "best_epoch": 12}
    (tmp_path / "metrics" / "improved.json").write_text(json.dumps({**metrics, "epochs_run": 30}))
    row = accuracy.measure(tmp_path, "improved", seed=0)
    assert (row["val_accuracy"], row["final_val_accuracy"]) == (0.95, 0.90)
