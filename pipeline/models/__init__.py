"""Clip classifiers, one module per backbone, each registered by name (`registry`).

Every model maps `x` [B, T, P, V, C] (zero-padded after each clip's length) and `lengths` [B] to
logits [B, num_classes]. All of them except the notebook's `pool: padded` LSTM give the same
logits whatever lies after a clip's length, and the same as for the clip cut to its length.
"""

from __future__ import annotations

from torch import nn

from pipeline.core.params import ModelParams
from pipeline.core.skeleton import NUM_JOINTS

# Registering the backbones: one import per module, each module's class carries `@register`.
from pipeline.models import ctrgcn, lstm, stgcn, stgcnpp, tcn  # noqa: F401
from pipeline.models.registry import REGISTRY


def build_model(
    cfg: ModelParams,
    in_channels: int,
    persons: int,
    num_classes: int,
    joints: int = NUM_JOINTS,
) -> nn.Module:
    """The classifier a model section describes (`arch` and its settings under its name, with
    hidden, layers, dropout); the section's values were checked when it was loaded."""
    return REGISTRY[cfg.arch].net.build(cfg, in_channels, persons, num_classes, joints)


def traceable(model: nn.Module) -> nn.Module:
    """`model` in a form torch.onnx and TorchScript can trace, computing the same logits: each
    module with a `traceable` switch (the packed LSTM) turns to its traceable path."""
    for module in model.modules():
        if hasattr(module, "traceable"):
            module.traceable = True
    return model
