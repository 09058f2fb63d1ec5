"""A quick check that the hot paths have not slowed down: each timed at small scale as a ratio
to a plain reference measured in the same run, against the ratio recorded in
bench/regression.json.

Usage: python -m bench.regress [--record [NAME ...]]

Ratios, not times: this machine is shared, and a busy core slows a hot path and its reference
alike. CPU time (not wall time) of the fastest of 15 interleaved runs, so a descheduled
moment costs neither. A ratio more than 50 % above its recorded bound fails. `--record`
measures (each path's least of ROUNDS rounds) and writes the bounds (on a quiet machine, after
a deliberate change of speed); `--record shards` writes that hot path's bound alone and keeps
the others as recorded. `make test` runs the check (tests/test_regress.py), a few seconds in
all, in a process of its own.

The allocator is pinned before timing (`steady_allocator`): how often a hot path's temporaries
come back as fresh, page-faulting memory is glibc's choice (its mmap threshold moves with what
the process freed before, and `MALLOC_*` variables fix it), and it moved the shards ratio from
11 to 20 on one machine, more than any busy core did. A hot path over its bound is measured
again (up to ROUNDS rounds, its least ratio kept): a moment of contention passes, a slower
path stays over in every round.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import pickle
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.context import load_params

BOUNDS = Path(__file__).resolve().parent / "regression.json"
SLACK = 1.5  # a ratio may exceed its recorded bound by 50 % before the check fails
REPEAT = 15  # 5 gave the shards ratio 8.7-12.8 beside a busy core, 15 gave 8.3-9.6
ROUNDS = 4  # a hot path over its bound is timed again, up to this many rounds in all

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


@dataclass(frozen=True)
class HotPath:
    """`run` and its `reference`, each a callable of no arguments, ready to time."""

    name: str
    what: str
    run: Callable[[], Any]
    reference: Callable[[], Any]


def cpu_best(func: Callable[[], Any], other: Callable[[], Any]) -> tuple[float, float]:
    """The least CPU seconds of REPEAT calls of `func` and of `other`, interleaved."""
    best = [float("inf"), float("inf")]
    for _ in range(REPEAT):
        for k, f in enumerate((func, other)):
            start = time.process_time()
            f()
            best[k] = min(best[k], time.process_time() - start)
    return best[0], best[1]


def _shards() -> HotPath:
    """The shards stage's whole-batch pass over 48 test clips of 10 views and 192 train clips,
    against copying arrays of the size it writes."""
    import numpy as np

    from pipeline.dataset import preprocess
    from pipeline.dataset.subset import Clips

    cfg = load_params("shards")["shards"]
    rng = np.random.default_rng(0)

    def batch(count: int) -> Clips:
        persons = rng.integers(1, 4, count)
        frames = rng.integers(40, 300, count)
        rows = int((persons * frames).sum())
        return Clips(
            keypoint=(rng.normal(160, 50, (rows, 17, 2))).astype(np.float16),
            score=rng.random((rows, 17)).astype(np.float16),
            start=np.cumsum(persons * frames) - persons * frames,
            persons=persons,
            frames=frames,
            img_hw=np.tile([240, 320], (count, 1)),
        )

    test, train = batch(48), batch(192)
    built = [preprocess.build_clips(test, cfg, 10)[0], preprocess.build_clips(train, cfg, 1)[0]]
    copies = [np.empty_like(b) for b in built]

    def run() -> None:
        preprocess.build_clips(test, cfg, 10, [1, 2])
        preprocess.build_clips(train, cfg, 1, [1, 2])

    def reference() -> None:
        for src, dst in zip(built, copies, strict=True):
            np.copyto(dst, src)

    return HotPath("shards", "build_clips vs a numpy copy of its output", run, reference)


def _features() -> HotPath:
    """A training batch's augmentation and streams (the improved model's), against copying
    the input tensor it is built from 9 times (once per channel it makes)."""
    import torch

    from pipeline.learning.inference import to_input

    cfg = load_params("model")["model"]
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 64, 2, 17, 3, generator=gen)
    x[x.abs() < 0.3] = 0.0
    lengths = torch.randint(20, 65, (32,), generator=gen)
    x, lengths = x.numpy(), lengths.numpy()
    cpu = torch.device("cpu")

    def run() -> None:
        to_input(x, lengths, cfg, cpu, cfg.augment, torch.Generator().manual_seed(1))

    source = torch.from_numpy(x)

    def reference() -> None:
        for _ in range(9):
            source.clone()

    return HotPath(
        "features", "to_input (augment + streams) vs 9 copies of its input", run, reference
    )


def _extract(folder: Path) -> HotPath:
    """The restricted reader of the extract stage against a bare pickle.load of the same file."""
    from pipeline.dataset import synthetic
    from pipeline.files import pklio

    path = folder / "small.pkl"
    synthetic.write(path, labels=[0, 1, 2], clips_per_group=(1, 1), frames=(40, 120))

    def reference() -> None:
        with open(path, "rb") as handle:
            pickle.load(handle, encoding="latin1")

    return HotPath(
        "extract",
        "pklio.load_pickle vs pickle.load of the same file",
        lambda: pklio.load_pickle(path),
        reference,
    )


def steady_allocator() -> bool:
    """Have glibc's malloc serve every block from its heap and never give the heap back, so
    that memory freed by one timed call is reused, not faulted in afresh, by the next, whatever
    the process did before and whatever `MALLOC_*` says. False where there is no glibc."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


def hot_paths(folder: Path) -> list[HotPath]:
    """Every hot path, its inputs made (under `folder`) and each run once, so that first-call
    costs (imports, allocations) are not timed. Pins the process's allocator and torch's
    threads first."""
    import torch

    steady_allocator()
    torch.set_num_threads(1)
    paths = [_shards(), _features(), _extract(folder)]
    for path in paths:
        path.run()
        path.reference()
    return paths


def ratios(paths: list[HotPath]) -> dict[str, float]:
    out = {}
    for path in paths:
        run, reference = cpu_best(path.run, path.reference)
        out[path.name] = run / max(reference, 1e-9)
    return out


def least(
    paths: list[HotPath], measure: Callable[[list[HotPath]], dict[str, float]] = ratios
) -> dict[str, float]:
    """Each hot path's least ratio of ROUNDS rounds: what a recording writes."""
    best = measure(paths)
    for _ in range(ROUNDS - 1):
        again = measure(paths)
        best = {name: min(ratio, again[name]) for name, ratio in best.items()}
    return best


def settled(
    paths: list[HotPath],
    bounds: dict[str, Any],
    measure: Callable[[list[HotPath]], dict[str, float]] = ratios,
) -> dict[str, float]:
    """Each hot path's ratio; one over its bound is timed again, up to ROUNDS rounds in all,
    and its least ratio kept."""
    best = measure(paths)
    for _ in range(ROUNDS - 1):
        over = [p for p in paths if p.name in bounds and check({p.name: best[p.name]}, bounds)]
        if not over:
            break
        for name, ratio in measure(over).items():
            best[name] = min(best[name], ratio)
    return best


def check(measured: dict[str, float], bounds: dict[str, Any]) -> list[str]:
    """One line per hot path over SLACK times its bound (or without a bound)."""
    faults = []
    for name, ratio in measured.items():
        if name not in bounds:
            faults.append(
                f"{name}: no recorded bound in {BOUNDS.name} (python -m bench.regress --record)"
            )
        elif ratio > SLACK * bounds[name]["ratio"]:
            faults.append(
                f"{name}: {bounds[name]['what']}: ratio {ratio:.2f}, more than {SLACK:g} x its "
                f"recorded {bounds[name]['ratio']:.2f}"
            )
    return faults


def record(paths: list[HotPath], measured: dict[str, float], names: list[str]) -> None:
    """Write the bounds of the hot paths `names` as measured; keep the others' as recorded.
    Each bound says when and at what load it was measured."""
    from bench.common import load_average

    bounds = json.loads(BOUNDS.read_text()) if BOUNDS.exists() else {}
    if set(names) >= {p.name for p in paths}:
        bounds = {}  # all recorded anew: none keeps the date and load of an earlier recording
    when = {"load_average": load_average(), "date": time.strftime("%Y-%m-%d")}
    for path in paths:
        if path.name in names:
            bounds[path.name] = {
                "what": path.what,
                "ratio": round(measured[path.name], 3),
                "recorded": when,
            }
    BOUNDS.write_text(json.dumps(bounds, indent=2) + "\n")
    print(f"bench.regress: bounds of {', '.join(names)} recorded in {BOUNDS}")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    bounds = json.loads(BOUNDS.read_text()) if BOUNDS.exists() else {}
    recording = "--record" in args
    with tempfile.TemporaryDirectory(prefix="bench-regress-") as tmp:
        paths = hot_paths(Path(tmp))
        measured = least(paths) if recording else settled(paths, bounds)
    if recording:
        names = [a for a in args if a != "--record"]
        unknown = sorted(set(names) - {p.name for p in paths})
        if unknown:
            print(f"bench.regress: no hot path named {', '.join(unknown)}", file=sys.stderr)
            return 2
        record(paths, measured, names or [p.name for p in paths])
    bounds = json.loads(BOUNDS.read_text())
    for name, ratio in measured.items():
        print(f"{name}: ratio {ratio:.2f} (bound {bounds.get(name, {}).get('ratio', '?')})")
    faults = check(measured, bounds)
    for line in faults:
        print(f"slower: {line}", file=sys.stderr)
    return 1 if faults else 0


if __name__ == "__main__":
    sys.exit(main())
