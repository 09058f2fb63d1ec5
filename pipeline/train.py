"""Stages `train@<name>` and `stream@<stream>`: fit one model (`baseline`, `improved`, or the
fusion's `stream-<stream>`) on the shards.

Reads params `train` and the model's own section (`baseline`, `model` for improved, or for a
stream model `ensemble` with its stream and the overrides of `fusion.<stream>`); writes
the selected weights, with all that using them needs (pipeline.learning.checkpoint), to
models/<name>.pt (a stream model's to models/streams/<stream>.pt; only a stream that
`fusion.streams` lists is trained) and per-epoch curves with dvclive to metrics/train/<name>/.
The curves are written when the run is done, from its history, and published with the model: a
killed or failed run leaves the old model with its own curves.

With `train.nproc` N > 1 it trains in N processes with DistributedDataParallel
(pipeline.learning.distributed), `train.batch_size` being their global batch; under torchrun it
is one of torchrun's processes. Rank 0 alone writes the model, the resume file and the curves.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from dvclive import Live

from pipeline.core import params
from pipeline.core.errors import (
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    PipelineError,
    cli,
    fail,
    interrupt_code,
)
from pipeline.core.paths import SHARDS_DIR, curves_path, model_path, resume_path
from pipeline.dataset.shardset import ShardSet
from pipeline.files.atomic import atomic_dir, prepare_outputs
from pipeline.learning import distributed, features, runtime
from pipeline.learning.checkpoint import Checkpoint, model_for
from pipeline.learning.distributed import RankExit
from pipeline.learning.training import Diverged, Epoch, Interrupted, fit

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
        return (
            f"train {name}: interrupted in epoch {exc.epoch}, before any epoch was saved; "
            f"{how} to start again"
        )
    return (
        f"train {name}: interrupted in epoch {exc.epoch}; epochs up to {exc.saved} are "
        f"saved in {resume_path(name)}; {how} to resume"
    )


def diverged(name: str, exc: Diverged, lr: float) -> PipelineError:
    """The message for a loss gone NaN or infinite: where, and which knob to turn."""
    return fail(
        params.PARAMS_FILE,
        f"train {name} diverged in epoch {exc.epoch}, {exc.where} (loss {exc.loss}): lower "
        f"{params.model_section(name)}.lr (now {lr}); no model was saved",
    )


def run(name: str) -> Checkpoint | None:
    """Train model `name`: in this process, in the `train.nproc` processes it starts, or as one
    process of a world a launcher (torchrun) set up. Rank 0 returns the checkpoint it wrote;
    the others, and a process that started them, return None."""
    train_cfg, _ = params.load_model(name)  # all checked here
    device = runtime.resolve_device(train_cfg.device)
    world = distributed.from_environment()
    if world is None or world.main:  # before any process starts: rank 0 alone writes
        prepare_outputs(files=[model_path(name), resume_path(name)], folders=[curves_path(name)])
    if world is None and train_cfg.nproc > 1:
        runtime.check_threads(train_cfg)  # before any process starts
        crowded = runtime.check_processes(train_cfg.nproc, device)
        if crowded:
            print(crowded, file=sys.stderr)
        if device.type == "cuda" and train_cfg.nproc > torch.cuda.device_count():
            raise fail(
                params.PARAMS_FILE,
                f"train.nproc: expected at most the "
                f"{torch.cuda.device_count()} CUDA devices of this machine (one per "
                f"process), found {train_cfg.nproc}",
            )
        distributed.spawn(train_rank, train_cfg.nproc, device, name)
        return None
    world = world or distributed.SINGLE
    problem = params.batch_split(train_cfg.batch_size, world.size, "WORLD_SIZE")
    if problem:
        raise fail(params.PARAMS_FILE, problem)
    with distributed.joined(world, device) as world:
        return train_rank(world, name)


def train_rank(world: distributed.World, name: str) -> Checkpoint | None:
    """What each training process does; rank 0 alone logs and writes."""
    train_cfg, cfg = params.load_model(name)
    runtime.setup(train_cfg, world.local_size)
    device = torch.device(world.device)
    train_set, val_set = ShardSet(SHARDS_DIR, "train"), ShardSet(SHARDS_DIR, "val")
    manifest = train_set.manifest
    # checked now, not after an hour of training: the model file records these params
    shards_cfg = params.parse("shards", manifest.params, str(SHARDS_DIR / "manifest.json"))
    model = model_for(cfg, manifest).to(device)
    log = (lambda line: print(f"train {name}: {line}", flush=True)) if world.main else _quiet
    where = runtime.describe(device)
    if world.size > 1:
        where = f"{world.size} processes ({distributed.backend(device)}), each on {where}"
    log(f"{cfg.arch} on {where}, {sum(p.numel() for p in model.parameters()):,} parameters")
    try:
        result = fit(
            distributed.wrap(model, world, device),
            cfg,
            train_cfg,
            train_set,
            val_set,
            device,
            resume_path(name),
            log,
            world,
        )
    except Diverged as exc:
        raise diverged(name, exc, cfg.lr) from None
    except Interrupted as exc:
        raise RankExit(interrupt_code(), interrupted(name, exc) if world.main else "") from None
    if not world.main:
        return None
    selected = result.selected
    checkpoint = Checkpoint(
        weights=result.weights,
        config=cfg,
        train=dataclasses.replace(train_cfg, nproc=world.size),
        shards=shards_cfg,
        hidden_joints=manifest.hidden_joints,
        classes=manifest.classes,
        labels=manifest.labels,
        channels=manifest.channels,
        in_channels=features.in_channels(cfg.streams, cfg.score),
        persons=manifest.persons,
        joints=manifest.joints,
        epochs_run=len(result.history),
        selected_epoch=selected.epoch,
        val_acc=selected.val_acc,
        val_loss=selected.val_loss,
        device=device.type,
    )
    summary = {"selected_epoch": selected.epoch, "selected_val_acc": selected.val_acc}
    # The curves are renamed into place right after the model; a kill between the two renames
    # leaves the resume file, and the rerun writes both again from it.
    with atomic_dir(curves_path(name)) as curves:
        write_curves(curves, result.history, summary)
        checkpoint.save(model_path(name))
    resume_path(name).unlink(missing_ok=True)
    log(f"kept epoch {selected.epoch} (val acc {selected.val_acc:.3f}) -> {model_path(name)}")
    return checkpoint


def _quiet(line: str) -> None:
    """The log of a process other than rank 0: its lines would repeat rank 0's."""


@cli
def main(argv: list[str] | None = None) -> None:
    name = params.model_argument(sys.argv[1:] if argv is None else argv, "pipeline.train")
    try:
        run(name)
    except RankExit as exc:
        if exc.message:
            print(exc.message, file=sys.stderr)
        # the processes stop on SIGINT whichever signal this one got: its code tells which
        code = interrupt_code() if exc.code in (EXIT_INTERRUPTED, EXIT_TERMINATED) else exc.code
        raise SystemExit(code) from None


if __name__ == "__main__":
    main()
