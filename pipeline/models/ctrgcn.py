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

from pipeline.models.common import FramePoolSettings, GraphNet
from pipeline.models.registry import register


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


@register("ctrgcn", CTRGCNSettings, "CTR-GCN-style: channel-wise topology refinement")
class CTRGCN(GraphNet):
    """Blocks of a topology-refining graph conv and a multi-scale temporal conv, each residual,
    on the COCO-17 graph. `hidden` is the first blocks' width: it doubles, and the frame rate
    halves, twice (`common.stages`); the output is re-masked after every block.
    """

    arch = "ctrgcn"
    graph_conv = _CTRGC
    # temporal branches: kernel 5 at dilations 1 and 2, a max-pool and a 1x1 (as in CTR-GCN)
    kernel, dilations = 5, (1, 2)
