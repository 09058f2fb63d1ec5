"""The tables that `dvc plots show` draws, in long format, one row per mark.

Each is built from what an earlier stage wrote and names its series in the data (`model`,
`split`) rather than leaving DVC to name them by file path, and a confusion matrix lists every
pair of classes, so it is square even when a class is never predicted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.paths import METRICS_DIR, curves_path
from pipeline.files.readers import damaged, read_csv
from pipeline.learning.scoring import confusion

PREDICTIONS = {"frame_dir": str, "actual": str, "predicted": str, "confidence": float}
PER_CLASS = {"class": str, "recall": float, "f1-score": float, "support": float}
SPLITS = {"train": "train", "val": "validation"}  # dvclive's folder -> the legend's name
CURVES = {"loss": "loss", "acc": "accuracy"}  # dvclive's file and column -> ours


def predictions_path(name: str) -> Path:
    return METRICS_DIR / name / "predictions.csv"


def per_class_path(name: str) -> Path:
    return METRICS_DIR / name / "per_class.csv"


def read_predictions(name: str) -> pd.DataFrame:
    return read_csv(predictions_path(name), f"evaluate@{name}", PREDICTIONS)


def square_confusion(predictions: pd.DataFrame, classes: list[str], name: str) -> pd.DataFrame:
    """Every (actual, predicted) pair of `classes`, true class by true class: `count` clips,
    and `share`, their share of that true class's clips (the normalized matrix's rows sum to 1,
    or 0 for a class without clips). `name` is the model whose predictions these are."""
    for column in ("actual", "predicted"):
        unknown = ~predictions[column].isin(classes)
        if unknown.any():
            row = int(unknown.to_numpy().argmax())
            found = predictions[column].iloc[row]
            problem = (
                f"column {column!r}, row {row + 1}: {found!r} is not a class of the "
                "shards' manifest"
            )
            raise damaged(predictions_path(name), f"evaluate@{name}", problem)
    index = {label: i for i, label in enumerate(classes)}
    counts = confusion(
        predictions["actual"].map(index), predictions["predicted"].map(index), len(classes)
    )
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    actual, predicted = np.meshgrid(classes, classes, indexing="ij")
    return pd.DataFrame(
        {
            "actual": actual.ravel(),
            "predicted": predicted.ravel(),
            "count": counts.ravel(),
            "share": shares.ravel().round(4),
        }
    )


def curves(names: list[str]) -> pd.DataFrame:
    """Loss and accuracy per epoch of each model on train and validation, one row per
    (model, split, epoch), from the curves dvclive wrote during training."""
    parts = []
    for name in names:
        for folder, split in SPLITS.items():
            table = None
            for file, column in CURVES.items():
                path = curves_path(name) / "plots" / "metrics" / folder / f"{file}.tsv"
                read = read_csv(path, f"train@{name}", {"step": int, file: float}, sep="\t")
                read = read[["step", file]].rename(columns={"step": "epoch", file: column})
                table = read if table is None else table.merge(read, on="epoch", how="outer")
            parts.append(table.assign(model=name, split=split))
    columns = ["model", "split", "epoch", *CURVES.values()]
    return pd.concat(parts, ignore_index=True)[columns]


def per_class(names: list[str], classes: list[str]) -> pd.DataFrame:
    """Recall and F1 of every class for each model, one row per (class, model), in class order
    and then model order, so bars of one class stand side by side."""
    parts = []
    for name in names:
        path, stage = per_class_path(name), f"evaluate@{name}"
        table = read_csv(path, stage, PER_CLASS).set_index("class")
        missing = [c for c in classes if c not in table.index]
        if missing:
            raise damaged(path, stage, f"no row for class {missing[0]!r} of the shards' manifest")
        table = table.loc[classes]
        parts.append(
            pd.DataFrame(
                {
                    "class": classes,
                    "model": name,
                    "recall": table["recall"].to_numpy(),
                    "f1": table["f1-score"].to_numpy(),
                    "support": table["support"].to_numpy(int),
                }
            )
        )
    order = {c: i for i, c in enumerate(classes)}
    out = pd.concat(parts, ignore_index=True)
    return out.sort_values("class", key=lambda s: s.map(order), kind="stable").reset_index(
        drop=True
    )
