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

from pipeline.core import params
from pipeline.core.errors import cli, fail
from pipeline.core.paths import METRICS_DIR, SHARDS_DIR, metrics_path, model_path
from pipeline.dataset.shardset import ShardSet
from pipeline.files.atomic import atomic_dir, prepare_outputs, write_json
from pipeline.learning import checkpoint, inference, runtime
from pipeline.learning.scoring import per_class, score


def prediction_table(test: ShardSet, probs: np.ndarray, classes: list[str]) -> pd.DataFrame:
    """predictions.csv: each test clip with its true class and the top 3 predicted."""
    actual = np.asarray(classes)[test.targets]
    return inference.table(test.table["frame_dir"], probs, classes, top=3, actual=actual)


def evaluate(name: str) -> dict[str, Any]:
    section = params.model_section(name)
    train_cfg, model_cfg = params.load_model(name)
    evaluation = model_cfg.eval
    prepare_outputs(files=[metrics_path(name)], folders=[METRICS_DIR / name])
    device = runtime.setup(train_cfg)
    ckpt = checkpoint.load(model_path(name), section)
    test = ShardSet(SHARDS_DIR, "test")
    ckpt.check_against(test.manifest, SHARDS_DIR / "manifest.json")
    model = ckpt.build_model()
    classes = test.classes
    if evaluation.clips > test.views:
        raise fail(
            params.PARAMS_FILE,
            f"{section}.eval.clips: expected <= {test.views} "
            f"(the views stored per test clip, shards.test_views), found {evaluation.clips}",
        )
    model.to(device)
    probs = inference.predict(
        model,
        test,
        ckpt.config,
        device,
        train_cfg.batch_size,
        evaluation.clips,
        evaluation.flip,
        train_cfg.amp,
    )
    if not np.isfinite(probs).all():  # finite weights can still overflow on these inputs
        raise fail(
            str(model_path(name)),
            "the model's outputs are not finite (its training "
            f"diverged); {checkpoint.retrain(model_path(name))} after lowering its lr",
        )
    scores = score(test.targets, probs)
    metrics = {
        "accuracy": round(scores.accuracy, 6),
        "macro_f1": round(scores.macro_f1, 6),
        "loss": round(scores.loss, 6),
        "test_clips": len(test),
        "classes": len(classes),
        "epochs_run": ckpt.epochs_run,
        "best_epoch": ckpt.selected_epoch,
        "val_accuracy": round(float(ckpt.val_acc), 6),
        "views": evaluation.clips * (2 if evaluation.flip else 1),
        "device": ckpt.device,
    }
    table = per_class(test.targets, probs.argmax(1), len(classes))
    report = pd.DataFrame({"class": classes, **table})
    with atomic_dir(METRICS_DIR / name) as tmp:
        prediction_table(test, probs, classes).to_csv(tmp / "predictions.csv", index=False)
        report.round(6).to_csv(tmp / "per_class.csv", index=False)
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
