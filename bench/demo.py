"""Benchmark 5: `make demo` end to end, then a no-op `dvc repro` in the demo's workspace.

Runs `python -m pipeline.demo <tmpdir> <DEMO_PARAMS>` (the overrides read from the Makefile, so
this follows it) with this venv's `dvc` on PATH, as `make demo` does once installed, then
`dvc repro` again in that workspace, which must run no stage. Peak RSS is the largest of the
demo's process tree (dvc and the stages it runs). --quick adds overrides that shrink the data
and the epochs. Targets: demo <= 3 minutes on 2 cores; no-op repro <= 3 s.
"""

from __future__ import annotations

import re
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from bench.context import Context
from bench.measure import ROOT, BenchError, run_measured
from bench.report import Check, Row

DEMO_LIMIT_S, NOOP_LIMIT_S = 180.0, 3.0
QUICK = [
    "data.classes=[0,1]",
    "synthetic.clips_per_group=[1,1]",
    "synthetic.frames=[20,40]",
    "shards.frames=8",
    "baseline.epochs=1",
    "baseline.hidden=4",
    "model.epochs=1",
    "model.hidden=4",
    "train.threads=1",
]


def demo_params(makefile: Path = ROOT / "Makefile") -> list[str]:
    """The `DEMO_PARAMS ?= ...` overrides of the Makefile, split as the shell would."""
    found = re.search(r"^DEMO_PARAMS\s*[?:]?=(.*)$", makefile.read_text(), re.MULTILINE)
    if found is None:
        raise BenchError(f"{makefile}: no DEMO_PARAMS line")
    return shlex.split(found[1])


def _ran(output: str) -> list[str]:
    """The stages a dvc command ran (it prints "Running stage 'name':" for each)."""
    return re.findall(r"^Running stage '([^']+)'", output, re.MULTILINE)


def run(ctx: Context) -> list[Row]:
    overrides = demo_params() + (QUICK if ctx.quick else [])
    dest = Path(tempfile.mkdtemp(prefix="bench-demo-")) / "demo"
    try:
        status, output, seconds, rss = run_measured(
            [sys.executable, "-m", "pipeline.demo", str(dest), *overrides]
        )
        if status != 0:
            tail = "\n".join(output.strip().splitlines()[-15:])
            raise BenchError(f"the demo failed (exit {status}):\n{tail}")
        stages = len(_ran(output))
        status, again, noop_s, noop_rss = run_measured(["dvc", "repro"], cwd=dest)
        if status != 0:
            raise BenchError(f"no-op dvc repro failed (exit {status}):\n{again.strip()}")
        rerun = _ran(again)
    finally:
        shutil.rmtree(dest.parent, ignore_errors=True)
    shown = " ".join(overrides)
    return [
        Row(
            name="make demo",
            wall_s=seconds,
            rss_bytes=rss,
            checks=[Check("wall", seconds, DEMO_LIMIT_S, unit=" s")],
            note=f"{stages} stages; python -m pipeline.demo DIR {shown}",
        ),
        Row(
            name="no-op dvc repro",
            wall_s=noop_s,
            rss_bytes=noop_rss,
            checks=[
                Check("wall", noop_s, NOOP_LIMIT_S, unit=" s"),
                Check("stages rerun", len(rerun), 0),
            ],
            note="in the demo's workspace" + (f"; reran {', '.join(rerun)}" if rerun else ""),
        ),
    ]
