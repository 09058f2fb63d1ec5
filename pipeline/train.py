"""Stage `train@<name>`: fit one model (`baseline` or `improved`) on the shards.

Reads params `train` and the model's own section (`baseline`, or `model` for improved); writes
the selected weights to models/<name>.pt and per-epoch curves with dvclive to
metrics/train/<name>/.
"""

from __future__ import annotations

import sys
from typing import Any

import torch
from dvclive import Live

from pipeline import features, params, runtime
from pipeline.atomic import atomic_path
from pipeline.errors import cli
from pipeline.models import build_model
from pipeline.paths import METRICS_DIR, SHARDS_DIR, model_path, resume_path
from pipeline.shardset import read_manifest
from pipeline.training import Interrupted, fit, save_atomic

CURVES = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")


class AtomicLive(Live):
    """dvclive's Live, but metrics.json is replaced atomically: dvclive opens it with "w" and
    then writes, so a run killed in between would leave it empty."""

    _summary_target: str | None = None

    @property
    def metrics_file(self) -> str:
        return self._summary_target or super().metrics_file

    def make_summary(self) -> None:
        with atomic_path(super().metrics_file) as tmp:
            self._summary_target = str(tmp)
            try:
                super().make_summary()
            finally:
                self._summary_target = None


def run(name: str) -> dict[str, Any]:
    section = params.model_section(name)
    loaded = params.load("train", section)
    cfg, train = loaded[section], loaded["train"]
    device = runtime.setup(train)
    manifest = read_manifest(SHARDS_DIR)
    persons, joints = manifest["shape"][1], manifest["shape"][2]
    in_channels = features.in_channels(cfg["streams"], cfg["score"])
    model = build_model(cfg, in_channels, persons, len(manifest["classes"]), joints).to(device)
    print(
        f"train {name}: {cfg['arch']} on {runtime.describe(device)}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters"
    )

    live = AtomicLive(
        dir=str(METRICS_DIR / "train" / name), dvcyaml=False, save_dvc_exp=False, report=None
    )
    logged = 0

    def log(history: list[dict[str, float]]) -> None:
        nonlocal logged
        for row in history[logged:]:
            live.step = int(row["epoch"])
            for key in CURVES:
                split, _, metric = key.partition("_")
                live.log_metric(f"{split}/{metric}" if metric else split, row[key], plot=True)
            live.make_summary()
        logged = len(history)

    result = fit(model, cfg, train, SHARDS_DIR, device, resume_path(name), name, log)
    row = result["row"]
    checkpoint = {
        "model": result["model"],
        "config": dict(cfg),
        "train": dict(train),
        "classes": manifest["classes"],
        "shards": manifest["params"],
        "in_channels": in_channels,
        "persons": persons,
        "joints": joints,
        "epochs_run": len(result["history"]),
        "selected_epoch": int(row["epoch"]),
        "val_acc": row["val_acc"],
        "val_loss": row["val_loss"],
        "device": device.type,
    }
    save_atomic(checkpoint, model_path(name))
    live.summary.update({"selected_epoch": int(row["epoch"]), "selected_val_acc": row["val_acc"]})
    live.end()
    resume_path(name).unlink(missing_ok=True)
    print(
        f"train {name}: kept epoch {row['epoch']} (val acc {row['val_acc']:.3f})"
        f" -> {model_path(name)}"
    )
    return checkpoint


@cli
def main(argv: list[str] | None = None) -> None:
    name = params.model_argument(sys.argv[1:] if argv is None else argv, "pipeline.train")
    try:
        run(name)
    except Interrupted as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    torch.set_flush_denormal(True)
    main()
