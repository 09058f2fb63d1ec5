"""An ST-GCN++-style net (Duan et al. 2022, "PYSKL"): ST-GCN with a learned adjacency and
multi-scale temporal convs, residual at every level."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pipeline.models.common import (
    FramePoolSettings,
    GraphNet,
    MultiScaleTCN,
)
from pipeline.models.registry import register

# Temporal branches: kernel 3 at dilations 1-4, a max-pool and a 1x1, as ST-GCN++ has them.
KERNEL, DILATIONS = 3, (1, 2, 3, 4)


@dataclass(frozen=True)
class STGCNPPSettings(FramePoolSettings):
    pass


class _AdaptiveGraphConv(nn.Module):
    """sum_k W_k h A_k with each A_k a parameter started at the skeleton's partition k, so
    training can add edges the skeleton lacks (a hand to the other hand) or weaken its own;
    then BN, a residual and ReLU."""

    def __init__(self, cin: int, cout: int, graph: Tensor) -> None:
        super().__init__()
        self.adjacency = nn.Parameter(graph.clone())
        self.conv = nn.Conv2d(graph.shape[0] * cin, cout, 1)
        self.bn = nn.BatchNorm2d(cout)
        self.res: nn.Module = nn.Identity()
        if cin != cout:
            self.res = nn.Sequential(nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout))

    def forward(self, h: Tensor) -> Tensor:
        n, _, frames, joints = h.shape
        # Neighbours first, then the 1x1 conv: it mixes subsets x in channels, fewer than
        # subsets x out in every block.
        y = torch.einsum("nctv,kvw->nkctw", h, self.adjacency).reshape(n, -1, frames, joints)
        return torch.relu(self.bn(self.conv(y)) + self.res(h))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, dropout: float, graph: Tensor) -> None:
        super().__init__()
        self.stride = stride
        self.gcn = _AdaptiveGraphConv(cin, cout, graph)
        self.tcn = MultiScaleTCN(cout, cout, stride, KERNEL, DILATIONS, dropout)
        self.res: nn.Module = nn.Identity()
        if cin != cout or stride != 1:
            self.res = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=(stride, 1)), nn.BatchNorm2d(cout)
            )

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        y = self.gcn(h) * mask[:, None, :, None]
        return torch.relu(self.tcn(y, mask) + self.res(h))


@register(
    "stgcnpp", STGCNPPSettings, "ST-GCN++-style: learned adjacency, multi-scale temporal convs"
)
class STGCNPP(GraphNet):
    """Blocks of an adaptive graph conv and a multi-scale temporal conv, each residual, on the
    COCO-17 graph. `hidden` is the first blocks' width: it doubles, and the frame rate halves,
    twice (`common.stages`); the output is re-masked after every block.
    """

    arch = "stgcnpp"
    block = _Block
