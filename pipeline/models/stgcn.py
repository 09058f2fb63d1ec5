"""A small ST-GCN (Yan et al. 2018): graph convs on the COCO-17 skeleton, then temporal convs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pipeline.core.params import ModelParams
from pipeline.core.skeleton import NUM_JOINTS
from pipeline.models.common import (
    FramePoolSettings,
    PooledClassifier,
    fold_persons,
    graph_input,
    needs_coco,
)
from pipeline.models.graph import coco_partitions
from pipeline.models.registry import register

KERNEL = 9  # temporal kernel, as in ST-GCN


@dataclass(frozen=True)
class STGCNSettings(FramePoolSettings):
    pass


class _GraphBlock(nn.Module):
    """Graph conv -> BN -> ReLU -> temporal conv -> BN, plus a residual, ReLU and dropout."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float, subsets: int) -> None:
        super().__init__()
        self.stride = stride
        self.gcn = nn.Conv2d(subsets * cin, cout, 1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.tcn = nn.Conv2d(
            cout, cout, (KERNEL, 1), padding=(KERNEL // 2, 0), stride=(stride, 1), bias=False
        )
        self.bn2 = nn.BatchNorm2d(cout)
        self.res: nn.Module = nn.Identity()
        if cin != cout or stride != 1:
            self.res = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=(stride, 1)), nn.BatchNorm2d(cout)
            )
        self.drop = nn.Dropout(dropout)

    def forward(self, h: Tensor, graph: Tensor, mask: Tensor) -> Tensor:
        n, _, frames, joints = h.shape
        # Aggregating neighbours before the 1x1 conv (sum_k W_k h A_k, in either order) mixes
        # the few input channels rather than subsets x hidden, far cheaper in the first block.
        y = torch.einsum("nctv,kvw->nkctw", h, graph).reshape(n, -1, frames, joints)
        y = self.gcn(y)
        # Re-mask before the temporal conv: the gcn's bias would otherwise fill the padding.
        y = torch.relu(self.bn1(y)) * mask[:, None, :, None]
        y = self.bn2(self.tcn(y))
        return self.drop(torch.relu(y + self.res(h)))


@register("stgcn", STGCNSettings, "a small ST-GCN on the COCO-17 graph")
class STGCN(nn.Module):
    """A small ST-GCN on the COCO-17 graph with learnable edge importance.

    Every block after the first halves the frame rate (stride 2), which keeps deeper nets cheap
    on CPU; the valid-frame mask is subsampled alongside.
    """

    @classmethod
    def build(
        cls, cfg: ModelParams, in_channels: int, persons: int, num_classes: int, joints: int
    ) -> STGCN:
        needs_coco("stgcn", joints)
        with_max = cfg.net.frame_pool == "mean_max"
        return cls(in_channels, num_classes, cfg.hidden, cfg.layers, cfg.dropout, with_max)

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
        graph = coco_partitions()
        self.register_buffer("graph", graph, persistent=False)
        self.data_bn = nn.BatchNorm1d(NUM_JOINTS * channels)
        self.blocks = nn.ModuleList(
            _GraphBlock(
                channels if i == 0 else hidden, hidden, 1 if i == 0 else 2, dropout, graph.shape[0]
            )
            for i in range(layers)
        )
        self.importance = nn.ParameterList(
            nn.Parameter(torch.ones_like(graph)) for _ in range(layers)
        )
        self.head = PooledClassifier(hidden, num_classes, with_max)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        x, mask, present = fold_persons(x, lengths)
        h = graph_input(self.data_bn, x, mask)  # [N, C, T, V]
        for block, importance in zip(self.blocks, self.importance, strict=True):
            h = block(h, self.graph * importance, mask)
            mask = mask[:, :: block.stride]
            h = h * mask[:, None, :, None]
        return self.head(h.mean(-1), mask, present)
