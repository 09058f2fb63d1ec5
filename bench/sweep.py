"""Benchmark 8: a sweep of 4 improved experiments through `dvc queue`, at -j 1 and -j 2.

In a workspace of its own (`pipeline.project.workspace`: the demo's params, with SIZE making
training outweigh DVC's own work), after `dvc repro` and a commit, the README's recipe:
`dvc exp run --queue -S train.threads=T -S model.hidden=32,64 -S model.layers=2,4`, then
`dvc queue start -j J`, timed until the last experiment's processes are gone (watched in /proc:
polling `dvc queue status` would take a core of its own) and confirmed by `dvc queue status`.
Three sweeps: -j 1 with every core's threads; -j 2 with half each (the README's recipe); -j 2
with every core's threads each (oversubscribed: what the recipe avoids). Every experiment also
retrains the baseline (`train.threads` is in `train`, which both models read), as a user's
sweep does. --quick skips it (minutes). No target: the times are for the record.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import plural
from bench.context import Context
from bench.demo import demo_params
from bench.measure import BenchError, child_env, run_checked
from bench.report import Row

SIZE = ["model.epochs=10", "baseline.epochs=10"]
SWEEP = ["-S", "model.hidden=32,64", "-S", "model.layers=2,4"]
LIMIT_S = 1800.0


def _dvc(dest: Path, *args: str) -> str:
    done = run_checked(
        [sys.executable, "-m", "dvc", *args], f"dvc {' '.join(args)}", cwd=dest, env=child_env()
    )
    return done.stdout + done.stderr


def _busy(dest: Path) -> bool:
    """Whether a process runs in one of the queue's temporary workspaces."""
    exps = str(dest / ".dvc" / "tmp" / "exps")
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if os.readlink(f"/proc/{entry.name}/cwd").startswith(exps):
                    return True
            except OSError:
                continue
    return False


def _finished(status: str, names: list[str]) -> bool:
    return all(re.search(rf"\b{n}\b.*\b(Success|Failed)\b", status) for n in names)


def _sweep(dest: Path, jobs: int, threads: int) -> tuple[float, list[str], str]:
    """Queue the sweep, run it with `jobs` workers; (seconds, names, final queue status)."""
    queued = _dvc(dest, "exp", "run", "--queue", "-S", f"train.threads={threads}", *SWEEP)
    names = re.findall(r"Queued experiment '([^']+)'", queued)
    if len(names) != 4:
        raise BenchError(f"expected 4 experiments queued, found {names}:\n{queued}")
    start = time.perf_counter()
    # Not through a pipe: the workers it leaves running would hold it open to the end.
    subprocess.run(
        [sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)],
        cwd=dest,
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    last_busy = start
    while True:
        time.sleep(0.2)
        now = time.perf_counter()
        if now - start > LIMIT_S:
            _dvc(dest, "queue", "stop", "--kill")
            raise BenchError(f"the sweep at -j {jobs} ran past {LIMIT_S:.0f} s")
        if _busy(dest):
            last_busy = now
        elif now - last_busy > 2.0:  # quiet for a while: between two experiments, or done
            status = _dvc(dest, "queue", "status")
            if _finished(status, names):
                return last_busy - start, names, status
            last_busy = time.perf_counter()


def run(ctx: Context) -> list[Row]:
    name = "sweep of 4 improved experiments"
    if ctx.quick:
        return [Row(name=name, skipped="--quick: a sweep through dvc queue takes minutes")]
    from pipeline.project import workspace

    cores = os.cpu_count() or 1
    configs = [(1, cores), (2, max(1, cores // 2)), (2, cores)]
    dest = Path(tempfile.mkdtemp(prefix="bench-sweep-")) / "ws"
    try:
        workspace.create(dest, workspace.parse_overrides(demo_params() + SIZE))
        _dvc(dest, "repro")
        workspace.commit(dest, "bench: the sweep's starting point")
        timed = {config: _sweep(dest, *config) for config in configs}
    finally:
        shutil.rmtree(dest.parent, ignore_errors=True)
    first = timed[configs[0]][0]
    rows = []
    for index, ((jobs, threads), (seconds, names, status)) in enumerate(timed.items()):
        ok = sum(bool(re.search(rf"\b{n}\b.*\bSuccess\b", status)) for n in names)
        if ok != len(names):
            raise BenchError(
                f"-j {jobs}: {len(names) - ok} of {len(names)} experiments failed:\n{status}"
            )
        each = "" if jobs == 1 else " each"
        rows.append(
            Row(
                name=f"{name}, -j {jobs}, {plural(threads, 'thread')}{each}",
                wall_s=seconds,
                throughput=60 * len(names) / seconds,
                unit="exp/min",
                reference=f"-j 1: {first:.0f} s" if index else "—",
                ratio=first / seconds if index else None,
                note=f"dvc exp run --queue -S train.threads={threads} {' '.join(SWEEP)}; "
                f"dvc queue start -j {jobs}; {', '.join(SIZE)} on the demo's data"
                + ("; ratio = -j 1 time / this" if index else ""),
            )
        )
    return rows
