"""What every benchmark shares: the mirrored input, measuring a child process, the result rows.

Each measured thing runs in a fresh `python` child (`measure`), so its peak RSS is its own:
the larger of the child's `ru_maxrss` from `os.wait4` (its largest process, memory-mapped file
pages included) and the largest sum of PSS over its process tree seen while it ran (sampled,
so that a pool of workers counts as a whole without counting shared pages twice). The child
times the work itself, after its imports, and sends back a dict of figures as JSON.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CSV = ROOT.parent / "shared" / "realdata" / "ucf101_clips.csv"
RESULTS = ROOT / "bench" / "results"
GB = 1024**3  # sizes print in GiB and MiB
MB = 1024**2

# --quick keeps the first clip of a few groups of every class: one test1 group and three
# train1 groups, so every split (and the group-held-out validation) still has clips.
QUICK_GROUPS = (1, 8, 9, 10)
_NAME = re.compile(r"_g(\d+)_c(\d+)$")


class BenchError(Exception):
    """A benchmark could not run (a failed child, a missing input): the message says why."""


@dataclass
class Check:
    """One target: `value` compared with `limit` (at most, or at least)."""

    label: str
    value: float
    limit: float
    at_most: bool = True
    unit: str = ""

    @property
    def met(self) -> bool:
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    def target(self) -> str:
        return f"{self.label} {'≤' if self.at_most else '≥'} {self.limit:g}{self.unit}"

    def measured(self) -> str:
        return f"{_figure(self.value)}{self.unit}{'' if self.met else ' ✗'}"


@dataclass
class Row:
    """One line of the table. Numbers stay numbers here; `table` formats them."""

    name: str
    wall_s: float | None = None
    rss_bytes: int | None = None
    throughput: float | None = None
    unit: str = "clips/s"
    reference: str = "—"
    ratio: float | None = None
    checks: list[Check] = field(default_factory=list)
    note: str = ""
    skipped: str | None = None

    @property
    def met(self) -> bool | None:
        """All targets met; None when the row has none or was skipped."""
        if self.skipped is not None or not self.checks:
            return None
        return all(c.met for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in vars(self).items() if k != "checks"}
        out["checks"] = [{**vars(c), "met": c.met} for c in self.checks]
        out["met"] = self.met
        return out


@dataclass
class Measurement:
    """What a child reported, plus what the parent saw of it."""

    result: dict[str, Any]
    rss_bytes: int
    process_s: float  # the child's whole life, interpreter start and imports included


@dataclass
class Context:
    """Settings of one `python -m bench` run and the inputs the benchmarks share."""

    csv: Path
    results: Path
    quick: bool = False
    batches: int = 50
    repeat: int = 1
    log: Callable[[str], None] = print
    _mirror: Path | None = None

    def thread_counts(self) -> list[int | None]:
        """Torch threads for the CPU model benchmarks: None = params.yaml's train.threads.

        With more than one, a second pass at 1 thread: on a shared machine whose cores are
        busy, OpenMP's barriers wait on descheduled threads and multi-threaded small-batch
        LSTM steps slow down many times over, so both are worth seeing. --quick takes 1
        thread alone, for a quick and steady smoke run.
        """
        if self.quick:
            return [1]
        threads = load_params("train")["train"].threads or os.cpu_count() or 1
        return [None] if threads == 1 else [None, 1]

    @property
    def work(self) -> Path:
        """Outputs one benchmark leaves for the next (the subset, the shards), per input."""
        return self.results / f"work-{self.mirror_key()}"

    def mirror_key(self) -> str:
        """Changes with the clip list, the generator's code and the mode, not otherwise."""
        digest = hashlib.sha256()
        digest.update(self.csv.read_bytes())
        for module in ("synthetic.py", "synthetic_motion.py"):
            digest.update((ROOT / "pipeline" / "dataset" / module).read_bytes())
        digest.update(b"quick" if self.quick else b"full")
        return digest.hexdigest()[:12]

    def mirror(self) -> Path:
        """The synthetic stand-in mirroring the clip list, generated once and cached."""
        if self._mirror is not None:
            return self._mirror
        key = self.mirror_key()
        path = self.results / f"mirror-{key}.pkl"
        if not path.exists():
            self.results.mkdir(parents=True, exist_ok=True)
            clips = self.csv
            if self.quick:
                clips = self.results / f"mirror-{key}.csv"
                write_quick_csv(self.csv, clips)
            self.log(f"bench: generating the mirror of {count_rows(clips):,} clips -> {path}")
            code = (
                "import sys; from pipeline import synthetic; "
                "synthetic.write(sys.argv[1], mirror=sys.argv[2])"
            )
            run_checked(
                [sys.executable, "-c", code, str(path), str(clips)], "the mirror", env=child_env()
            )
        self._mirror = path
        return path


def count_rows(path: Path) -> int:
    with open(path, newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def write_quick_csv(source: Path, dest: Path) -> None:
    """The rows of `source` that --quick keeps: clip 1 of QUICK_GROUPS of every class."""
    with open(source, newline="") as src, open(dest, "w", newline="") as out:
        reader = csv.DictReader(src)
        writer = csv.DictWriter(out, fieldnames=reader.fieldnames or [])
        writer.writeheader()
        for row in reader:
            found = _NAME.search(row.get("frame_dir") or "")
            if found and int(found[2]) == 1 and int(found[1]) in QUICK_GROUPS:
                writer.writerow(row)


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


# ---- measuring a child process -------------------------------------------------------------


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
        code = "from bench.common import child_main; child_main()"
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


def load_params(*sections: str) -> dict[str, Any]:
    """params.yaml sections as they stand, checked and typed (from the project root, whatever
    the cwd)."""
    from pipeline.core import params

    return params.load(*sections, path=ROOT / "params.yaml")


def folder_bytes(folder: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in folder.glob(pattern) if p.is_file())


def fresh(path: Path) -> Path:
    """Remove `path` so a measured stage writes it from nothing (not timed)."""
    shutil.rmtree(path, ignore_errors=True)
    return path


def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children: steadier than wall time on a
    busy machine, where a child's wall time is mostly waiting for a core."""
    import resource

    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


# ---- the table -----------------------------------------------------------------------------


def _figure(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}" if abs(value) >= 0.1 else f"{value:.3f}"


def _bytes(n: int | None) -> str:
    if n is None:
        return "—"
    return f"{n / GB:.2f} GiB" if n >= GB else f"{n / MB:.0f} MiB"


def table(rows: Sequence[Row]) -> str:
    """The rows as one markdown table (pasteable into the README)."""
    header = [
        "benchmark",
        "wall",
        "peak RSS",
        "throughput",
        "reference (same run)",
        "ratio",
        "target",
        "met",
        "notes",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        if r.skipped is not None:
            cells = [r.name, "—", "—", "—", "—", "—", "—", "skipped", r.skipped]
        else:
            cells = [
                r.name,
                "—" if r.wall_s is None else f"{_figure(r.wall_s)} s",
                _bytes(r.rss_bytes),
                "—" if r.throughput is None else f"{_figure(r.throughput)} {r.unit}",
                r.reference,
                "—" if r.ratio is None else f"{_figure(r.ratio)}x",
                " · ".join(c.target() for c in r.checks) or "—",
                _met(r),
                r.note,
            ]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def _met(row: Row) -> str:
    if row.met is None:
        return "—"
    figures = " · ".join(c.measured() for c in row.checks)
    return f"{'yes' if row.met else 'no'} ({figures})"
