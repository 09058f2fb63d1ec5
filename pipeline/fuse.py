"""Stage `fuse`: late fusion of the stream models of the streams `fusion.streams` lists
(`stream@joint`, `@bone`, ...: each the `ensemble` section's model on one input stream, in
models/streams/<stream>.pt; a file there of a stream no longer listed is not read).

Each model's probabilities on the validation and test clips (test-time views and flips as
`ensemble.eval` says); the weights, from a grid of step `fusion.step`, with the lowest validation
cross-entropy; the test split scored with them. Writes metrics/ensemble.json (accuracy, macro F1,
loss, the weight of each listed stream, and each alone) and metrics/ensemble/predictions.csv.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from pipeline.core import params
from pipeline.core.errors import cli, fail
from pipeline.core.paths import METRICS_DIR, SHARDS_DIR, metrics_path, model_path
from pipeline.dataset.shardset import ShardSet
from pipeline.files.atomic import atomic_dir, prepare_outputs, write_json
from pipeline.learning import checkpoint, fusion, inference, runtime
from pipeline.learning.scoring import score

NAME = "ensemble"


def fuse() -> dict[str, Any]:
    loaded = params.load("train", "ensemble", "fusion")
    train_cfg, evaluation, late = loaded["train"], loaded["ensemble"].eval, loaded["fusion"]
    streams = late.streams
    prepare_outputs(files=[metrics_path(NAME)], folders=[METRICS_DIR / NAME])
    device = runtime.setup(train_cfg)
    val, test = ShardSet(SHARDS_DIR, "val"), ShardSet(SHARDS_DIR, "test")
    if evaluation.clips > test.views:
        raise fail(
            params.PARAMS_FILE,
            f"ensemble.eval.clips: expected <= {test.views} (the views stored per test clip, "
            f"shards.test_views), found {evaluation.clips}",
        )
    probs: dict[str, dict[str, np.ndarray]] = {"val": {}, "test": {}}
    for stream in streams:
        path = model_path(params.STREAM_MODEL + stream)
        ckpt = checkpoint.load(path, "ensemble")
        ckpt.check_against(test.manifest, SHARDS_DIR / "manifest.json")
        model = ckpt.build_model().to(device)
        for split, clips in (("val", val), ("test", test)):
            views = min(evaluation.clips, clips.views)
            p = inference.predict(
                model,
                clips,
                ckpt.config,
                device,
                train_cfg.batch_size,
                views,
                evaluation.flip,
                train_cfg.amp,
            )
            if not np.isfinite(p).all():
                raise fail(
                    str(path),
                    f"the model's outputs are not finite (its training diverged); "
                    f"{checkpoint.retrain(path)} after lowering its lr",
                )
            probs[split][stream] = p
    stacked = {split: np.stack(list(p.values())) for split, p in probs.items()}
    weights = fusion.choose(stacked["val"], val.targets, late.step)
    on_test = fusion.fused(weights, stacked["test"])
    on_val = score(val.targets, fusion.fused(weights, stacked["val"]))
    scores = score(test.targets, on_test)
    metrics: dict[str, Any] = {
        "accuracy": round(scores.accuracy, 6),
        "macro_f1": round(scores.macro_f1, 6),
        "loss": round(scores.loss, 6),
        "test_clips": len(test),
        "val_accuracy": round(on_val.accuracy, 6),
        "val_loss": round(on_val.loss, 6),
    }
    for stream, weight in zip(streams, weights, strict=True):
        metrics[f"weight_{stream}"] = round(float(weight), 6)
    for stream in streams:  # each stream alone, for comparison
        metrics[f"accuracy_{stream}"] = round(
            score(test.targets, probs["test"][stream]).accuracy, 6
        )
        metrics[f"val_accuracy_{stream}"] = round(
            score(val.targets, probs["val"][stream]).accuracy, 6
        )
    actual = np.asarray(test.classes)[test.targets]
    table = inference.table(test.table["frame_dir"], on_test, test.classes, top=3, actual=actual)
    with atomic_dir(METRICS_DIR / NAME) as tmp:
        table.to_csv(tmp / "predictions.csv", index=False)
    write_json(metrics_path(NAME), metrics)
    return metrics


@cli
def main() -> None:
    m = fuse()
    streams = [key.removeprefix("weight_") for key in m if key.startswith("weight_")]
    weights = ", ".join(f"{s} {m[f'weight_{s}']:.2f}" for s in streams)
    best = max(m[f"accuracy_{s}"] for s in streams)
    print(
        f"fuse: accuracy {m['accuracy']:.4f} (best stream alone {best:.4f}), macro F1 "
        f"{m['macro_f1']:.4f} on {m['test_clips']} test clips; weights {weights}"
    )


if __name__ == "__main__":
    main()
