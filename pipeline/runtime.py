"""Device, threads and seeding: the environment a model runs in, chosen from params."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from pipeline.errors import fail
from pipeline.params import PARAMS_FILE


def resolve_device(name: str) -> torch.device:
    """`auto` takes CUDA when present; asking for `cuda` without one is an error, not a fallback."""
    if name == "cuda" and not torch.cuda.is_available():
        raise fail(
            PARAMS_FILE,
            "train.device: cuda was asked for, but no CUDA device is available (use auto or cpu)",
        )
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def setup(train: Mapping[str, Any]) -> torch.device:
    """Apply train.threads and train.seed; return the device to use."""
    device = resolve_device(train["device"])
    torch.set_num_threads(train["threads"] or os.cpu_count() or 1)
    seed_everything(train["seed"])
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
