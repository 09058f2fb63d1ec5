"""The seed notebook's LSTM over flattened frames."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from pipeline.core.params import ModelParams, Section
from pipeline.models.registry import register


@dataclass(frozen=True)
class LSTMSettings(Section):
    # packed: the state at each clip's true last frame | padded: the final state of the padded
    # sequence (the notebook)
    pool: Literal["packed", "padded"]


@register("lstm", LSTMSettings, "the notebook's LSTM over flattened frames")
class SkeletonLSTM(nn.Module):
    """The notebook's LSTM over flattened frames, classifying the last layer's final state.

    `packed` runs each clip only up to its length, so the state used is the one at its true
    last frame; otherwise the padding is fed through too, exactly as the notebook did.
    Attribute names match the notebook's, so its weights load as they are.
    """

    @classmethod
    def build(
        cls, cfg: ModelParams, in_channels: int, persons: int, num_classes: int, joints: int
    ) -> SkeletonLSTM:
        size = persons * joints * in_channels
        packed = cfg.net.pool == "packed"
        return cls(size, num_classes, cfg.hidden, cfg.layers, cfg.dropout, packed)

    def __init__(
        self,
        input_size: int,
        num_classes: int,
        hidden: int,
        layers: int,
        dropout: float,
        packed: bool,
    ) -> None:
        super().__init__()
        self.packed = packed
        self.traceable = False  # set by `traceable`: no packing, which cannot be exported
        self.lstm = nn.LSTM(
            input_size,
            hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
        )
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        seq = x.flatten(2).contiguous()  # [B, T, P*V*C], whatever the layout of x
        if self.packed and self.traceable:
            # An LSTM reads frames in order, so the padding after a clip never reaches its
            # output at the clip's last frame: the same logits as packing, and traceable.
            out, _ = self.lstm(seq)  # [B, T, hidden]: the last layer's state after each frame
            last = (lengths.to(out.device) - 1).clamp(min=0)
            return self.fc(out[torch.arange(out.shape[0], device=out.device), last])
        if self.packed:
            seq = pack_padded_sequence(seq, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(seq)  # with a packed input h_n comes back in batch order
        return self.fc(h_n[-1])
