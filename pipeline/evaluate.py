"""Stage `evaluate@<name>`: the trained model on the test split.

Writes metrics/<name>.json (accuracy, macro F1, loss, counts, epochs, device),
metrics/<name>/predictions.csv (one row per test clip, the source of the confusion plot) and
metrics/<name>/per_class.csv (precision, recall, F1 and support per class).
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, classification_report, f1_score, log_loss

from pipeline import params, runtime
from pipeline.atomic import atomic_dir, prepare_outputs, write_json
from pipeline.errors import cli, fail
from pipeline.models import build_model
from pipeline.paths import METRICS_DIR, SHARDS_DIR, metrics_path, model_path
from pipeline.shardset import ShardSet
from pipeline.training import predict

CHECKPOINT_KEYS = (
    "model", "config", "classes", "in_channels", "persons", "joints", "epochs_run",
    "selected_epoch", "val_acc", "device",
)  # fmt: skip


def _load_error(exc: Exception) -> str:
    """The informative line of torch.load's error (which global was refused, say), not its
    advice to retry with weights_only=False."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    refused = [line for line in lines if "GLOBAL" in line]
    if refused:  # "Unsupported global: GLOBAL x.y was not an allowed global by default. ..."
        return refused[0].removeprefix("WeightsUnpickler error: ").split(". ")[0].rstrip(".")
    skip = ("Weights only load failed", "Check the documentation", "(")
    useful = [line for line in lines if not line.startswith(skip)]
    return (useful or lines or [type(exc).__name__])[0]


def load_checkpoint(path: Any) -> dict[str, Any]:
    """A checkpoint written by the train stage; anything needing more than tensors is refused."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise fail(str(path), "model not found: run the train stage first (dvc repro)") from None
    except Exception as exc:
        raise fail(str(path), f"refused to load the checkpoint ({_load_error(exc)})") from None
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or key not in ckpt]
    if missing:
        raise fail(
            str(path),
            f"not a checkpoint of the train stage (no {missing[0]!r}): rerun it (dvc repro)",
        )
    return ckpt


def prediction_table(test: ShardSet, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    top = np.argsort(-probs, axis=1, kind="stable")[:, :3]
    names = np.asarray(classes)
    return pd.DataFrame({
        "frame_dir": test.table["frame_dir"],
        "actual": names[test.targets],
        "predicted": names[top[:, 0]],
        "confidence": probs[np.arange(len(probs)), top[:, 0]].round(6),
        "top3": ["|".join(names[row]) for row in top],
    })  # fmt: skip


def evaluate(name: str) -> dict[str, Any]:
    section = params.model_section(name)
    loaded = params.load("train", section)
    train, evaluation = loaded["train"], loaded[section]["eval"]
    prepare_outputs(files=[metrics_path(name)], folders=[METRICS_DIR / name])
    device = runtime.setup(train)
    ckpt = load_checkpoint(model_path(name))
    cfg, classes = ckpt["config"], ckpt["classes"]
    test = ShardSet(SHARDS_DIR, "test")
    if test.classes != classes:
        raise fail(
            str(model_path(name)), "its classes differ from the shards': retrain (dvc repro)"
        )
    if evaluation["clips"] > test.views:
        raise fail(
            params.PARAMS_FILE,
            f"{section}.eval.clips: expected <= {test.views} "
            f"(the views stored per test clip, shards.test_views), found {evaluation['clips']}",
        )
    model = build_model(cfg, ckpt["in_channels"], ckpt["persons"], len(classes), ckpt["joints"])
    model.load_state_dict(ckpt["model"])
    model.to(device)
    probs = predict(
        model,
        test,
        cfg,
        device,
        train["batch_size"],
        evaluation["clips"],
        evaluation["flip"],
        train["amp"],
    )
    labels = list(range(len(classes)))
    pred = probs.argmax(1)
    metrics = {
        "accuracy": round(float(accuracy_score(test.targets, pred)), 6),
        "macro_f1": round(
            float(f1_score(test.targets, pred, labels=labels, average="macro", zero_division=0)), 6
        ),
        "loss": round(float(log_loss(test.targets, np.clip(probs, 1e-12, 1), labels=labels)), 6),
        "test_clips": len(test),
        "classes": len(classes),
        "epochs_run": ckpt["epochs_run"],
        "best_epoch": ckpt["selected_epoch"],
        "val_accuracy": round(float(ckpt["val_acc"]), 6),
        "views": evaluation["clips"] * (2 if evaluation["flip"] else 1),
        "device": ckpt["device"],
    }
    report = classification_report(
        test.targets, pred, labels=labels, target_names=classes, output_dict=True, zero_division=0
    )
    per_class = pd.DataFrame(report).T.loc[classes].rename_axis("class").reset_index()
    with atomic_dir(METRICS_DIR / name) as tmp:
        prediction_table(test, probs, classes).to_csv(tmp / "predictions.csv", index=False)
        per_class.round(6).to_csv(tmp / "per_class.csv", index=False)
    write_json(metrics_path(name), metrics)
    return metrics


@cli
def main(argv: list[str] | None = None) -> None:
    name = params.model_argument(sys.argv[1:] if argv is None else argv, "pipeline.evaluate")
    m = evaluate(name)
    print(
        f"evaluate {name}: accuracy {m['accuracy']:.4f}, macro F1 {m['macro_f1']:.4f}, "
        f"loss {m['loss']:.4f} on {m['test_clips']} test clips"
    )


if __name__ == "__main__":
    main()
