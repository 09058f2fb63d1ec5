"""An ST-GCN++-style net (Duan et al. 2022, "PYSKL"): ST-GCN with a learned adjacency and
multi-scale temporal convs, residual at every level."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from pipeline.models.common import FramePoolSettings, GraphNet
from pipeline.models.registry import register


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

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        # `mask` unused: one adjacency for every frame (GraphBlock calls every graph conv so)
        n, _, frames, joints = h.shape
        # Neighbours first, then the 1x1 conv: it mixes subsets x in channels, fewer than
        # subsets x out in every block.
        y = torch.einsum("nctv,kvw->nkctw", h, self.adjacency).reshape(n, -1, frames, joints)
        return torch.relu(self.bn(self.conv(y)) + self.res(h))


@register(
    "stgcnpp", STGCNPPSettings, "ST-GCN++-style: learned adjacency, multi-scale temporal convs"
)
class STGCNPP(GraphNet):
    """Blocks of an adaptive graph conv and a multi-scale temporal conv, each residual, on the
    COCO-17 graph. `hidden` is the first blocks' width: it doubles, and the frame rate halves,
    twice (`common.stages`); the output is re-masked after every block.
    """

    arch = "stgcnpp"
    graph_conv = _AdaptiveGraphConv
    # temporal branches: kernel 3 at dilations 1-4, a max-pool and a 1x1 (as in ST-GCN++)
    kernel, dilations = 3, (1, 2, 3, 4)
