"""Stage `train@<name>`: fit one model (`baseline` or `improved`) on the shards.

Reads params `train` and the model's own section (`baseline`, or `model` for improved); writes
the selected weights, with all that using them needs (pipeline.checkpoint), to models/<name>.pt
and per-epoch curves with dvclive to metrics/train/<name>/. The curves are written when the run
is done, from its history, and published with the model: a killed or failed run leaves the old
model with its own curves.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dvclive import Live

from pipeline import features, params, runtime
from pipeline.atomic import atomic_dir, prepare_outputs
from pipeline.checkpoint import Checkpoint
from pipeline.errors import EXIT_INTERRUPTED, PipelineError, cli, fail
from pipeline.models import build_model
from pipeline.paths import SHARDS_DIR, curves_path, model_path, resume_path
from pipeline.shardset import ShardSet
from pipeline.training import Diverged, Epoch, Interrupted, fit

CURVES = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")


def write_curves(folder: Path, history: list[Epoch], summary: Mapping[str, Any]) -> None:
    """One tsv per curve (step = epoch) and metrics.json (last epoch + `summary`), by dvclive.

    Only make_summary is called, not end(): inside `dvc exp run`, end() would git-add the
    files under this temporary folder's name."""
    live = Live(dir=str(folder), dvcyaml=False, save_dvc_exp=False, report=None)
    for row in history:
        live.step = row.epoch
        for key in CURVES:
            split, _, metric = key.partition("_")
            name = f"{split}/{metric}" if metric else split
            live.log_metric(name, getattr(row, key), plot=True)
    live.summary.update({"step": live.step, **summary})
    live.make_summary()


def interrupted(name: str, exc: Interrupted) -> str:
    """The message for Ctrl-C: what is saved and how to go on."""
    how = f"run `dvc repro` (or python -m pipeline.train {name})"
    if exc.saved == 0:
        return (f"train {name}: interrupted in epoch {exc.epoch}, before any epoch was saved; "
                f"{how} to start again")  # fmt: skip
    return (f"train {name}: interrupted in epoch {exc.epoch}; epochs up to {exc.saved} are "
            f"saved in {resume_path(name)}; {how} to resume")  # fmt: skip


def diverged(name: str, exc: Diverged, lr: float) -> PipelineError:
    """The message for a loss gone NaN or infinite: where, and which knob to turn."""
    return fail(
        params.PARAMS_FILE,
        f"train {name} diverged in epoch {exc.epoch}, {exc.where} (loss {exc.loss}): lower "
        f"{params.model_section(name)}.lr (now {lr}); no model was saved",
    )


def run(name: str) -> Checkpoint:
    section = params.model_section(name)
    loaded = params.load("train", section)
    cfg, train_cfg = loaded[section], loaded["train"]
    prepare_outputs(files=[model_path(name), resume_path(name)], folders=[curves_path(name)])
    device = runtime.setup(train_cfg)
    train_set, val_set = ShardSet(SHARDS_DIR, "train"), ShardSet(SHARDS_DIR, "val")
    manifest = train_set.manifest
    _, persons, joints, _ = manifest["shape"]
    in_channels = features.in_channels(cfg.streams, cfg.score)
    model = build_model(cfg, in_channels, persons, len(manifest["classes"]), joints).to(device)
    print(
        f"train {name}: {cfg.arch} on {runtime.describe(device)}, "
        f"{sum(p.numel() for p in model.parameters()):,} parameters"
    )
    try:
        result = fit(model, cfg, train_cfg, train_set, val_set, device, resume_path(name),
                     log=lambda line: print(f"train {name}: {line}"))  # fmt: skip
    except Diverged as exc:
        raise diverged(name, exc, cfg.lr) from None
    selected = result.selected
    checkpoint = Checkpoint(
        weights=result.weights, config=cfg, train=train_cfg,
        shards=params.parse("shards", manifest["params"], str(SHARDS_DIR / "manifest.json")),
        hidden_joints=manifest["hidden_joints"], classes=manifest["classes"],
        labels=manifest["labels"],
        channels=manifest["channels"], in_channels=in_channels, persons=persons, joints=joints,
        epochs_run=len(result.history), selected_epoch=selected.epoch,
        val_acc=selected.val_acc, val_loss=selected.val_loss, device=device.type,
    )  # fmt: skip
    summary = {"selected_epoch": selected.epoch, "selected_val_acc": selected.val_acc}
    # The curves are renamed into place right after the model; a kill between the two renames
    # leaves the resume file, and the rerun writes both again from it.
    with atomic_dir(curves_path(name)) as curves:
        write_curves(curves, result.history, summary)
        checkpoint.save(model_path(name))
    resume_path(name).unlink(missing_ok=True)
    print(
        f"train {name}: kept epoch {selected.epoch} (val acc {selected.val_acc:.3f})"
        f" -> {model_path(name)}"
    )
    return checkpoint


@cli
def main(argv: list[str] | None = None) -> None:
    name = params.model_argument(sys.argv[1:] if argv is None else argv, "pipeline.train")
    try:
        run(name)
    except Interrupted as exc:
        print(interrupted(name, exc), file=sys.stderr)
        raise SystemExit(EXIT_INTERRUPTED) from None


if __name__ == "__main__":
    main()
