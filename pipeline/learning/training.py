"""The training loop: epochs over memory-mapped shards, validation, a resume file per epoch.

Randomness is derived from (train.seed, epoch) at the start of every epoch, so an epoch's
shuffle, augmentation and dropout do not depend on how the run got there: a run resumed from
the resume file of epoch k continues exactly as the uninterrupted run would have.

With several processes (pipeline.learning.distributed) every process draws the same shuffle, so the
global batches are those of one process, and takes its share of each; rank 0 validates, logs
and writes the resume file, and hands the others what they need to agree: the batch's loss,
the validation scores, a stop asked for by Ctrl-C, the resume file's content.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline.core import params
from pipeline.core.errors import StopFlag
from pipeline.core.params import ModelParams, TrainParams
from pipeline.dataset.shardset import ShardSet
from pipeline.learning.checkpoint import save_atomic
from pipeline.learning.distributed import SINGLE, World, unwrap
from pipeline.learning.inference import autocast, predict, to_input
from pipeline.learning.scoring import score


class Interrupted(Exception):
    """Ctrl-C during epoch `epoch`; epochs up to `saved` (0: none) are in the resume file."""

    def __init__(self, epoch: int, saved: int) -> None:
        super().__init__(f"interrupted in epoch {epoch}")
        self.epoch, self.saved = epoch, saved


class Diverged(Exception):
    """A loss that is NaN or infinite: the weights are lost, every later step would be too."""

    def __init__(self, where: str, loss: float, epoch: int = 0) -> None:
        super().__init__(where)
        self.where, self.loss, self.epoch = where, loss, epoch


@dataclass(frozen=True)
class Epoch:
    """One finished epoch's figures: the loss and accuracy of training and of validation."""

    epoch: int
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    lr: float

    def better_than(self, other: Epoch | None) -> bool:
        """Higher validation accuracy wins; equal accuracy goes to the lower validation loss."""
        if other is None:
            return True
        return (self.val_acc, -self.val_loss) > (other.val_acc, -other.val_loss)


@dataclass(frozen=True)
class FitResult:
    weights: dict[str, torch.Tensor]  # of the selected epoch (`select`: best or last)
    selected: Epoch
    history: list[Epoch]  # every epoch of the run, resumed ones included


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % 2**63


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a process's own draws (dropout, augmentation); rank 0 keeps `seed`, so one
    process draws as it always did."""
    return (seed + rank * 0x9E3779B97F4A7C15) % 2**63


def make_criterion(cfg: ModelParams, world: World = SINGLE) -> nn.Module:
    """The batch's mean cross-entropy; per clip with several processes (`World.batch_loss`)."""
    reduction = "mean" if world.size == 1 else "none"
    return nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing, reduction=reduction)


def make_optimizer(model: nn.Module, cfg: ModelParams) -> torch.optim.Optimizer:
    lr, wd = cfg.lr, cfg.weight_decay
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=wd
        )
    kind = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=lr, weight_decay=wd)


def make_schedule(
    optimizer: torch.optim.Optimizer, cfg: ModelParams, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning-rate factor: linear warm-up, then constant or a cosine decay to zero."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = min(cfg.warmup_epochs * steps_per_epoch, total - 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg.schedule == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class EpochStats:
    """What `train_epoch` reports of its own work when asked: the batches and clips it ran and
    the seconds spent on their data (gathering from the shards, augmentation, streams).
    `limit` > 0 stops the epoch after that many batches."""

    limit: int = 0
    batches: int = 0
    clips: int = 0
    data_seconds: float = 0.0

    def add(self, clips: int, data_seconds: float) -> None:
        self.batches += 1
        self.clips += clips
        self.data_seconds += data_seconds


def train_epoch(
    model: nn.Module,
    clips: ShardSet,
    cfg: ModelParams,
    train_cfg: TrainParams,
    device: torch.device,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    criterion: nn.Module,
    epoch: int,
    stop: StopFlag,
    desc: str,
    world: World = SINGLE,
    stats: EpochStats | None = None,
) -> tuple[float, float]:
    """One pass over the train clips; the mean loss and the accuracy of the batches as seen
    (of the global batches, with several processes: `criterion` from `make_criterion`).

    `stats`, when given, says where the time went and may cut the epoch short (bench/ reads
    it, rather than wrapping this module's functions)."""
    seed = epoch_seed(train_cfg.seed, epoch)
    own = rank_seed(seed, world.rank)
    torch.manual_seed(own)  # dropout
    rng = np.random.default_rng(seed)  # shuffling and views: the same in every process
    generator = torch.Generator().manual_seed(own)  # augmentation
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    batches = list(clips.batches(train_cfg.batch_size, rng, train_cfg.drop_last))
    if stats is not None and stats.limit:
        batches = batches[: stats.limit]
    bar = tqdm(batches, desc=desc, leave=False, disable=None if world.main else True)
    for number, idx in enumerate(bar, 1):
        started = time.perf_counter()
        total = len(idx)
        # a fresh temporal sampling of each clip every epoch, when the shards hold several
        views = rng.integers(clips.views, size=total) if clips.views > 1 else 0
        if world.size > 1:
            part, weight = world.share(total)
            idx, views = idx[part], (views[part] if clips.views > 1 else 0)
        x, lengths = to_input(
            clips.gather(idx, views), clips.lengths[idx], cfg, device, cfg.augment, generator
        )
        if stats is not None:
            stats.add(len(idx), time.perf_counter() - started)
        y = torch.from_numpy(clips.targets[idx]).to(device)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, train_cfg.amp):
            logits = model(x, lengths)
            loss = criterion(logits.float(), y)
        hits = logits.argmax(1) == y
        if world.size > 1:
            loss, value, right, stopping = world.batch_loss(loss, hits, weight, total, stop.raised)
        else:
            value, right, stopping = loss.item(), int(hits.sum()), stop.raised
        if not math.isfinite(value):  # checked before the step, which would spread it
            raise Diverged(f"batch {number} of {len(batches)}", value, epoch)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += value * total
        correct += right
        seen += total
        if stopping:
            raise Interrupted(epoch, epoch - 1)
    return loss_sum / max(seen, 1), correct / max(seen, 1)


def validate(
    model: nn.Module,
    clips: ShardSet,
    cfg: ModelParams,
    train_cfg: TrainParams,
    device: torch.device,
    epoch: int = 0,
) -> tuple[float, float]:
    """Loss and accuracy on a split (first view, no test-time averaging), scored as the
    evaluate stage scores the test split."""
    probs = predict(model, clips, cfg, device, train_cfg.batch_size, amp=train_cfg.amp)
    if not np.isfinite(probs).all():  # the last step made the weights unusable
        raise Diverged("validation after its last batch", float("nan"), epoch)
    scores = score(clips.targets, probs)
    return scores.loss, scores.accuracy


def validate_once(
    net: nn.Module,
    clips: ShardSet,
    cfg: ModelParams,
    train_cfg: TrainParams,
    device: torch.device,
    epoch: int,
    world: World,
) -> tuple[float, float]:
    """`validate` in rank 0 alone, its scores (or its finding that the weights diverged)
    handed to the others: every process holds the same weights."""
    if world.size == 1:
        return validate(net, clips, cfg, train_cfg, device, epoch)
    scores, diverged = (0.0, 0.0), 0.0
    if world.main:
        try:
            scores = validate(net, clips, cfg, train_cfg, device, epoch)
        except Diverged:
            diverged = 1.0
    loss, acc, diverged = world.from_main([*scores, diverged])
    if diverged:
        raise Diverged("validation after its last batch", float("nan"), epoch)
    return loss, acc


def copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}


def read_resume(path: Path) -> bytes:
    """The resume file's bytes; none when it is missing or unreadable."""
    try:
        return path.read_bytes()
    except OSError:
        return b""


def restore(data: bytes, key: str) -> dict[str, Any] | None:
    """A resume file's content if it belongs to this exact configuration."""
    if not data:
        return None
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # a resume file from an older layout or a damaged file: start over
        return None
    return state if isinstance(state, dict) and state.get("fingerprint") == key else None


def fit(
    model: nn.Module,
    cfg: ModelParams,
    train_cfg: TrainParams,
    train_set: ShardSet,
    val_set: ShardSet,
    device: torch.device,
    resume_file: Path,
    log: Callable[[str], None] = print,
    world: World = SINGLE,
) -> FitResult:
    """Train `model` in place per `cfg`; return the selected weights and the run's history.

    The run's state is written to `resume_file` after every epoch (the caller removes it once
    the result is safe); a run under the same params and shards resumes from it. Progress goes
    to `log`, a line at a time. Ctrl-C raises Interrupted at the next clean point; a loss gone
    NaN or infinite raises Diverged, after removing the resume file (it would diverge again).
    With several processes (`world`, `model` wrapped by distributed.wrap) every process
    returns the same result; rank 0 alone reads and writes `resume_file`.
    """
    net = unwrap(model)
    optimizer = make_optimizer(model, cfg)
    size = train_cfg.batch_size
    steps = len(train_set) // size if train_cfg.drop_last else -(-len(train_set) // size)
    scheduler = make_schedule(optimizer, cfg, steps)
    criterion = make_criterion(cfg, world)
    key = fingerprint(
        params.plain(cfg),
        params.plain(train_cfg),
        train_set.manifest,
        train_set.table.to_csv(index=False),
        world.size,
    )
    state = restore(world.bytes_from_main(read_resume(resume_file) if world.main else b""), key)
    history: list[Epoch] = []
    best: tuple[Epoch, dict[str, torch.Tensor]] | None = None
    start = 1
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = [Epoch(**row) for row in state["history"]]
        best = (Epoch(**state["best"]["row"]), state["best"]["model"])
        start = state["epoch"] + 1
        log(f"resuming after epoch {state['epoch']} from {resume_file}")
    with StopFlag().installed() as stop:
        for epoch in range(start, cfg.epochs + 1):
            try:
                fit_stats = train_epoch(
                    model,
                    train_set,
                    cfg,
                    train_cfg,
                    device,
                    optimizer,
                    scheduler,
                    criterion,
                    epoch,
                    stop,
                    f"epoch {epoch}/{cfg.epochs}",
                    world,
                )
                val_stats = validate_once(net, val_set, cfg, train_cfg, device, epoch, world)
            except Diverged:
                if world.main:
                    resume_file.unlink(missing_ok=True)
                raise
            row = Epoch(epoch, *fit_stats, *val_stats, scheduler.get_last_lr()[0])
            history.append(row)
            if row.better_than(best and best[0]):
                best = (row, copy_state(model))
            log(
                f"epoch {epoch:3d}: loss {row.train_loss:.4f} acc {row.train_acc:.3f} | "
                f"val loss {row.val_loss:.4f} acc {row.val_acc:.3f}"
            )
            if world.main:
                save_atomic(
                    {
                        "fingerprint": key,
                        "epoch": epoch,
                        "model": copy_state(model),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "history": [dataclasses.asdict(r) for r in history],
                        "best": {"row": dataclasses.asdict(best[0]), "model": best[1]},
                    },
                    resume_file,
                )
            # Ctrl-C during validation or saving: stop now that it is saved (the others wait
            # for rank 0's save here, so none stops before it)
            if world.any(stop.raised):
                raise Interrupted(epoch, epoch)
    if cfg.select == "best":
        return FitResult(best[1], best[0], history)
    return FitResult(copy_state(model), history[-1], history)
