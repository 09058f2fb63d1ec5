"""Training in several processes with torch.distributed (DistributedDataParallel): starting
them, and what one process knows of the others.

`train.nproc: N` makes the train stage start N processes on this machine with
`torch.multiprocessing.spawn`; they meet through a file store in a temporary folder (no port to
pick or collide on). Started by torchrun instead (several machines), a process finds RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE and MASTER_ADDR/MASTER_PORT in its environment and
joins that world itself. Either way the backend is gloo on CPU and nccl on CUDA, one GPU per
process.

A spawned process that fails as the one-process stage would (a PipelineError, or Ctrl-C's
message through `RankExit`) writes its one line to the shared folder and exits with its code;
the parent stops the others and raises the lowest rank's message, so the user sees one line and
exit code 2 (130 for Ctrl-C) whatever the number of processes, and no traceback per process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.multiprocessing.spawn import ProcessException

from pipeline.core.errors import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    STOP_SIGNALS,
    PipelineError,
    fail,
    interruption,
    note_signal,
)

LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")
GRACE_S = 10.0  # how long the other processes get to end by themselves after one failed
STOP_FILE = "stop"  # in the processes' shared folder: Ctrl-C came


class RankExit(Exception):
    """End a spawned process with `code`; the parent prints `message` as the run's last line."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 when alone)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # on this machine: the GPU this process drives
    local_size: int = 1  # processes on this machine, which share its cores
    device: str = "cpu"  # where collectives put their tensors (nccl needs the GPU)

    @property
    def main(self) -> bool:
        """Rank 0: the process that logs and writes every output."""
        return self.rank == 0

    def sum(self, values: Sequence[float]) -> list[float]:
        """Each value summed over the processes."""
        if self.size == 1:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def share(self, total: int) -> tuple[np.ndarray, np.ndarray]:
        """This process's positions in a global batch of `total` clips, and their loss
        weights: consecutive equal parts. A process left without a clip (a last batch smaller
        than the world) takes one at weight 0, so that it still joins the exchange of
        gradients."""
        part = np.array_split(np.arange(total), self.size)[self.rank]
        if len(part):
            return part, np.ones(len(part), np.float32)
        return np.array([self.rank % total]), np.zeros(1, np.float32)

    def batch_loss(
        self,
        losses: torch.Tensor,
        hits: torch.Tensor,
        weight: np.ndarray,
        total: int,
        stop: bool,
    ) -> tuple[torch.Tensor, float, int, bool]:
        """From this process's per-clip losses and hits: the loss to backpropagate, scaled so
        that DDP's mean of the processes' gradients is the gradient of the global batch's mean
        loss; and, over all processes, that mean loss, the clips classified right and whether
        any process was asked to stop."""
        w = torch.from_numpy(weight).to(losses.device)
        mine = (losses * w).sum()
        summed, right, stops = self.sum([mine.item(), float((hits * w).sum()), float(stop)])
        return mine * (self.size / total), summed / total, int(right), stops > 0

    def any(self, flag: bool) -> bool:
        """Whether `flag` is set in any process."""
        return flag if self.size == 1 else self.sum([float(flag)])[0] > 0

    def from_main(self, values: Sequence[float]) -> list[float]:
        """Rank 0's values, on every process."""
        if self.size == 1:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.broadcast(tensor, 0)
        return tensor.tolist()

    def bytes_from_main(self, data: bytes) -> bytes:
        """Rank 0's bytes, on every process (what the others pass is ignored)."""
        if self.size == 1:
            return data
        length = torch.tensor([len(data)], dtype=torch.int64, device=self.device)
        dist.broadcast(length, 0)
        if not length.item():
            return b""
        buffer = (
            torch.frombuffer(bytearray(data), dtype=torch.uint8)
            if self.main
            else torch.empty(int(length.item()), dtype=torch.uint8)
        )
        buffer = buffer.to(self.device)
        dist.broadcast(buffer, 0)
        return buffer.cpu().numpy().tobytes()


SINGLE = World()


def from_environment() -> World | None:
    """The world a launcher such as torchrun set up in the environment, or None."""
    if "WORLD_SIZE" not in os.environ:
        return None
    env = dict(os.environ)
    env.setdefault("RANK", "0")
    env.setdefault("LOCAL_RANK", env["RANK"])
    env.setdefault("LOCAL_WORLD_SIZE", env["WORLD_SIZE"])
    values = {}
    for name in LAUNCHER_ENV:
        try:
            values[name] = int(env[name])
        except ValueError:
            raise fail("environment", f"{name}: expected an integer, found {env[name]!r}") from None
    world = World(*(values[name] for name in LAUNCHER_ENV))
    if not 0 <= world.rank < world.size:
        raise fail(
            "environment",
            f"RANK: expected 0..{world.size - 1} (WORLD_SIZE {world.size}), found {world.rank}",
        )
    return world


def backend(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def rank_device(device: torch.device, world: World) -> torch.device:
    """The device of this process: its own GPU on CUDA."""
    if device.type != "cuda" or world.size == 1:
        return device
    if world.local_rank >= torch.cuda.device_count():
        raise fail(
            "train.nproc",
            f"{world.local_size} processes on this machine need as many "
            f"CUDA devices, found {torch.cuda.device_count()}",
        )
    torch.cuda.set_device(world.local_rank)
    return torch.device("cuda", world.local_rank)


@contextlib.contextmanager
def joined(world: World, device: torch.device, init_method: str = "env://") -> Iterator[World]:
    """`world` with this process's device (its own GPU on CUDA), in its process group for the
    duration (alone, there is none to join)."""
    device = rank_device(device, world)
    world = replace(world, device=str(device))
    if world.size == 1:
        yield world
        return
    dist.init_process_group(
        backend(device), init_method=init_method, rank=world.rank, world_size=world.size
    )
    try:
        yield world
        dist.barrier()  # done: the processes leave the group together, none while rank 0 writes
    finally:
        # A Ctrl-C passed on late must not cut the group's teardown short: a process that
        # exits with its group half destroyed can abort in C++ on its way out.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            dist.destroy_process_group()
        finally:
            signal.signal(signal.SIGINT, previous)


def wrap(model: nn.Module, world: World, device: torch.device) -> nn.Module:
    """The model as DDP trains it: gradients averaged between the processes at each step.

    On CUDA, BatchNorm becomes SyncBatchNorm, so a batch is normalized with the statistics of
    the whole global batch, as one process would. torch implements SyncBatchNorm for GPUs only:
    on CPU each process normalizes its own share, and DDP hands rank 0's running statistics to
    the others at every step."""
    if world.size == 1:
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
    return nn.parallel.DistributedDataParallel(model)


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside DDP's wrapper (its state_dict has no `module.` prefix)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# --- spawning the processes on this machine ------------------------------------------------


def spawn(fn: Callable[..., None], nproc: int, device: torch.device, *args: Any) -> None:
    """Run `fn(world, *args)` in `nproc` new processes joined in one process group; return
    when all have finished. A process's failure becomes this process's: a PipelineError,
    RankExit or KeyboardInterrupt, with the lowest failed rank's message."""
    with tempfile.TemporaryDirectory(prefix="pipeline-ddp-") as folder:
        stop = Path(folder, STOP_FILE)

        def forward(signum: int, frame: object) -> None:
            # Ctrl-C reaches the processes from the terminal; a SIGINT sent to this process
            # alone (by DVC, or kill) must reach them too, to stop them at a clean point. The
            # file tells one still starting up, which ignored the signal.
            note_signal(signum)
            stop.touch()
            for pid in context.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGINT)

        # The processes start with SIGINT ignored (an ignored signal stays ignored in a new
        # process), until _rank_main can turn it into a clean stop: Ctrl-C while they import
        # torch would otherwise print a traceback from each. A Ctrl-C during these few
        # milliseconds of starting them is lost.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        previous_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            context = torch.multiprocessing.spawn(
                _rank_main, (fn, nproc, str(device), folder, args), nprocs=nproc, join=False
            )
            for sig in STOP_SIGNALS:  # SIGTERM stops them the same way, at a clean point
                signal.signal(sig, forward)
            while not context.join(grace_period=GRACE_S):
                pass
        except ProcessException as exc:
            raise _failure(Path(folder), exc) from None
        finally:
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, previous_term)


def _rank_main(
    rank: int,
    fn: Callable[..., None],
    size: int,
    device_name: str,
    folder: str,
    args: tuple[Any, ...],
) -> None:
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # ignored until now (spawn)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if Path(folder, STOP_FILE).exists():  # Ctrl-C came while this process started
            raise KeyboardInterrupt
        with joined(
            World(rank, size, rank, size), torch.device(device_name), f"file://{folder}/store"
        ) as world:
            fn(world, *args)
    except PipelineError as exc:
        _leave(folder, rank, EXIT_BAD_INPUT, str(exc))
    except RankExit as exc:
        _leave(folder, rank, exc.code, exc.message)
    except KeyboardInterrupt:
        raise SystemExit(EXIT_INTERRUPTED) from None


def _leave(folder: str, rank: int, code: int, message: str) -> None:
    Path(folder, f"rank{rank}.json").write_text(json.dumps({"code": code, "message": message}))
    raise SystemExit(code)


def _failure(folder: Path, exc: ProcessException) -> BaseException:
    """What the parent raises for a failed run: the lowest rank's own message when one left
    it (a process stopped because another failed says nothing useful), else what torch says."""
    left = sorted(folder.glob("rank*.json"), key=lambda p: int(p.stem[4:]))
    if left:
        report = json.loads(left[0].read_text())
        if report["code"] == EXIT_BAD_INPUT:
            return PipelineError(report["message"])
        return RankExit(report["code"], report["message"])
    code = getattr(exc, "exit_code", None)
    if code in (EXIT_INTERRUPTED, -signal.SIGINT):
        return interruption()
    if isinstance(code, int) and code < 0:
        name = signal.Signals(-code).name
        return fail("train", f"training process {exc.error_index} was ended by {name}")
    return exc
