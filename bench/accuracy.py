"""`make accuracy`: baseline, improved and one ablation per ingredient on real skeletons (mime5).

Runs the pipeline's own stage commands in a scratch workspace (`pipeline.project.workspace`), over
several seeds, and writes metrics/accuracy/results.csv (one row per run) and
metrics/accuracy/summary.md (mean ± std per setup), the table the README quotes.

Usage: python -m bench.accuracy [--pkl PATH] [--seeds 0 1 2] [--table ablations|backbones]
                                [--only NAME ...] [--dest DIR] [--set KEY=VALUE ...]
                                [--folds K [--only-folds F ...]] [--out DIR]
       python -m bench.accuracy --merge DIR [DIR ...] [--out DIR]

`--table backbones` runs the candidate backbones instead of the ablations: the improved model
with only `model.arch` changed (`make accuracy ACCURACY_ARGS="--table backbones --folds 5
--out metrics/accuracy/backbones"`). With `--folds` each run is also scored on the test split,
so one table holds both: the val accuracy cross-validated by subject, which chooses, and the
test accuracy, which is only reported. Its `tcn ensemble` row is the late fusion of dvc.yaml
(params sections `ensemble` and `fusion`): the stream models of `fusion.streams` (all four by
default) trained by the stage commands (`pipeline.train stream-<stream>`), then `pipeline.fuse`,
which chooses the streams' weights on the run's own validation (in fold k, fold k's). Each
stream alone gets a row of its own (`tcn ensemble: joint alone`, ...), scored by the fuse stage
on the same clips, so the table shows whether the fusion beats its best single stream; the
ensemble row's train CPU and wall seconds are the streams' trainings together.

`--set` tries an idea under the same protocol: its overrides go into the base params of every
setup, data.* included (each ablation still turns its own ingredient off on top), e.g.
`python -m bench.accuracy --only improved --set model.lr=0.004 --out /tmp/lr`. Point `--out`
elsewhere for such trials, so the table the README quotes stays as measured. Every run's
misclassified clips go to errors.csv, with the group (subject) each belongs to: averages hide
that errors come in whole blocks of one subject and one class.

`--folds K` cross-validates by subject: each setup and seed runs K times, fold k of the train
subjects held out for validation in run k (`data.folds`, `data.fold`), and the table's val accuracy
is pooled over the K folds, so every train subject is judged once by a model that never saw them. On
mime5 that is 27 subjects instead of the 6 of the test split, a way to compare ideas without looking
at the test set. `--only-folds 0 1` runs only those folds of the K, so a cross-validation can be
shared out between cores or machines (`--only-folds 2 3 4` in another process, with its own `--dest`
and `--out`) and summarized with `--merge`. The tables are written after every run, so a
stopped cross-validation keeps the runs it finished (the summary's first line counts them), and
the rest can run with `--only-folds` and be merged. The selected epoch's val accuracy is
optimistic (the epoch was picked on it, and the noisier a model's validation curve, the more
so); the final epoch's is not, and every run records it too (`final_val_accuracy`, pooled in the
summary's "val accuracy, final epoch"): training does not depend on `model.select`, so one run
gives both, and `--set model.select=last` only changes which weights are tested. With
several seeds, two more columns give the spread between seeds: each seed's pooled val accuracy
and its fold models' mean test accuracy, as mean ± std over the seeds.

`--merge DIR ...` runs nothing: it summarizes the runs of earlier `--out` folders together (more
seeds of one protocol, run at different times) into `--out`, e.g. `python -m bench.accuracy
--merge metrics/accuracy/a metrics/accuracy/b --out metrics/accuracy/ab`. Their summary.md
headers must name one protocol (everything but the seeds and the count of runs), and no setup,
seed and fold may be in two of them. A merged folder merges again (its header names the folders
it came from), so one cross-validation can be shared out to cores or machines in rounds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import resource
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from pipeline.core.errors import cli, fail
from pipeline.core.params import NO_AUGMENT, STREAM_MODEL, load, plain
from pipeline.core.paths import SHARDS_DIR, SUBSET_DIR, curves_path, metrics_path
from pipeline.files.atomic import write_text
from pipeline.project import workspace

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PKL = ROOT.parent / "shared" / "realdata" / "mime5_2d.pkl"
OUT_DIR = ROOT / "metrics" / "accuracy"

# mime5 is a generic PYSKL pickle: only its split names, groups (subjects) and class names
# differ from UCF101's; nothing about the models is set here.
DATASET = {
    "data.pkl": "data/raw/mime5_2d.pkl",
    "data.train_split": "train",
    "data.test_split": "test",
    "data.classes": "all",
    "data.group_pattern": r"^p(\d+)_",
    "data.class_pattern": r"^p\d+_([a-z]+)_",
}

# name -> (stage, overrides on top of params.yaml, how many of the seeds). Each ablation turns
# one ingredient of the improved model off; `baseline` is the notebook's LSTM as params.yaml
# defines it. ST-GCN is left out: about 15 CPU-minutes a run here, three times the budget.
SETUPS: dict[str, tuple[str, dict[str, Any], int]] = {
    "baseline (notebook LSTM)": ("baseline", {}, 3),
    "improved": ("improved", {}, 3),
    "- multi-view test": ("improved", {"model.eval": {"clips": 1, "flip": False}}, 2),
    "- body normalization (image)": ("improved", {"shards.normalize": "image"}, 2),
    "- rare-joint filter": ("improved", {"shards.min_joint_visibility": 0.0}, 2),
    "- bone + motion streams": ("improved", {"model.streams": ["joint"]}, 2),
    "- augmentation": ("improved", {"model.augment": plain(NO_AUGMENT)}, 2),
    "- stretch (x, y scaled apart)": ("improved", {"model.augment.stretch": 0.0}, 2),
    "- label smoothing": ("improved", {"model.label_smoothing": 0.0}, 2),
    "- max pooling (mean only)": ("improved", {"model.tcn.frame_pool": "mean"}, 2),
    "- cosine schedule + warm-up": (
        "improved",
        {"model.schedule": "constant", "model.warmup_epochs": 0},
        2,
    ),
    "arch lstm (improved inputs)": ("improved", {"model.arch": "lstm", "model.layers": 2}, 2),
}


# `--table backbones`: the candidate backbones, each the improved model with only `arch`
# changed (its hidden, layers, streams, schedule and augmentation as params.yaml has them), so
# each is judged under one protocol. Give the same overrides to all with --set.
BACKBONES: dict[str, tuple[str, dict[str, Any], int]] = {
    "stgcn": ("improved", {"model.arch": "stgcn"}, 3),
    "stgcnpp": ("improved", {"model.arch": "stgcnpp"}, 3),
    "ctrgcn": ("improved", {"model.arch": "ctrgcn"}, 3),
    "tcn (improved)": ("improved", {}, 3),
    "tcn ensemble": ("ensemble", {}, 3),  # the `ensemble` section's arch (params.yaml: tcn)
}
# the stage name of a late-fusion setup: stream@<stream> for each stream, then fuse
ENSEMBLE = "ensemble"
TABLES = {"ablations": SETUPS, "backbones": BACKBONES}


def _folds(text: str) -> int:
    k = int(text) if text.isdigit() else 0
    if k < 2:
        raise argparse.ArgumentTypeError(f"expected an integer >= 2, found {text!r}")
    return k


def eval_only(overrides: Mapping[str, Any]) -> bool:
    """Setups that change only test-time params reuse the improved model of the same seed."""
    return bool(overrides) and all(key.startswith("model.eval") for key in overrides)


def run_stage(repo: Path, *args: str) -> float:
    """Run `python -m pipeline.<args>` in `repo`; return the CPU seconds it used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run([sys.executable, "-m", *args], cwd=repo, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed in {repo}:\n{done.stderr.strip()}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def errors(predictions: pd.DataFrame, groups: pd.DataFrame) -> pd.DataFrame:
    """The misclassified clips of one run's predictions.csv, with each clip's group as the
    extract stage recorded it (`groups`: frame_dir, group, from data/subset/index.csv)."""
    wrong = predictions.loc[predictions["actual"] != predictions["predicted"]]
    columns = ["frame_dir", "actual", "predicted", "confidence"]
    return wrong[columns].merge(groups, on="frame_dir", how="left")


def configure(repo: Path, base: Mapping[str, Any], overrides: Mapping[str, Any]) -> None:
    """Write params.yaml; build the subset and shards where missing or their sections changed."""
    params = workspace.apply_overrides(json.loads(json.dumps(base)), overrides)
    path = repo / "params.yaml"
    old = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    new_data = old["data"] != params["data"] or not (repo / SHARDS_DIR).exists()
    if new_data:
        run_stage(repo, "pipeline.extract")
    if new_data or old["shards"] != params["shards"]:
        run_stage(repo, "pipeline.shards")


def scored(repo: Path, seed: int, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """One run's row: the seed, the validation clips of its split and what `metrics` holds."""
    meta = json.loads((repo / SUBSET_DIR / "meta.json").read_text())
    return {"seed": seed, "val_clips": meta["counts"]["val"], **metrics}


def train(repo: Path, name: str) -> tuple[float, float]:
    """Train model `name` with the train stage; return its CPU and wall seconds."""
    start = time.monotonic()
    cpu = run_stage(repo, "pipeline.train", name)
    return round(cpu, 1), round(time.monotonic() - start, 1)


def curves_summary(repo: Path, name: str) -> dict[str, Any]:
    """The train stage's summary of model `name`'s curves: the final epoch's values (`val`,
    `step`) and the selected epoch."""
    return json.loads((repo / curves_path(name) / "metrics.json").read_text())


def measure(repo: Path, stage: str, seed: int, train_it: bool = True) -> dict[str, Any]:
    cpu, wall = train(repo, stage) if train_it else (float("nan"), float("nan"))
    run_stage(repo, "pipeline.evaluate", stage)
    metrics = json.loads((repo / "metrics" / f"{stage}.json").read_text())
    return scored(
        repo,
        seed,
        {
            "test_accuracy": metrics["accuracy"],
            "val_accuracy": metrics["val_accuracy"],
            "final_val_accuracy": curves_summary(repo, stage)["val"]["acc"],
            "macro_f1": metrics["macro_f1"],
            "best_epoch": metrics["best_epoch"],
            "epochs": metrics["epochs_run"],
            "train_cpu_s": cpu,
            "train_wall_s": wall,
        },
    )


def measure_ensemble(repo: Path, seed: int) -> dict[str | None, dict[str, Any]]:
    """The late fusion as dvc.yaml runs it: each stream model, then `fuse`. Returns the fused
    run's row (key None) and each stream's alone (key: the stream), as the fuse stage scored
    them on the same validation and test clips."""
    streams = {}
    listed = load("fusion", path=repo / "params.yaml")["fusion"].streams
    for stream in listed:
        cpu, wall = train(repo, STREAM_MODEL + stream)
        summary = curves_summary(repo, STREAM_MODEL + stream)
        streams[stream] = {
            "final_val_accuracy": summary["val"]["acc"],
            "best_epoch": summary["selected_epoch"],
            "epochs": summary["step"],
            "train_cpu_s": cpu,
            "train_wall_s": wall,
        }
    run_stage(repo, "pipeline.fuse")
    fused = json.loads((repo / metrics_path(ENSEMBLE)).read_text())
    rows: dict[str | None, dict[str, Any]] = {
        None: scored(
            repo,
            seed,
            {
                "test_accuracy": fused["accuracy"],
                "val_accuracy": fused["val_accuracy"],
                "final_val_accuracy": float("nan"),  # weights chosen on validation: no epochs
                "macro_f1": fused["macro_f1"],
                "best_epoch": float("nan"),  # one per stream: see their rows
                "epochs": max(s["epochs"] for s in streams.values()),
                "train_cpu_s": round(sum(s["train_cpu_s"] for s in streams.values()), 1),
                "train_wall_s": round(sum(s["train_wall_s"] for s in streams.values()), 1),
                **{f"weight_{s}": fused[f"weight_{s}"] for s in listed},
            },
        )
    }
    for stream, trained in streams.items():
        alone = {
            "test_accuracy": fused[f"accuracy_{stream}"],
            "val_accuracy": fused[f"val_accuracy_{stream}"],
            "macro_f1": float("nan"),  # the fuse stage scores a stream alone by accuracy only
        }
        rows[stream] = scored(repo, seed, {**alone, **trained})
    return rows


def _pooled(runs: pd.DataFrame, column: str = "val_accuracy") -> float:
    """The val accuracy over all the runs' validation clips (every train clip once a seed);
    nan where a run lacks it (a fused row's final epoch, tables from before the column)."""
    if runs[column].isna().any():
        return float("nan")
    return (runs[column] * runs["val_clips"]).sum() / runs["val_clips"].sum()


def _mean_std(values: pd.Series) -> str:
    return f"{values.mean():.3f} ± {values.std(ddof=0):.3f}"


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
    if "final_val_accuracy" not in runs:  # a table from before the column, merged
        runs = runs.assign(final_val_accuracy=float("nan"))
    order = list(dict.fromkeys(runs["setup"]))
    grouped = runs.groupby("setup", sort=False)
    table = pd.DataFrame(
        {
            "test accuracy": grouped["test_accuracy"].agg(_mean_std),
            # pooled over the runs' validation clips: with --folds, every train clip once per seed
            "val accuracy": grouped[["val_accuracy", "val_clips"]].apply(
                lambda g: f"{_pooled(g):.3f}"
            ),
            "val accuracy, final epoch": grouped[["final_val_accuracy", "val_clips"]].apply(
                lambda g: f"{_pooled(g, 'final_val_accuracy'):.3f}"
            ),
            "macro F1": grouped["macro_f1"].agg(lambda s: f"{s.mean():.3f}"),
            "best epoch": grouped["best_epoch"].agg(lambda s: f"{s.mean():.0f}"),
            "train CPU s": grouped["train_cpu_s"].agg(lambda s: f"{s.mean():.0f}"),
            "train wall s": grouped["train_wall_s"].agg(lambda s: f"{s.mean():.0f}"),
            "seeds": grouped["seed"].nunique(),
        }
    )
    folded = runs["fold"].notna().any()
    if folded and runs["seed"].nunique() > 1:
        # the spread between seeds, each seed's cross-validation taken whole
        by_seed = {
            "val accuracy by seed": lambda g: _mean_std(g.groupby("seed").apply(_pooled)),
            "test accuracy by seed": lambda g: _mean_std(g.groupby("seed")["test_accuracy"].mean()),
        }
        for position, (column, spread) in enumerate(by_seed.items(), start=2):
            columns = ["seed", "val_accuracy", "val_clips", "test_accuracy"]
            table.insert(position, column, grouped[columns].apply(spread))
    if folded:
        table["folds"] = grouped["fold"].nunique()
    return table.loc[order]


HEADER = re.compile(r"mime5 test accuracy, mean ± std over seeds \[(.*)\] \((\d+) runs, (.*)\)")
MERGED = "; merged from "
BY_SEED_NOTE = (
    "By seed: mean ± std over the seeds of each seed's val accuracy (pooled over its folds) "
    "and of its fold models' mean test accuracy.\n\n"
)


def header(seeds: list[int], runs: int, protocol: str) -> str:
    """summary.md's first line: what the table averages and under which protocol."""
    return f"mime5 test accuracy, mean ± std over seeds {seeds} ({runs} runs, {protocol})"


def write_results(out: Path, runs: pd.DataFrame, wrong: pd.DataFrame, protocol: str) -> str:
    """results.csv, errors.csv and summary.md in `out`; returns the summary's text."""
    table = summarize(runs)
    seeds = sorted(dict.fromkeys(runs["seed"].astype(int).tolist()))
    note = BY_SEED_NOTE if "val accuracy by seed" in table.columns else ""
    text = header(seeds, len(runs), protocol) + "\n\n" + note + table.to_markdown() + "\n"
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "results.csv", runs.to_csv(index=False))
    write_text(out / "errors.csv", wrong.to_csv(index=False))
    write_text(out / "summary.md", text)
    return text


def merge(sources: list[Path], out: Path) -> str:
    """Summarize the runs of earlier --out folders together into `out` (see the module doc)."""
    protocols, origins = [], []
    for source in sources:
        path = source / "summary.md"
        first = path.read_text().splitlines()[0] if path.is_file() else ""
        found = HEADER.fullmatch(first)
        if not found:
            raise fail(str(path), f"first line: expected {HEADER.pattern!r}, found {first!r}")
        # A merged table merges again (one cross-validation shared out in several rounds): its
        # protocol is the part before MERGED, and its origins are named in place of it.
        protocol, _, earlier = found.group(3).partition(MERGED)
        protocols.append(protocol)
        origins.append(earlier or str(source))
        if protocol != protocols[0]:
            raise fail(str(path), f"protocol: expected {protocols[0]!r}, found {protocol!r}")
    runs = pd.concat([pd.read_csv(source / "results.csv") for source in sources])
    twice = runs.duplicated(["setup", "seed", "fold"], keep=False)
    if twice.any():
        first = runs.loc[twice].iloc[0]
        raise fail(
            ", ".join(str(source / "results.csv") for source in sources),
            f"runs: expected each setup, seed and fold once, found {first['setup']!r} seed "
            f"{first['seed']} fold {first['fold']} twice",
        )
    wrong = pd.concat([pd.read_csv(source / "errors.csv") for source in sources])
    merged = f"{protocols[0]}{MERGED}{', '.join(origins)}"
    return write_results(out, runs.reset_index(drop=True), wrong, merged)


@cli
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pkl", type=Path, default=DEFAULT_PKL)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--table",
        choices=list(TABLES),
        default="ablations",
        help="ablations: one ingredient of the improved model off at a time (the README's "
        "table) | backbones: the candidate backbones under one protocol",
    )
    parser.add_argument("--only", nargs="+", help="run only these setups (names as listed)")
    parser.add_argument("--dest", type=Path, default=ROOT / "bench" / "results" / "accuracy")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="params overrides for every setup, as in dvc exp run -S",
    )
    parser.add_argument(
        "--folds",
        type=_folds,
        metavar="K",
        help="cross-validate by subject: K runs per setup and seed, one per fold",
    )
    parser.add_argument(
        "--only-folds",
        type=int,
        nargs="+",
        metavar="F",
        help="with --folds K: run only these folds (0..K-1); --merge joins the parts",
    )
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="where the results go")
    parser.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        metavar="DIR",
        help="run nothing: summarize the runs of these earlier --out folders together",
    )
    args = parser.parse_args(argv)
    if args.only_folds and not args.folds:
        parser.error("--only-folds: expected --folds K beside it")
    if args.only_folds and not set(args.only_folds) <= set(range(args.folds)):
        parser.error(f"--only-folds: expected folds 0..{args.folds - 1}, found {args.only_folds}")
    unknown = [name for name in args.only or [] if name not in TABLES[args.table]]
    if unknown:
        parser.error(
            f"--only: expected setups of --table {args.table} ({', '.join(TABLES[args.table])}), "
            f"found {', '.join(unknown)}"
        )
    if args.merge:
        print(merge(args.merge, args.out), end="")
        return
    extra = workspace.parse_overrides(args.set)
    # a misspelt key fails now, not after the workspace is built
    workspace.apply_overrides(yaml.safe_load((ROOT / "params.yaml").read_text()), extra)
    if not args.pkl.is_file():
        raise SystemExit(f"{args.pkl}: not found (the mime5 pickle lives in ../shared/realdata/)")
    chosen = TABLES[args.table]
    setups = {k: v for k, v in chosen.items() if not args.only or k in args.only}

    workspace.remove(args.dest)
    repo = workspace.create(args.dest, DATASET, raw=args.pkl)
    # --set goes into the base before extract, so data.* overrides reach the subset too
    base = workspace.apply_overrides(yaml.safe_load((repo / "params.yaml").read_text()), extra)
    configure(repo, base, {})
    groups = pd.read_csv(repo / SUBSET_DIR / "index.csv", usecols=["frame_dir", "group"])
    folds = sorted(set(args.only_folds or range(args.folds))) if args.folds else [None]
    extras = f", with {' '.join(args.set)}" if args.set else ""
    if args.folds:
        extras += (
            f", {args.folds}-fold cross-validation by subject (val accuracy pooled over the folds)"
        )
    protocol = f"stage commands of this pipeline, CPU{extras}"
    rows, wrong = [], []
    # Seeds, then folds, outermost, so an evaluation-only setup finds the improved model of its
    # seed and fold in place.
    for seed, fold in itertools.product(args.seeds, folds):
        split = {} if fold is None else {"data.folds": args.folds, "data.fold": fold}
        for name, (stage, overrides, seeds) in setups.items():
            if seed not in args.seeds[:seeds]:
                continue
            configure(repo, base, {**split, **overrides, "train.seed": seed})
            if stage == ENSEMBLE:
                measured = measure_ensemble(repo, seed)
            else:
                reuse = eval_only(overrides) and "improved" in setups
                measured = {None: measure(repo, stage, seed, train_it=not reuse)}
            for stream, result in measured.items():
                row = {"setup": name + (f": {stream} alone" if stream else ""), "fold": fold}
                rows.append(row | result)
                print(
                    f"{row['setup']:32s} seed {seed}{'' if fold is None else f' fold {fold}'}: "
                    f"test {result['test_accuracy']:.3f} val {result['val_accuracy']:.3f} "
                    f"({result['train_cpu_s']:.0f} CPU s)",
                    flush=True,
                )
            predictions = pd.read_csv(repo / "metrics" / stage / "predictions.csv")
            wrong.append(errors(predictions, groups).assign(setup=name, seed=seed, fold=fold))
            # After every run, so a run stopped hours into a cross-validation keeps what it
            # finished (the summary's first line counts the runs; --merge joins the rest later).
            text = write_results(args.out, pd.DataFrame(rows), pd.concat(wrong), protocol)
    print()
    print(text, end="")


if __name__ == "__main__":
    main()
