"""The COCO-17 skeleton as the graph nets take it: adjacency matrices split into partitions."""

from __future__ import annotations

import torch
from torch import Tensor

from pipeline.core.skeleton import BONES, NUM_JOINTS, PARENTS


def _depths() -> Tensor:
    """Each joint's hops from the root (the nose) along the skeleton tree."""
    depth = [0] * NUM_JOINTS
    for joint, parent in enumerate(PARENTS):  # parents precede their children
        depth[joint] = 0 if joint == parent else depth[parent] + 1
    return torch.tensor(depth)


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
    d = _depths()
    source, target = d[:, None], d[None, :]
    return torch.stack(
        [
            normalized * (source == target),
            normalized * (source < target),
            normalized * (source > target),
        ]
    )


def coco_directed() -> Tensor:
    """[3, V, V]: the identity, the edges towards the root and those away from it, each
    normalized so a joint's output is the mean of its inputs in that partition (PYSKL's
    `spatial` layout). Entry [k, v, w] weighs joint v's features in joint w's output.

    Unlike `coco_partitions`, a joint keeps its own features at full weight, however many
    neighbours it has: the self partition is not shrunk by the degree.
    """
    inward = torch.zeros(NUM_JOINTS, NUM_JOINTS)  # child -> parent
    for child, parent in BONES:
        inward[child, parent] = 1.0
    outward = inward.T.clone()

    def mean_of_inputs(a: Tensor) -> Tensor:
        count = a.sum(0, keepdim=True)  # inputs of each output joint
        return a / count.clamp(min=1.0)

    return torch.stack([torch.eye(NUM_JOINTS), mean_of_inputs(inward), mean_of_inputs(outward)])
