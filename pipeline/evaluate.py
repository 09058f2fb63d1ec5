"""Stage `evaluate@<name>`: the trained model on the test split.

Writes metrics/<name>.json (accuracy, macro F1, loss, counts, epochs, device),
metrics/<name>/predictions.csv (one row per test clip, the source of the confusion plot) and
metrics/<name>/per_class.csv (precision, recall, F1 and support per class).
"""

from __future__ import annotations

import errno
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, classification_report, f1_score, log_loss
from torch import nn

from pipeline import features, params, runtime
from pipeline.atomic import atomic_dir, prepare_outputs, write_json
from pipeline.errors import PipelineError, cli, fail
from pipeline.models import build_model
from pipeline.paths import METRICS_DIR, SHARDS_DIR, metrics_path, model_path
from pipeline.rules import show
from pipeline.shardset import ShardSet
from pipeline.training import predict

# Shards params that change what a clip looks like to a model: one trained on other values is
# not the model for these shards. (Views stored, file size and workers leave it valid.)
INPUT_PARAMS = (
    "frames", "sampling", "normalize", "persons", "person_order", "min_score",
    "min_joint_visibility",
)  # fmt: skip
REPORTED = {"epochs_run": int, "selected_epoch": int, "val_acc": float, "device": str}
CHECKPOINT_KEYS = (
    "model", "config", "classes", "in_channels", "persons", "joints", "epochs_run",
    "selected_epoch", "val_acc", "device",
)  # fmt: skip


def _load_error(exc: Exception) -> str:
    """torch.load's own cause (which global was refused, an unknown opcode, a damaged zip), not
    its advice to retry with weights_only=False that surrounds it."""
    text = str(exc).split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    refused = [line for line in lines if "GLOBAL" in line]
    if refused:  # "Unsupported global: GLOBAL x.y was not an allowed global by default. ..."
        return refused[0].split(". ")[0].rstrip(".")
    skip = ("Weights only load failed", "Check the documentation", "Please file an issue", "(")
    useful = [line for line in lines if not line.startswith(skip)]
    if isinstance(exc, EOFError) or (isinstance(exc, OSError) and exc.errno == errno.EINVAL):
        return "the file is damaged or truncated"  # EINVAL: torch's zip reader found no archive
    return useful[0].split(". ")[0].rstrip(".") if useful else type(exc).__name__


def _retrain(path: Any) -> str:
    return f"retrain it with `dvc repro train@{Path(path).stem}`"


def load_checkpoint(path: Any) -> dict[str, Any]:
    """A checkpoint written by the train stage; anything needing more than tensors is refused."""
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise fail(str(path), "model not found: run the train stage first (dvc repro)") from None
    except Exception as exc:
        raise fail(
            str(path), f"refused to load the checkpoint ({_load_error(exc)}); {_retrain(path)}"
        ) from None
    missing = [key for key in CHECKPOINT_KEYS if not isinstance(ckpt, dict) or key not in ckpt]
    if missing:
        raise fail(
            str(path),
            f"not a checkpoint of the train stage (no {missing[0]!r}); {_retrain(path)}",
        )
    return ckpt


def model_from_checkpoint(
    ckpt: Mapping[str, Any], manifest: Mapping[str, Any], path: Any, name: str
) -> nn.Module:
    """The model a loaded checkpoint holds, once it agrees with itself and with the shards.

    A checkpoint is checked, in this order, for: a config that is a valid params section, the
    shards params it was trained with, its classes, persons, joints and input channels against
    the shards' manifest, weights of exactly the shapes its config gives, and finite weights.
    A mismatch is one line naming the checkpoint, the field and both values, and what to run.
    """
    where, redo, section = str(path), _retrain(path), params.model_section(name)
    cfg = ckpt["config"]
    try:
        params.validate(section, cfg, source=where)
    except PipelineError as exc:
        problem = str(exc).removeprefix(f"{where}: ")
        raise fail(
            where, f"its config is not a valid {section} section ({problem}); {redo}"
        ) from None
    manifest_file = SHARDS_DIR / "manifest.json"
    trained_on = ckpt.get("shards") if isinstance(ckpt.get("shards"), Mapping) else {}
    for key in INPUT_PARAMS:
        now = manifest["params"].get(key)
        if key in trained_on and not _same(trained_on[key], now):
            raise fail(where, f"it was trained on shards with shards.{key} = "
                       f"{show(trained_on[key])}, {manifest_file} has {show(now)}; "
                       f"{redo}")  # fmt: skip
    _, persons, joints, _ = manifest["shape"]
    channels = features.in_channels(cfg["streams"], cfg["score"])
    for key, now in (("classes", manifest["classes"]), ("persons", persons), ("joints", joints),
                     ("in_channels", channels)):  # fmt: skip
        if not _same(ckpt[key], now):
            source = "its config's streams and score" if key == "in_channels" else manifest_file
            raise fail(where, f"its {key} is {show(ckpt[key])}, where {source} has "
                       f"{show(now)}; {redo}")  # fmt: skip
    for key, kind in REPORTED.items():  # copied into the metrics
        if not isinstance(ckpt[key], kind):
            raise fail(
                where, f"its {key} is {show(ckpt[key])}, not a {kind.__name__}; {redo}"
            )
    model = build_model(cfg, channels, persons, len(manifest["classes"]), joints)
    _check_weights(ckpt["model"], model.state_dict(), cfg, where, redo)
    model.load_state_dict(ckpt["model"])
    return model


def _same(found: Any, wanted: Any) -> bool:
    """Equal, and of one kind (numbers count as one kind): a tensor or other odd value that a
    checkpoint may hold in place of a plain one is never equal, and never compared elementwise.
    """
    numbers = (int, float)
    if isinstance(found, numbers) and isinstance(wanted, numbers):
        return found == wanted and isinstance(found, bool) == isinstance(wanted, bool)
    return type(found) is type(wanted) and found == wanted


def _check_weights(
    weights: Any, wanted: Mapping[str, torch.Tensor], cfg: Mapping[str, Any], where: str, redo: str
) -> None:
    """Weights of exactly the names and shapes the config's model has, and finite."""
    config = f"its config (arch {cfg['arch']}, hidden {cfg['hidden']}, layers {cfg['layers']})"
    if not isinstance(weights, Mapping):
        raise fail(where, f"its 'model' is not a mapping of weights; {redo}")
    for key, tensor in wanted.items():
        found = weights.get(key)
        if not isinstance(found, torch.Tensor):
            raise fail(where, f"weight {key!r} is missing, though {config} needs it; {redo}")
        if found.shape != tensor.shape:
            raise fail(where, f"weight {key!r} is {list(found.shape)}, {config} gives "
                       f"{list(tensor.shape)}; {redo}")  # fmt: skip
        if not torch.isfinite(found).all():
            raise fail(where, f"weight {key!r} holds NaN or infinite values (its training "
                       f"diverged); {redo} after lowering its lr")  # fmt: skip
    extra = sorted(set(weights) - set(wanted), key=str)
    if extra:
        raise fail(where, f"weight {show(extra[0])} has no place in {config}; {redo}")


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
    test = ShardSet(SHARDS_DIR, "test")
    model = model_from_checkpoint(ckpt, test.manifest, model_path(name), name)
    cfg, classes = ckpt["config"], test.classes
    if evaluation["clips"] > test.views:
        raise fail(
            params.PARAMS_FILE,
            f"{section}.eval.clips: expected <= {test.views} "
            f"(the views stored per test clip, shards.test_views), found {evaluation['clips']}",
        )
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
    if not np.isfinite(probs).all():  # finite weights can still overflow on these inputs
        raise fail(
            str(model_path(name)),
            f"the model's outputs are not finite (its training diverged); "
            f"{_retrain(model_path(name))} "
            "after lowering its lr",
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
