"""Measuring a benchmark in a child process: its time, CPU and peak memory.

Each measured thing runs in a fresh `python` child (`measure`), so its peak RSS is its own:
the larger of the child's `ru_maxrss` from `os.wait4` (its largest process, memory-mapped file
pages included) and the largest sum of PSS over its process tree seen while it ran (sampled,
so that a pool of workers counts as a whole without counting shared pages twice). The child
times the work itself, after its imports, and sends back a dict of figures as JSON.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.context import Context

ROOT = Path(__file__).resolve().parents[1]


class BenchError(Exception):
    """A benchmark could not run (a failed child, a missing input): the message says why."""


@dataclass
class Measurement:
    """What a child reported, plus what the parent saw of it."""

    result: dict[str, Any]
    rss_bytes: int
    process_s: float  # the child's whole life, interpreter start and imports included


def run_checked(command: Sequence[str], what: str, **kwargs: Any) -> subprocess.CompletedProcess:
    done = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise BenchError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return done


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: this checkout importable, this venv's tools (dvc) on PATH."""
    from pipeline.project import workspace

    env = workspace.tool_env(importable=ROOT)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def _tree(root: int) -> list[int]:
    """`root` and every process below it, from the parent links in /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        # the command name (field 2) may hold spaces; the parent id follows its closing paren
        parent = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _pss_bytes(pid: int) -> int:
    """Proportional set size: shared pages (forked workers, one mapped file) split between users."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class _TreeSampler(threading.Thread):
    """Polls the summed PSS of a process tree until stopped; keeps the largest sum seen."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            pids = _tree(self.pid)
            # a sum over one process says nothing ru_maxrss does not; skip the page-table walk
            if len(pids) > 1:
                self.peak = max(self.peak, sum(_pss_bytes(p) for p in pids))
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak


def run_measured(
    args: Sequence[str], cwd: Path | None = None, timeout: float = 1800
) -> tuple[int, str, float, int]:
    """Run a command; return its exit code, output, seconds and peak RSS (bytes, see above)."""
    with tempfile.TemporaryFile("w+") as sink:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(args), cwd=cwd or ROOT, env=child_env(), stdout=sink, stderr=subprocess.STDOUT
        )
        sampler = _TreeSampler(proc.pid)
        sampler.start()
        try:
            # wait4, not proc.wait: it returns this child's own rusage (ru_maxrss), which
            # RUSAGE_CHILDREN would mix with every earlier child of this process
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() - start > timeout:
                    proc.kill()
                    pid, status, usage = os.wait4(proc.pid, 0)
                    break
                time.sleep(0.02)
        finally:
            tree_peak = sampler.stop()
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        sink.seek(0)
        output = sink.read()
    if seconds > timeout:
        raise BenchError(f"{' '.join(args)} ran past {timeout:.0f} s")
    # ru_maxrss is in KiB on Linux
    return proc.returncode, output, seconds, max(usage.ru_maxrss * 1024, tree_peak)


def measure(
    target: str,
    kwargs: Mapping[str, Any] | None = None,
    cwd: Path | None = None,
    timeout: float = 1800,
) -> Measurement:
    """Run `module:function(**kwargs)` in a fresh interpreter; its return value is `result`."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out = Path(tmp) / "result.json"
        code = "from bench.measure import child_main; child_main()"
        args = [sys.executable, "-c", code, target, json.dumps(dict(kwargs or {})), str(out)]
        status, output, seconds, rss = run_measured(args, cwd, timeout)
        if status != 0 or not out.exists():
            tail = "\n".join(output.strip().splitlines()[-15:])
            raise BenchError(f"{target} failed (exit {status}):\n{tail}")
        result = json.loads(out.read_text())
    return Measurement(result, rss, seconds)


def measure_best(
    ctx: Context,
    target: str,
    kwargs: Mapping[str, Any] | None = None,
    key: str = "seconds",
    cwd: Path | None = None,
    prepare: Callable[[], None] | None = None,
) -> Measurement:
    """`measure` ctx.repeat times: the fastest run's figures, the largest peak RSS of all."""
    best: Measurement | None = None
    peak = 0
    for _ in range(max(1, ctx.repeat)):
        if prepare is not None:
            prepare()
        got = measure(target, kwargs, cwd)
        peak = max(peak, got.rss_bytes)
        if best is None or got.result[key] < best.result[key]:
            best = got
    assert best is not None
    best.rss_bytes = peak
    return best


def child_main() -> None:
    """Entry point of a measured child: argv = target, JSON kwargs, result path."""
    target, kwargs, out = sys.argv[1], json.loads(sys.argv[2]), Path(sys.argv[3])
    module, _, name = target.partition(":")
    result = getattr(importlib.import_module(module), name)(**kwargs)
    out.write_text(json.dumps(result))


class Stopwatch:
    """Adds up the time spent inside wrapped callables (for the data-handling share)."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, func: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start

        return timed

    def iterate(self, iterable: Any) -> Iterator[Any]:
        """Yield from `iterable`, counting the time each `next` takes."""
        it = iter(iterable)
        while True:
            start = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                self.seconds += time.perf_counter() - start
                return
            self.seconds += time.perf_counter() - start
            yield item


def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children: steadier than wall time on a
    busy machine, where a child's wall time is mostly waiting for a core."""
    import resource

    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
