"""Clip classifiers: the notebook's LSTM, a temporal conv net and a small ST-GCN.

Every model maps `x` [B, T, P, V, C] (zero-padded after each clip's length) and `lengths` [B] to
logits [B, num_classes]. All of them except the notebook's `pool: padded` LSTM give the same
logits whatever lies after a clip's length, and the same as for the clip cut to its length.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from pipeline.core.errors import fail
from pipeline.core.params import PARAMS_FILE, ModelParams
from pipeline.core.skeleton import BONES, NUM_JOINTS, PARENTS

KERNEL = 9  # temporal kernel of both conv nets, as in ST-GCN


def build_model(
    cfg: ModelParams,
    in_channels: int,
    persons: int,
    num_classes: int,
    joints: int = NUM_JOINTS,
) -> nn.Module:
    """The classifier a model section describes (arch, hidden, layers, dropout, pool,
    frame_pool); the section's values were checked when it was loaded."""
    with_max = cfg.frame_pool == "mean_max"
    if cfg.arch == "lstm":
        size = persons * joints * in_channels
        packed = cfg.pool == "packed"
        return SkeletonLSTM(size, num_classes, cfg.hidden, cfg.layers, cfg.dropout, packed)
    if cfg.arch == "tcn":
        return TCN(joints * in_channels, num_classes, cfg.hidden, cfg.layers, cfg.dropout, with_max)
    if joints != NUM_JOINTS:  # stgcn
        raise fail(
            PARAMS_FILE, f"arch: stgcn needs the {NUM_JOINTS}-joint COCO graph, got {joints}"
        )
    return STGCN(in_channels, num_classes, cfg.hidden, cfg.layers, cfg.dropout, with_max)


class SkeletonLSTM(nn.Module):
    """The notebook's LSTM over flattened frames, classifying the last layer's final state.

    `packed` runs each clip only up to its length, so the state used is the one at its true
    last frame; otherwise the padding is fed through too, exactly as the notebook did.
    Attribute names match the notebook's, so its weights load as they are.
    """

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
        seq = x.flatten(2)  # [B, T, P*V*C]
        if self.packed and self.traceable:
            out, _ = self.lstm(seq)  # [B, T, hidden]: the last layer's state after each frame
            last = (lengths.to(out.device) - 1).clamp(min=0)
            return self.fc(out[torch.arange(out.shape[0], device=out.device), last])
        if self.packed:
            seq = pack_padded_sequence(seq, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h_n, _) = self.lstm(seq)  # with a packed input h_n comes back in batch order
        return self.fc(h_n[-1])


def traceable(model: nn.Module) -> nn.Module:
    """`model` in a form torch.onnx and TorchScript can trace, computing the same logits: a
    packed LSTM runs the padded sequence and takes each clip's output at its last frame. (An
    LSTM reads frames in order, so the padding after a clip never reaches that output.)"""
    for module in model.modules():
        if isinstance(module, SkeletonLSTM):
            module.traceable = True
    return model


def _fold_persons(x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Zero the padding and move persons into the batch.

    Returns x [B*P, T, V, C], the valid-frame mask [B*P, T] and which person slots hold
    anyone [B, P].
    """
    batch, frames, persons = x.shape[:3]
    mask = torch.arange(frames, device=x.device)[None, :] < lengths.to(x.device)[:, None]
    x = x * mask[:, :, None, None, None]
    present = (x != 0).transpose(1, 2).flatten(2).any(-1)
    folded = x.transpose(1, 2).reshape(batch * persons, frames, *x.shape[3:])
    return folded, mask.repeat_interleave(persons, dim=0), present


class _PooledClassifier(nn.Module):
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


def _batch_norm_frames(bn: nn.BatchNorm1d, x: Tensor, mask: Tensor) -> Tensor:
    """Normalize each of the V*C joint channels of x [N, T, V, C]; returns [N, V*C, T], masked."""
    h = x.flatten(2).transpose(1, 2)
    return bn(h) * mask[:, None, :]


class _TemporalBlock(nn.Module):
    def __init__(self, cin: int, cout: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, KERNEL, padding="same", dilation=dilation, bias=False)
        self.bn = nn.BatchNorm1d(cout)
        self.drop = nn.Dropout(dropout)
        self.res = nn.Identity() if cin == cout else nn.Conv1d(cin, cout, 1)

    def forward(self, h: Tensor) -> Tensor:
        return self.drop(torch.relu(self.bn(self.conv(h)))) + self.res(h)


class TCN(nn.Module):
    """Residual 1-D convolutions over time, the V*C joint channels of each person as input.

    Dilation cycles 1, 2, 4, 8 so a few layers see most of a 64-frame clip at full resolution.
    The output is re-masked after every block, so each conv meets zeros past a clip's end, the
    same as its own zero padding at the end of the tensor.
    """

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
        self.head = _PooledClassifier(hidden, num_classes, with_max)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        x, mask, present = _fold_persons(x, lengths)
        h = _batch_norm_frames(self.data_bn, x, mask)
        for block in self.blocks:
            h = block(h) * mask[:, None, :]
        return self.head(h, mask, present)


def coco_partitions() -> Tensor:
    """[3, V, V] COCO-17 graph, split by ST-GCN's spatial strategy around the root (the nose).

    The symmetric-normalized adjacency with self loops, D^-1/2 (A + I) D^-1/2, divided into the
    joint itself, neighbours nearer the root and neighbours farther from it; entry [k, v, w]
    weighs joint v's features in joint w's output.
    """
    adjacency = torch.eye(NUM_JOINTS)
    for child, parent in BONES:
        adjacency[child, parent] = adjacency[parent, child] = 1.0
    scale = adjacency.sum(1).rsqrt()
    normalized = scale[:, None] * adjacency * scale[None, :]
    depth = [0] * NUM_JOINTS
    for joint, parent in enumerate(PARENTS):  # parents precede their children
        depth[joint] = 0 if joint == parent else depth[parent] + 1
    d = torch.tensor(depth)
    source, target = d[:, None], d[None, :]
    return torch.stack(
        [
            normalized * (source == target),
            normalized * (source < target),
            normalized * (source > target),
        ]
    )


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


class STGCN(nn.Module):
    """A small ST-GCN on the COCO-17 graph with learnable edge importance.

    Every block after the first halves the frame rate (stride 2), which keeps deeper nets cheap
    on CPU; the valid-frame mask is subsampled alongside.
    """

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
        self.head = _PooledClassifier(hidden, num_classes, with_max)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        x, mask, present = _fold_persons(x, lengths)
        n, frames, joints, channels = x.shape
        h = _batch_norm_frames(self.data_bn, x, mask)
        h = h.view(n, joints, channels, frames).permute(0, 2, 3, 1)  # [N, C, T, V]
        for block, importance in zip(self.blocks, self.importance, strict=True):
            h = block(h, self.graph * importance, mask)
            mask = mask[:, :: block.stride]
            h = h * mask[:, None, :, None]
        return self.head(h.mean(-1), mask, present)
