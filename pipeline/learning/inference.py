"""Running a model on stored clips: class probabilities averaged over test-time views and mirror
images, and the table of predictions.

Validation during training, the evaluate stage, `predict` and an exported model all compute
through `Classifier`, so a clip gets the same input and the same averaging wherever it is
classified.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from pipeline.core.params import AugmentParams, ModelParams
from pipeline.learning import features


class Classifier(nn.Module):
    """A model as it predicts: stored views in, class probabilities out.

    `x` [N, V, T, P, J, 3] holds V views of each of N clips as the shards store them (x, y,
    score per joint, zero after each clip's length), `lengths` [N] their lengths; the result
    [N, classes] is the softmax averaged over the V views and, with `flip`, their mirror images.
    The model's input streams are built inside, so this is all there is between preprocessed
    clips and probabilities, for the stages and for an exported model alike.
    """

    def __init__(self, model: nn.Module, cfg: ModelParams, flip: bool) -> None:
        super().__init__()
        self.model = model
        self.streams, self.score, self.flip = tuple(cfg.streams), cfg.score, flip

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        clips, views = x.shape[0], x.shape[1]
        x = x.flatten(0, 1)  # clip-major: clip 0's views, then clip 1's
        lengths = lengths[:, None].expand(clips, views).flatten()
        if self.flip:
            x = torch.cat([x, features.mirror(x)])
            lengths = torch.cat([lengths, lengths])
        logits = self.model(features.build_input(x, lengths, self.streams, self.score), lengths)
        probs = torch.softmax(logits.float(), dim=1)
        return probs.view(-1, clips, views, probs.shape[1]).mean(dim=(0, 2))


class Clips(Protocol):
    """What `predict` reads: a shards split (`ShardSet`) or clips in memory (`ClipArray`)."""

    lengths: np.ndarray

    def __len__(self) -> int: ...
    def gather(self, idx: np.ndarray, view: int = 0) -> np.ndarray: ...
    def batches(self, batch_size: int) -> Iterator[np.ndarray]: ...


class ClipArray:
    """Preprocessed clips in memory, [clips, views, frames, persons, 17, 3], read as a split."""

    def __init__(self, x: np.ndarray, lengths: np.ndarray) -> None:
        self.x, self.lengths = x, np.asarray(lengths, np.int64)

    def __len__(self) -> int:
        return len(self.x)

    def gather(self, idx: np.ndarray, view: int = 0) -> np.ndarray:
        return self.x[idx, view]

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        for start in range(0, len(self), batch_size):
            yield np.arange(start, min(start + batch_size, len(self)))


def to_input(
    x: np.ndarray,
    lengths: np.ndarray,
    cfg: ModelParams,
    device: torch.device,
    augment: AugmentParams | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A gathered batch as model input on `device`: optional augmentation, then the streams."""
    xt, lt = torch.from_numpy(x), torch.from_numpy(lengths)
    inputs = features.model_input(xt, lt, cfg.streams, cfg.score, augment, generator, device)
    return inputs, lt.to(device)


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bfloat16 mixed precision where asked for and on CUDA; elsewhere full precision."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict(
    model: nn.Module,
    clips: Clips,
    cfg: ModelParams,
    device: torch.device,
    batch_size: int,
    views: int = 1,
    flip: bool = False,
    amp: bool = False,
) -> np.ndarray:
    """Class probabilities [N, classes], averaged over `views` stored views (and their mirror)."""
    model.eval()
    classifier = Classifier(model, cfg, flip)
    out = []
    for idx in clips.batches(batch_size):
        x = np.stack([clips.gather(idx, view) for view in range(views)], axis=1)
        lengths = torch.from_numpy(clips.lengths[idx]).to(device)
        with autocast(device, amp):
            probs = classifier(torch.from_numpy(x).to(device, non_blocking=True), lengths)
        out.append(probs.cpu().numpy())
    return np.concatenate(out)


def table(
    frame_dirs: Sequence[str],
    probs: np.ndarray,
    classes: Sequence[str],
    top: int = 3,
    actual: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row per clip: frame_dir, its true class (when known), the predicted class, its
    probability rounded to 6 decimals and the `top` most likely classes joined by `|`."""
    best = np.argsort(-probs, axis=1, kind="stable")[:, :top]
    names = np.asarray(classes)
    columns = {"frame_dir": list(frame_dirs)}
    if actual is not None:
        columns["actual"] = list(actual)
    columns |= {
        "predicted": names[best[:, 0]],
        "confidence": probs[np.arange(len(probs)), best[:, 0]].round(6),
        f"top{top}": ["|".join(names[row]) for row in best],
    }
    return pd.DataFrame(columns)
