"""The settings of one `python -m bench` run and the inputs its benchmarks share: the clip
list, the synthetic mirror of it (generated once and cached in the results folder) and the
folder where one benchmark leaves outputs for the next.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import ROOT, child_env, run_checked

DEFAULT_CSV = ROOT.parent / "shared" / "realdata" / "ucf101_clips.csv"
RESULTS = ROOT / "bench" / "results"

# --quick keeps the first clip of a few groups of every class: one test1 group and three
# train1 groups, so every split (and the group-held-out validation) still has clips.
QUICK_GROUPS = (1, 8, 9, 10)
_NAME = re.compile(r"_g(\d+)_c(\d+)$")


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
                "import sys; from pipeline.dataset import synthetic; "
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


def load_params(*sections: str) -> dict[str, Any]:
    """params.yaml sections as they stand, checked and typed (from the project root, whatever
    the cwd)."""
    from pipeline.core import params

    return params.load(*sections, path=ROOT / "params.yaml")
