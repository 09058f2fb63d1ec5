"""Running a model on stored clips: a batch as model input, and class probabilities averaged
over test-time views and mirror images.

Validation during training, the evaluate stage and anything else that predicts go through
`predict`, so a clip gets the same input and the same averaging wherever it is classified.
"""

from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import torch
from torch import nn

from pipeline import features
from pipeline.params import NO_AUGMENT, AugmentParams, ModelParams
from pipeline.shardset import ShardSet

FLIP = dataclasses.replace(NO_AUGMENT, flip=1.0)  # every clip mirrored, nothing else


def to_input(
    x: np.ndarray, lengths: np.ndarray, cfg: ModelParams, device: torch.device,
    augment: AugmentParams | None = None, generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A gathered batch as model input on `device`: optional augmentation, then the streams."""
    xt = torch.from_numpy(x)
    lt = torch.from_numpy(lengths)
    if augment is not None:  # augment returns the batch itself when every knob is off
        xt = features.augment(xt, lt, augment, generator)
    xt = features.build_input(xt.to(device, non_blocking=True), lt.to(device), cfg.streams,
                              cfg.score)  # fmt: skip
    return xt, lt.to(device)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 mixed precision where asked for and on CUDA; elsewhere full precision."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict(
    model: nn.Module, clips: ShardSet, cfg: ModelParams, device: torch.device,
    batch_size: int, views: int = 1, flip: bool = False, amp: bool = False,
) -> np.ndarray:
    """Class probabilities [N, classes], averaged over `views` stored views (and their mirror)."""
    model.eval()
    out = []
    for idx in clips.batches(batch_size):
        total = 0.0
        for view in range(views):
            x = clips.gather(idx, view)
            for aug in ([None, FLIP] if flip else [None]):
                xt, lt = to_input(x, clips.lengths[idx], cfg, device, aug, torch.Generator())
                with autocast(device, amp):
                    total = total + torch.softmax(model(xt, lt).float(), dim=1)
        out.append((total / (views * (2 if flip else 1))).cpu().numpy())
    return np.concatenate(out)
