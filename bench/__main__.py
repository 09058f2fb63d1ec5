"""`make bench`: every benchmark, one markdown table (also saved to bench/results/bench.md).

Usage: python -m bench [--csv PATH] [--quick] [--only NAME ...] [--batches N] [--repeat N]
                       [--results DIR] [--metrics DIR]

The input is the synthetic generator's mirror of a clip list (default
../shared/realdata/ucf101_clips.csv beside the repo), generated once into the results folder.
Timings on a shared machine are noisy: the load average before and after is printed with the
table. Each benchmark's figures are saved as DVC metrics (bench/metrics/<name>.json, with its
rows' words in <name>.notes.json; a --quick run saves them in its results folder instead), and
`python -m bench.report` writes bench/README.md's tables from them. Exit code 1 if a benchmark
failed to run (not for a missed target).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import ddp, demo, evaluate, extract, gpu, predict, report, shards, sweep, train
from bench.common import load_average
from bench.context import DEFAULT_CSV, RESULTS, Context, count_rows
from bench.measure import BenchError
from bench.report import Row, table

BENCHMARKS: dict[str, Callable[[Context], list[Row]]] = {
    "extract": extract.run,
    "shards": shards.run,
    "train": train.run,
    "evaluate": evaluate.run,
    "predict": predict.run,
    "demo": demo.run,
    "gpu": gpu.run,
    "ddp": ddp.run,
    "sweep": sweep.run,
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--csv",
        type=Path,
        default=DEFAULT_CSV,
        help="clip list to mirror (frame_dir,label,total_frames,persons)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a tiny mirror (clip 1 of 4 groups per class), 2 batches: a smoke run",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=list(BENCHMARKS),
        metavar="NAME",
        help=f"run only these, of {', '.join(BENCHMARKS)}",
    )
    parser.add_argument(
        "--batches",
        type=int,
        default=None,
        help="training batches timed per model (default 50; --quick: 2)",
    )
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs of extract and shards; the fastest is reported"
    )
    parser.add_argument(
        "--metrics",
        type=Path,
        default=None,
        help="where each benchmark's figures are saved (default bench/metrics; --quick: "
        "RESULTS/metrics, so a smoke run never replaces the measured figures)",
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=RESULTS,
        help="cache of the mirror and outputs, and where the table is saved",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[Row]:
    """Run the chosen benchmarks and print the table; return its rows (none if skipped)."""
    args = parse(argv)
    csv = args.csv.resolve()
    if not csv.is_file():
        print(
            f"bench: skipped: the clip list {csv} is not there (it sits beside the repo in "
            "CI; pass --csv PATH to mirror another)"
        )
        return []
    batches = args.batches if args.batches is not None else (2 if args.quick else 50)
    ctx = Context(
        csv=csv,
        results=args.results.resolve(),
        quick=args.quick,
        batches=batches,
        repeat=args.repeat,
    )
    metrics = args.metrics or (ctx.results / "metrics" if args.quick else report.METRICS)
    before = load_average()
    started = time.perf_counter()
    rows: list[Row] = []
    for name in args.only or list(BENCHMARKS):
        print(f"bench: {name} ...", end=" ", flush=True)
        start, load = time.perf_counter(), load_average()
        try:
            mine = BENCHMARKS[name](ctx)
        except BenchError as exc:
            print(f"failed: {exc}", file=sys.stderr)
            mine = [Row(name=name, skipped=f"FAILED: {str(exc).splitlines()[0]}")]
        seconds = time.perf_counter() - start
        print(f"{seconds:.0f} s", flush=True)
        rows.extend(mine)
        figures = {
            "load_before": float(load.split()[0]),
            "load_after": float(load_average().split()[0]),
            "cores": os.cpu_count() or 1,
            "quick": args.quick,
        }
        line = (
            f"`python -m bench{' --quick' if args.quick else ''} --only {name}` on a mirror "
            f"of {csv.name} ({count_rows(csv):,} clips), {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, {time.strftime('%Y-%m-%d', time.gmtime())}; load "
            f"average {load} before, {load_average()} after; {seconds:.0f} s"
        )
        report.save(name, mine, line, figures, metrics)
    header = (
        f"`python -m bench{' --quick' if args.quick else ''}`: mirror of {csv.name}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; load average "
        f"{before} before, {load_average()} after; {time.perf_counter() - started:.0f} s"
    )
    text = f"{header}\n\n{table(rows)}\n"
    print(text)
    ctx.results.mkdir(parents=True, exist_ok=True)
    (ctx.results / "bench.md").write_text(text)
    (ctx.results / "bench.json").write_text(
        json.dumps({"header": header, "rows": [r.as_dict() for r in rows]}, indent=2) + "\n"
    )
    return rows


if __name__ == "__main__":
    results = main()
    sys.exit(1 if any((r.skipped or "").startswith("FAILED") for r in results) else 0)
