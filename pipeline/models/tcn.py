"""A temporal conv net: residual 1-D convolutions over time of each person's joint channels."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pipeline.core.params import ModelParams
from pipeline.models.common import (
    FramePoolSettings,
    PooledClassifier,
    batch_norm_frames,
    fold_persons,
)
from pipeline.models.registry import register

KERNEL = 9  # temporal kernel, as in ST-GCN


@dataclass(frozen=True)
class TCNSettings(FramePoolSettings):
    pass


class _TemporalBlock(nn.Module):
    def __init__(self, cin: int, cout: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, KERNEL, padding="same", dilation=dilation, bias=False)
        self.bn = nn.BatchNorm1d(cout)
        self.drop = nn.Dropout(dropout)
        self.res = nn.Identity() if cin == cout else nn.Conv1d(cin, cout, 1)

    def forward(self, h: Tensor) -> Tensor:
        return self.drop(torch.relu(self.bn(self.conv(h)))) + self.res(h)


@register("tcn", TCNSettings, "temporal conv net over each person's joint channels")
class TCN(nn.Module):
    """Residual 1-D convolutions over time, the V*C joint channels of each person as input.

    Dilation cycles 1, 2, 4, 8 so a few layers see most of a 64-frame clip at full resolution.
    The output is re-masked after every block, so each conv meets zeros past a clip's end, the
    same as its own zero padding at the end of the tensor.
    """

    @classmethod
    def build(
        cls, cfg: ModelParams, in_channels: int, persons: int, num_classes: int, joints: int
    ) -> TCN:
        with_max = cfg.net.frame_pool == "mean_max"
        return cls(joints * in_channels, num_classes, cfg.hidden, cfg.layers, cfg.dropout, with_max)

    def __init__(
        self,
        channels: int,
        num_classes: int,
        hidden: int,
        layers: int,
        dropout: float,
        with_max: bool = False,
    ) -> None:
        super().__init__()
        self.data_bn = nn.BatchNorm1d(channels)
        self.blocks = nn.ModuleList(
            _TemporalBlock(channels if i == 0 else hidden, hidden, 2 ** (i % 4), dropout)
            for i in range(layers)
        )
        self.head = PooledClassifier(hidden, num_classes, with_max)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        x, mask, present = fold_persons(x, lengths)
        h = batch_norm_frames(self.data_bn, x, mask)
        for block in self.blocks:
            h = block(h) * mask[:, None, :]
        return self.head(h, mask, present)
