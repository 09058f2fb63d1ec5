"""What the conv and graph nets share: persons folded into the batch, the valid-frame mask, the
input's batch norm and the pooled classifier head."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from pipeline.core.errors import fail
from pipeline.core.params import PARAMS_FILE, ModelParams, Section
from pipeline.core.skeleton import NUM_JOINTS
from pipeline.models.graph import coco_directed


@dataclass(frozen=True)
class FramePoolSettings(Section):
    """Settings of a net that pools frame features into clip features."""

    frame_pool: Literal["mean", "mean_max"]


def needs_coco(arch: str, joints: int) -> None:
    """Graph nets are built on the COCO-17 skeleton."""
    if joints != NUM_JOINTS:
        raise fail(
            PARAMS_FILE, f"arch: {arch} needs the {NUM_JOINTS}-joint COCO graph, got {joints}"
        )


def fold_persons(x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Zero the padding and move persons into the batch.

    Returns x [B*P, T, V, C], the valid-frame mask [B*P, T] and which person slots hold
    anyone [B, P].
    """
    batch, frames, persons = x.shape[:3]
    mask = torch.arange(frames, device=x.device)[None, :] < lengths.to(x.device)[:, None]
    x = x * mask[:, :, None, None, None]
    present = (x != 0).transpose(1, 2).flatten(2).any(-1)
    # Contiguous whatever the input's layout (build_input returns a view of its own layout), so
    # that every later step computes the same bits as it would from a contiguous input.
    folded = x.transpose(1, 2).reshape(batch * persons, frames, *x.shape[3:]).contiguous()
    return folded, mask.repeat_interleave(persons, dim=0), present


class PooledClassifier(nn.Module):
    """Clip logits from the conv nets' frame features h [B*P, H, T].

    Per person, the mean over valid frames and, with `with_max`, the maximum next to it
    ([.., 2H]); then the mean over the person slots that hold anyone, and a linear layer.
    Empty slots are left out so that a lone actor gives the same logits at P=1 and P=2. The
    maximum keeps what a mean over the whole clip dilutes: a movement that is distinctive but
    brief, or done only in some of the clip's frames.
    """

    def __init__(self, hidden: int, num_classes: int, with_max: bool) -> None:
        super().__init__()
        self.with_max = with_max
        self.fc = nn.Linear(2 * hidden if with_max else hidden, num_classes)

    def pool(self, h: Tensor, mask: Tensor, present: Tensor) -> Tensor:
        per_person = h.sum(-1) / mask.sum(-1, keepdim=True)  # h is zero outside the mask
        if self.with_max:
            peak = h.masked_fill(~mask[:, None, :], float("-inf")).amax(-1)
            per_person = torch.cat([per_person, peak], dim=-1)
        per_person = per_person.view(*present.shape, -1)
        weight = present.to(h.dtype).unsqueeze(-1)
        return (per_person * weight).sum(1) / weight.sum(1).clamp(min=1.0)

    def forward(self, h: Tensor, mask: Tensor, present: Tensor) -> Tensor:
        return self.fc(self.pool(h, mask, present))


def batch_norm_frames(bn: nn.BatchNorm1d, x: Tensor, mask: Tensor) -> Tensor:
    """Normalize each of the V*C joint channels of x [N, T, V, C]; returns [N, V*C, T], masked."""
    h = x.flatten(2).transpose(1, 2)
    return bn(h) * mask[:, None, :]


def graph_input(bn: nn.BatchNorm1d, x: Tensor, mask: Tensor) -> Tensor:
    """x [N, T, V, C] batch-normalized per joint channel, as a graph net takes it: [N, C, T, V]."""
    n, frames, joints, channels = x.shape
    h = batch_norm_frames(bn, x, mask)
    return h.view(n, joints, channels, frames).permute(0, 2, 3, 1)


def stages(channels: int, hidden: int, layers: int) -> list[tuple[int, int, int]]:
    """(in, out, stride) of each block of a graph net: `hidden` wide at first, twice as wide
    and half the frame rate at 40 % and again at 70 % of the depth (blocks 5 and 8 of 10, as
    ST-GCN laid them out), so most blocks see the full frame rate."""
    starts = {i for i in (round(0.4 * layers), round(0.7 * layers)) if 1 <= i < layers}
    out, width = [], hidden
    for i in range(layers):
        stride = 2 if i in starts else 1
        cin, width = (channels if i == 0 else width), width * stride
        out.append((cin, width, stride))
    return out


class MultiScaleTCN(nn.Module):
    """Temporal convs of several reaches side by side (MS-G3D / ST-GCN++ / CTR-GCN style).

    Each branch narrows the channels with a 1x1 conv, then runs a temporal conv of kernel
    `kernel` and its own dilation, or a max-pool over 3 frames, or nothing; the branches' outputs
    are concatenated and mixed by a 1x1 conv. The input is re-masked before every temporal
    operation, so each meets zeros past a clip's end, the same as its padding at the tensor's.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        stride: int,
        kernel: int,
        dilations: tuple[int, ...],
        dropout: float,
    ) -> None:
        super().__init__()
        n = len(dilations) + 2
        widths = [cout // n] * (n - 1)
        widths.insert(0, cout - sum(widths))

        def narrow(width: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, width, 1), nn.BatchNorm2d(width), nn.ReLU())

        self.narrow = nn.ModuleList(narrow(w) for w in widths[:-1])
        self.temporal = nn.ModuleList(
            nn.Conv2d(
                w,
                w,
                (kernel, 1),
                padding=((kernel // 2) * d, 0),
                dilation=(d, 1),
                stride=(stride, 1),
                bias=False,
            )
            for w, d in zip(widths[: len(dilations)], dilations, strict=True)
        )
        self.pool = nn.MaxPool2d((3, 1), stride=(stride, 1), padding=(1, 0))
        self.point = nn.Conv2d(cin, widths[-1], 1, stride=(stride, 1))
        self.mix = nn.Sequential(
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.Dropout(dropout),
        )

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        m = mask[:, None, :, None].to(h.dtype)
        narrowed = [branch(h) * m for branch in self.narrow]
        # Max-pooling non-negative (post-ReLU) values: the zeros past a clip's end never win
        # over the frame at the window's centre, as the pool's own -inf padding never does.
        outs = [conv(y) for conv, y in zip(self.temporal, narrowed[:-1], strict=True)]
        outs += [self.pool(narrowed[-1]), self.point(h)]
        return self.mix(torch.cat(outs, dim=1))


class GraphBlock(nn.Module):
    """One block of a graph net: a graph conv, then a multi-scale temporal conv, each residual.

    `gcn` is the backbone's own graph conv, built by the caller before this block's other
    layers (the order their weights are drawn in) and called as gcn(h, mask); the frames off
    the mask are zeroed between the two convs."""

    def __init__(
        self,
        gcn: nn.Module,
        cin: int,
        cout: int,
        stride: int,
        dropout: float,
        kernel: int,
        dilations: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.stride = stride
        self.gcn = gcn
        self.tcn = MultiScaleTCN(cout, cout, stride, kernel, dilations, dropout)
        self.res: nn.Module = nn.Identity()
        if cin != cout or stride != 1:
            self.res = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=(stride, 1)), nn.BatchNorm2d(cout)
            )

    def forward(self, h: Tensor, mask: Tensor) -> Tensor:
        y = self.gcn(h, mask) * mask[:, None, :, None]
        return torch.relu(self.tcn(y, mask) + self.res(h))


class GraphNet(nn.Module):
    """Blocks of `GraphBlock` (a graph conv and a multi-scale temporal conv, each residual) on
    the COCO-17 graph, then the pooled head. `hidden` is the first blocks' width: it doubles,
    and the frame rate halves, twice (`stages`); the output is re-masked after every block. A
    graph backbone names its `arch`, its `graph_conv` (built as graph_conv(cin, cout, graph),
    called as (h, mask)) and its temporal convs' `kernel` and `dilations`, and inherits the
    rest, so the nets differ only where their papers do."""

    arch: str
    graph_conv: type[nn.Module]
    kernel: int
    dilations: tuple[int, ...]

    @classmethod
    def build(
        cls, cfg: ModelParams, in_channels: int, persons: int, num_classes: int, joints: int
    ) -> GraphNet:
        needs_coco(cls.arch, joints)
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
            GraphBlock(
                self.graph_conv(cin, cout, graph),
                cin,
                cout,
                stride,
                dropout,
                self.kernel,
                self.dilations,
            )
            for cin, cout, stride in plan
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
