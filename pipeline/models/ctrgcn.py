"""A CTR-GCN-style net (Chen et al. 2021): channel-wise topology refinement graph convs.

Each partition of the skeleton graph has a shared, learned topology A_k; every sample refines
it per output channel from its own joint features: the pairwise differences of two reduced
projections of each joint (averaged over the clip's valid frames), through tanh and a 1x1 conv,
scaled by a learned alpha that starts at 0 (so training starts from the shared topology).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pipeline.core.params import ModelParams
from pipeline.core.skeleton import NUM_JOINTS
from pipeline.models.common import (
    FramePoolSettings,
    MultiScaleTCN,
    PooledClassifier,
    fold_persons,
    graph_input,
    needs_coco,
    stages,
)
from pipeline.models.graph import coco_directed
from pipeline.models.registry import register

# Temporal branches: kernel 5 at dilations 1 and 2, a max-pool and a 1x1, as CTR-GCN has them.
KERNEL, DILATIONS = 5, (1, 2)


@dataclass(frozen=True)
class CTRGCNSettings(FramePoolSettings):
    pass


class _RefinedGraphConv(nn.Module):
    """One partition: sum over joints v of (A_k + alpha * Q(x))[c, v, w] * W x[c, t, v]."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        reduced = 8 if cin <= 16 else cin // 8
        self.query = nn.Conv1d(cin, reduced, 1)
        self.key = nn.Conv1d(cin, reduced, 1)
        self.refine = nn.Conv2d(reduced, cout, 1)
        self.value = nn.Conv2d(cin, cout, 1)

    def forward(self, h: Tensor, pooled: Tensor, shared: Tensor, alpha: Tensor) -> Tensor:
        # pooled [N, C, V]: each joint's features averaged over the valid frames
        pairs = torch.tanh(self.query(pooled)[..., :, None] - self.key(pooled)[..., None, :])
        topology = self.refine(pairs) * alpha + shared  # [N, Cout, V, W]
        return torch.einsum("ncvw,nctv->nctw", topology, self.value(h))


class _CTRGC(nn.Module):
    def __init__(self, cin: int, cout: int, graph: Tensor) -> None:
        super().__init__()
        self.adjacency = nn.Parameter(graph.clone())
        self.alpha = nn.Parameter(torch.zeros(1))
        self.parts = nn.ModuleList(_RefinedGraphConv(cin, cout) for _ in range(graph.shape[0]))
        self.bn = nn.BatchNorm2d(cout)
        self.res: nn.Module = nn.Identity()
        if cin != cout:
            self.res = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout))

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        weight = mask.to(h.dtype)
        pooled = h.sum(2) / weight.sum(1).clamp(min=1.0)[:, None, None]  # h is 0 off the mask
        y = sum(
            part(h, pooled, shared, self.alpha)
            for part, shared in zip(self.parts, self.adjacency, strict=True)
        )
        return torch.relu(self.bn(y) + self.res(h))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dropout: float, graph: Tensor) -> None:
        super().__init__()
        self.stride = stride
        self.gcn = _CTRGC(cin, cout, graph)
        self.tcn = MultiScaleTCN(cout, cout, stride, KERNEL, DILATIONS, dropout)
        self.res: nn.Module = nn.Identity()
        if cin != cout or stride != 1:
            self.res = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=(stride, 1)), nn.BatchNorm2d(cout)
            )

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        y = self.gcn(h, mask) * mask[:, None, :, None]
        return torch.relu(self.tcn(y, mask) + self.res(h))


@register("ctrgcn", CTRGCNSettings, "CTR-GCN-style: channel-wise topology refinement")
class CTRGCN(nn.Module):
    """Blocks of a topology-refining graph conv and a multi-scale temporal conv, each residual,
    on the COCO-17 graph. `hidden` is the first blocks' width: it doubles, and the frame rate
    halves, twice (`common.stages`); the output is re-masked after every block.
    """

    @classmethod
    def build(
        cls, cfg: ModelParams, in_channels: int, persons: int, num_classes: int, joints: int
    ) -> CTRGCN:
        needs_coco("ctrgcn", joints)
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
        graph = coco_directed()
        self.data_bn = nn.BatchNorm1d(NUM_JOINTS * channels)
        plan = stages(channels, hidden, layers)
        self.blocks = nn.ModuleList(
            _Block(cin, cout, stride, dropout, graph) for cin, cout, stride in plan
        )
        self.head = PooledClassifier(plan[-1][1], num_classes, with_max)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        x, mask, present = fold_persons(x, lengths)
        h = graph_input(self.data_bn, x, mask)  # [N, C, T, V]
        for block in self.blocks:
            mask_out = mask[:, :: block.stride]
            h = block(h, mask) * mask_out[:, None, :, None]
            mask = mask_out
        return self.head(h.mean(-1), mask, present)
