"""The backbones by name: each module of `pipeline.models` registers its network class with
the typed settings section it reads (`model.<name>` in params.yaml) and a one-line summary.

A new backbone is one file whose class carries `@register(...)` and a `build` classmethod, one
import line in `pipeline/models/__init__.py`, and its settings in params.yaml: the `arch` rule,
`build_model`, the checks of params.yaml's comments and the model tests all read this registry,
and dvc.yaml's model stages depend on the whole folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from torch import nn

from pipeline.core import params
from pipeline.core.params import ModelParams, Section


class Buildable(Protocol):
    @classmethod
    def build(
        cls, cfg: ModelParams, in_channels: int, persons: int, num_classes: int, joints: int
    ) -> nn.Module: ...


@dataclass(frozen=True)
class Backbone:
    name: str  # the `arch` value, and the key of its settings in a model section
    net: type[Buildable]
    settings: type[Section]
    summary: str  # what params.yaml's `arch` comment says of it


REGISTRY: dict[str, Backbone] = {}
N = TypeVar("N", bound=type)


def register(name: str, settings: type[Section], summary: str) -> Callable[[N], N]:
    """Class decorator: the network `arch: <name>` builds, reading `model.<name>`."""

    def decorate(net: N) -> N:
        if name in REGISTRY:
            raise ValueError(f"backbone {name!r} is registered twice")
        REGISTRY[name] = Backbone(name, net, settings, summary)
        params.BACKBONES[name] = settings
        return net

    return decorate
