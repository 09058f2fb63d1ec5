"""Device, threads, float mode and seeding: the environment a model runs in, chosen from params.

Every stage that runs a model calls `setup` first, so training (with its validation) and
evaluation compute in the same mode."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from pipeline.core.errors import fail
from pipeline.core.params import PARAMS_FILE, TrainParams


def resolve_device(name: str, where: str = f"{PARAMS_FILE}: train.device") -> torch.device:
    """`auto` takes CUDA when present; asking for `cuda` without one is an error, not a fallback
    (`where` names what asked, in the message)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise fail(where, "cuda was asked for, but no CUDA device is available (use auto or cpu)")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def setup(train_cfg: TrainParams, processes: int = 1) -> torch.device:
    """Apply train.threads and train.seed, flush denormal floats to zero; return the device.

    The threads are shared by the `processes` training processes of this machine (at least
    one each), so that N processes do not ask the cores for N times as many threads.

    Flushing denormals (magnitudes below ~1e-38) spares x86 CPUs their slow path; doing it
    here, for every stage, makes validation in training and the evaluate stage compute alike.
    It is a flag of the CPU thread: numpy's arithmetic in this thread flushes them too."""
    device = resolve_device(train_cfg.device)
    torch.set_num_threads(max(1, (train_cfg.threads or os.cpu_count() or 1) // processes))
    torch.set_flush_denormal(True)
    seed_everything(train_cfg.seed)
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'' if threads == 1 else 's'})"
