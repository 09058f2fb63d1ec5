"""Small helpers the benchmarks share: sizes, fresh output folders, the load average."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.report import GB, MB

__all__ = ["GB", "MB", "folder_bytes", "fresh", "load_average", "plural"]


def folder_bytes(folder: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in folder.glob(pattern) if p.is_file())


def fresh(path: Path) -> Path:
    """Remove `path` so a measured stage writes it from nothing (not timed)."""
    shutil.rmtree(path, ignore_errors=True)
    return path


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"
