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


# More threads (or training processes) than cores take turns on them, and only slow torch
# down; each thread also reserves its stack, so 1024 of them can exhaust an address-space
# limit (ulimit -v) and abort in libgomp with no message. Up to this many per core are allowed
# (a params.yaml from a larger machine still runs, a little slower); more are refused.
PER_CORE = 4


def cores() -> int:
    """The cores this process may run on (its affinity, as taskset and containers set it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def check_threads(train_cfg: TrainParams, where: str = PARAMS_FILE) -> None:
    """train.threads within PER_CORE per core of this machine; else a one-line error."""
    n = cores()
    if train_cfg.threads > PER_CORE * n:
        raise fail(
            where,
            f"train.threads: expected 0 (every core) to {PER_CORE * n} ({PER_CORE} per core of "
            f"the {n} this process may use), found {train_cfg.threads}",
        )


def check_processes(nproc: int, device: torch.device, where: str = PARAMS_FILE) -> str | None:
    """train.nproc on CPU: refused beyond PER_CORE per core; a warning (returned) beyond one."""
    n = cores()
    if device.type != "cpu" or nproc <= n:
        return None
    if nproc > PER_CORE * n:
        raise fail(
            where,
            f"train.nproc: expected at most {PER_CORE * n} processes on CPU ({PER_CORE} per core "
            f"of the {n} this process may use), found {nproc}",
        )
    return (
        f"warning: {where}: train.nproc: {nproc} processes share the {n} cores this process "
        f"may use; training takes turns on them, slower than with at most {n}"
    )


def setup(train_cfg: TrainParams, processes: int = 1, where: str = PARAMS_FILE) -> torch.device:
    """Apply train.threads and train.seed, flush denormal floats to zero; return the device.

    The threads are shared by the `processes` training processes of this machine (at least
    one each), so that N processes do not ask the cores for N times as many threads.

    Flushing denormals (magnitudes below ~1e-38) spares x86 CPUs their slow path; doing it
    here, for every stage, makes validation in training and the evaluate stage compute alike.
    `where` names the source of train_cfg (params.yaml, or a model file) in messages.
    It is a flag of the CPU thread: numpy's arithmetic in this thread flushes them too."""
    device = resolve_device(train_cfg.device)
    check_threads(train_cfg, where)
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
