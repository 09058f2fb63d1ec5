"""The training loop: epochs over memory-mapped shards, validation, checkpoints that resume.

Randomness is derived from (train.seed, epoch) at the start of every epoch, so an epoch's
shuffle, augmentation and dropout do not depend on how the run got there: a run resumed from
the checkpoint of epoch k continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import signal
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline import features, params
from pipeline.atomic import atomic_path
from pipeline.errors import PipelineError, fail
from pipeline.shardset import ShardSet

NO_AUGMENT = dict.fromkeys(params.AUGMENT, 0.0)  # every knob of params' `augment`, off
FLIP = {**NO_AUGMENT, "flip": 1.0}


class Interrupted(PipelineError):
    """Ctrl-C during training: progress up to the last finished epoch is on disk."""


class Diverged(Exception):
    """A loss that is NaN or infinite: the weights are lost, every later step would be too."""

    def __init__(self, where: str, loss: float) -> None:
        super().__init__(where)
        self.where, self.loss = where, loss


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % 2**63


def make_optimizer(model: nn.Module, cfg: Mapping[str, Any]) -> torch.optim.Optimizer:
    lr, wd = cfg["lr"], cfg["weight_decay"]
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=wd
        )
    kind = torch.optim.AdamW if cfg["optimizer"] == "adamw" else torch.optim.Adam
    return kind(model.parameters(), lr=lr, weight_decay=wd)


def make_schedule(
    optimizer: torch.optim.Optimizer, cfg: Mapping[str, Any], steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step learning-rate factor: linear warm-up, then constant or a cosine decay to zero."""
    total = max(1, cfg["epochs"] * steps_per_epoch)
    warm = min(cfg["warmup_epochs"] * steps_per_epoch, total - 1)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if cfg["schedule"] == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def to_input(
    x: np.ndarray, lengths: np.ndarray, cfg: Mapping[str, Any], device: torch.device,
    augment: Mapping[str, float] | None = None, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A gathered batch as model input on `device`: optional augmentation, then the streams."""
    xt = torch.from_numpy(x)
    lt = torch.from_numpy(lengths)
    if augment is not None:  # augment returns the batch itself when every knob is off
        xt = features.augment(xt, lt, augment, generator)
    xt = features.build_input(
        xt.to(device, non_blocking=True), lt.to(device), cfg["streams"], cfg["score"]
    )
    return xt, lt.to(device)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict(
    model: nn.Module, data: ShardSet, cfg: Mapping[str, Any], device: torch.device,
    batch_size: int, views: int = 1, flip: bool = False, amp: bool = False,
) -> np.ndarray:
    """Class probabilities [N, classes], averaged over `views` stored views (and their mirror)."""
    model.eval()
    out = []
    for idx in data.batches(batch_size):
        total = 0.0
        for view in range(views):
            x = data.gather(idx, view)
            for aug in ([None, FLIP] if flip else [None]):
                xt, lt = to_input(x, data.lengths[idx], cfg, device, aug, torch.Generator())
                with autocast(device, amp):
                    total = total + torch.softmax(model(xt, lt).float(), dim=1)
        out.append((total / (views * (2 if flip else 1))).cpu().numpy())
    return np.concatenate(out)


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


class StopFlag:
    """Turns SIGINT into a flag the loop checks after each batch, so it stops at a clean point."""

    def __init__(self) -> None:
        self.raised = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopFlag]:
        def handler(signum: int, frame: Any) -> None:
            self.raised = True

        previous = signal.signal(signal.SIGINT, handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def save_atomic(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def train_epoch(
    model: nn.Module, data: ShardSet, cfg: Mapping[str, Any], train: Mapping[str, Any],
    device: torch.device, optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR, criterion: nn.Module, epoch: int,
    stop: StopFlag, desc: str,
) -> tuple[float, float]:
    seed = epoch_seed(train["seed"], epoch)
    torch.manual_seed(seed)  # dropout
    rng = np.random.default_rng(seed)  # shuffling
    generator = torch.Generator().manual_seed(seed)  # augmentation
    model.train()
    loss_sum, correct, seen = 0.0, 0, 0
    batches = list(data.batches(train["batch_size"], rng, train["drop_last"]))
    for number, idx in enumerate(tqdm(batches, desc=desc, leave=False, disable=None), 1):
        # a fresh temporal sampling of each clip every epoch, when the shards hold several
        views = rng.integers(data.views, size=len(idx)) if data.views > 1 else 0
        x, lengths = to_input(
            data.gather(idx, views), data.lengths[idx], cfg, device, cfg["augment"], generator
        )
        y = torch.from_numpy(data.targets[idx]).to(device)
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, train["amp"]):
            logits = model(x, lengths)
            loss = criterion(logits.float(), y)
        value = loss.item()
        if not math.isfinite(value):  # checked before the step, which would spread it
            raise Diverged(f"batch {number} of {len(batches)}", value)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += value * len(idx)
        correct += int((logits.argmax(1) == y).sum())
        seen += len(idx)
        if stop.raised:
            raise Interrupted("interrupted")
    return loss_sum / max(seen, 1), correct / max(seen, 1)


def evaluate_split(
    model: nn.Module, data: ShardSet, cfg: Mapping[str, Any], device: torch.device,
    batch_size: int, amp: bool,
) -> tuple[float, float]:
    """Loss and accuracy of the model on a split (first view, no test-time averaging)."""
    probs = predict(model, data, cfg, device, batch_size, amp=amp)
    picked = probs[np.arange(len(data)), data.targets]
    loss = float(-np.log(np.clip(picked, 1e-12, None)).mean())
    return loss, float((probs.argmax(1) == data.targets).mean())


def copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def restore(path: Path, key: str) -> dict[str, Any] | None:
    """The resume checkpoint at `path` if it belongs to this exact configuration."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a checkpoint from an older layout or a damaged file: start over
        return None
    return state if isinstance(state, dict) and state.get("fingerprint") == key else None


def history_row(
    epoch: int, train: tuple[float, float], val: tuple[float, float], lr: float
) -> dict:
    return {
        "epoch": epoch, "train_loss": train[0], "train_acc": train[1],
        "val_loss": val[0], "val_acc": val[1], "lr": lr,
    }  # fmt: skip


def better(row: Mapping[str, float], best: Mapping[str, float] | None) -> bool:
    """Higher validation accuracy wins; equal accuracy goes to the lower validation loss."""
    if best is None:
        return True
    return (row["val_acc"], -row["val_loss"]) > (best["val_acc"], -best["val_loss"])


def interrupted(name: str, epoch: int, saved: int, resume_file: Path) -> Interrupted:
    """The message for Ctrl-C: what is saved and how to go on."""
    how = f"run `dvc repro` (or python -m pipeline.train {name})"
    if saved == 0:
        return Interrupted(f"train {name}: interrupted in epoch {epoch}, before any epoch was "
                           f"saved; {how} to start again")  # fmt: skip
    return Interrupted(f"train {name}: interrupted in epoch {epoch}; epochs up to {saved} are "
                       f"saved in {resume_file}; {how} to resume")  # fmt: skip


def diverged(name: str, epoch: int, exc: Diverged, cfg: Mapping[str, Any]) -> PipelineError:
    """The message for a loss gone NaN or infinite: where, and which knob to turn."""
    section = params.STAGE_SECTION.get(name, name)
    return fail(
        params.PARAMS_FILE,
        f"train {name} diverged in epoch {epoch}, {exc.where} (loss {exc.loss}): lower "
        f"{section}.lr (now {cfg['lr']}); no model was saved",
    )


def fit(
    model: nn.Module, cfg: Mapping[str, Any], train: Mapping[str, Any], shards_dir: Path,
    device: torch.device, resume_file: Path, name: str, on_epoch: Any = None,
) -> dict[str, Any]:
    """Train `model` in place per `cfg`; return the selected weights and the run's history.

    `on_epoch(history)` is called after every finished epoch (for logging); a checkpoint of the
    run is written to `resume_file` after every epoch and removed when the run completes.
    """
    data, val = ShardSet(shards_dir, "train"), ShardSet(shards_dir, "val")
    optimizer = make_optimizer(model, cfg)
    size = train["batch_size"]
    steps = len(data) // size if train["drop_last"] else -(-len(data) // size)
    scheduler = make_schedule(optimizer, cfg, steps)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"])
    key = fingerprint(dict(cfg), dict(train), data.manifest, data.table.to_csv(index=False))
    state = restore(resume_file, key)
    history: list[dict[str, float]] = []
    best: dict[str, Any] | None = None
    start = 1
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best, start = state["history"], state["best"], state["epoch"] + 1
        print(f"train {name}: resuming after epoch {state['epoch']} from {resume_file}")
        if on_epoch is not None:  # log the restored epochs, even when none is left to run
            on_epoch(history)
    stop = StopFlag()
    with stop.installed():
        for epoch in range(start, cfg["epochs"] + 1):
            try:
                fit_stats = train_epoch(
                    model, data, cfg, train, device, optimizer, scheduler, criterion, epoch,
                    stop, f"{name} {epoch}/{cfg['epochs']}",
                )
                val_stats = evaluate_split(
                    model, val, cfg, device, train["batch_size"], train["amp"]
                )
                if not math.isfinite(val_stats[0]):  # the last step made the weights unusable
                    raise Diverged("validation after its last batch", val_stats[0])
            except Interrupted:
                raise interrupted(name, epoch, epoch - 1, resume_file) from None
            except Diverged as exc:
                # resuming under the same params would diverge again; other params start over
                resume_file.unlink(missing_ok=True)
                raise diverged(name, epoch, exc, cfg) from None
            row = history_row(epoch, fit_stats, val_stats, scheduler.get_last_lr()[0])
            history.append(row)
            if better(row, best and best["row"]):
                best = {"row": row, "model": copy_state(model)}
            if on_epoch is not None:
                on_epoch(history)
            print(
                f"train {name} epoch {epoch:3d}: loss {row['train_loss']:.4f} acc "
                f"{row['train_acc']:.3f} | val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}"
            )
            save_atomic({
                "fingerprint": key, "epoch": epoch, "model": copy_state(model),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "history": history, "best": best,
            }, resume_file)  # fmt: skip
            if stop.raised:  # Ctrl-C during validation or saving: stop now that it is saved
                raise interrupted(name, epoch, epoch, resume_file)
    chosen = best if cfg["select"] == "best" else {"row": history[-1], "model": copy_state(model)}
    return {"model": chosen["model"], "row": chosen["row"], "history": history}
