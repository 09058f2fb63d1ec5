"""Stage `train@<name>`: fit one model (`baseline` or `improved`) on the shards.

Reads params `train` and the model's own section (`baseline`, or `model` for improved); writes
the selected weights to models/<name>.pt and per-epoch curves with dvclive to
metrics/train/<name>/. The curves are written when the run is done, from its history, and
published with the model: a killed or failed run leaves the old model with its own curves.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from dvclive import Live

from pipeline import features, params, runtime
from pipeline.atomic import atomic_dir, prepare_outputs
from pipeline.errors import cli
from pipeline.models import build_model
from pipeline.paths import SHARDS_DIR, curves_path, model_path, resume_path
from pipeline.shardset import read_manifest
from pipeline.training import Interrupted, fit, save_atomic

CURVES = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")


def write_curves(folder: Path, history: list[dict[str, float]], summary: Mapping[str, Any]) -> None:
    """One tsv per curve (step = epoch) and metrics.json (last epoch + `summary`), by dvclive.

    Only make_summary is called, not end(): inside `dvc exp run`, end() would git-add the
    files under this temporary folder's name."""
    live = Live(dir=str(folder), dvcyaml=False, save_dvc_exp=False, report=None)
    for row in history:
        live.step = int(row["epoch"])
        for key in CURVES:
            split, _, metric = key.partition("_")
            live.log_metric(f"{split}/{metric}" if metric else split, row[key], plot=True)
    live.summary.update({"step": live.step, **summary})
    live.make_summary()


def run(name: str) -> dict[str, Any]:
    section = params.model_section(name)
    loaded = params.load("train", section)
    cfg, train = loaded[section], loaded["train"]
    prepare_outputs(files=[model_path(name), resume_path(name)], folders=[curves_path(name)])
    device = runtime.setup(train)
    manifest = read_manifest(SHARDS_DIR)
    persons, joints = manifest["shape"][1], manifest["shape"][2]
    in_channels = features.in_channels(cfg["streams"], cfg["score"])
    model = build_model(cfg, in_channels, persons, len(manifest["classes"]), joints).to(device)
    print(
        f"train {name}: {cfg['arch']} on {runtime.describe(device)}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters"
    )
    result = fit(model, cfg, train, SHARDS_DIR, device, resume_path(name), name)
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
    selected = {"selected_epoch": int(row["epoch"]), "selected_val_acc": row["val_acc"]}
    # The curves are renamed into place right after the model; a kill between the two renames
    # leaves the resume file, and the rerun writes both again from it.
    with atomic_dir(curves_path(name)) as curves:
        write_curves(curves, result["history"], selected)
        save_atomic(checkpoint, model_path(name))
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
