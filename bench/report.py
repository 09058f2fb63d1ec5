"""How benchmarks report: result rows with their targets, the markdown table, and the figures
as DVC metrics (bench/metrics/<benchmark>.json, numbers only, so that `dvc metrics diff` shows
every speed change between two commits) beside the words of each row
(bench/metrics/<benchmark>.notes.json), from which bench/README.md's tables are generated.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GB = 1024**3  # sizes print in GiB and MiB
MB = 1024**2


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
    # more figures saved as metrics (not in the table: its notes say them in words)
    extra: dict[str, float] = field(default_factory=dict)

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


# ---- figures as DVC metrics, and the README's tables generated from them -------------------

ROOT = Path(__file__).resolve().parents[1]
METRICS = ROOT / "bench" / "metrics"  # committed: `dvc metrics diff` compares them (bench/dvc.yaml)
README = ROOT / "bench" / "README.md"
_BLOCK = re.compile(r"(<!-- bench: ([a-z_ ]+) -->\n)(.*?)(<!-- /bench -->)", re.S)


def slug(name: str) -> str:
    """A row's or check's name as a metric key: 'train improved (CPU, 2 threads)' ->
    'train_improved_cpu_2_threads'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def figures(row: Row) -> dict[str, Any]:
    """A row's numbers (and whether its targets were met) under stable keys."""
    out: dict[str, Any] = {}
    if row.skipped is not None:
        return {"skipped": True}
    for key, value in (
        ("wall_s", row.wall_s),
        ("rss_mib", None if row.rss_bytes is None else row.rss_bytes / MB),
        ("throughput", row.throughput),
        ("ratio", row.ratio),
    ):
        if value is not None:
            out[key] = round(float(value), 6)
    for check in row.checks:
        out[slug(check.label)] = round(float(check.value), 6)
    for label, value in row.extra.items():
        out[slug(label)] = round(float(value), 6)
    if row.met is not None:
        out["met"] = row.met
    return out


def save(
    benchmark: str, rows: Sequence[Row], header: str, load: Mapping[str, float], folder: Path
) -> None:
    """bench/metrics/<benchmark>.json (numbers: what DVC compares) and .notes.json (each row
    whole, the run's header line: what the README's tables are made of)."""
    folder.mkdir(parents=True, exist_ok=True)
    numbers = {"run": dict(load), **{slug(r.name): figures(r) for r in rows}}
    notes = {"header": header, "rows": [r.as_dict() for r in rows]}
    for name, content in ((f"{benchmark}.json", numbers), (f"{benchmark}.notes.json", notes)):
        (folder / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n")


def load_rows(benchmark: str, folder: Path) -> tuple[str, list[Row]] | None:
    """The header and rows `save` wrote for `benchmark`, or None if it never ran."""
    path = folder / f"{benchmark}.notes.json"
    if not path.exists():
        return None
    notes = json.loads(path.read_text())
    rows = []
    for raw in notes["rows"]:
        fields = {k: v for k, v in raw.items() if k not in ("checks", "met")}
        checks = [Check(**{k: v for k, v in c.items() if k != "met"}) for c in raw["checks"]]
        rows.append(Row(**fields, checks=checks))
    return notes["header"], rows


def tables(text: str, folder: Path = METRICS) -> str:
    """`text` with every block between `<!-- bench: NAME ... -->` and `<!-- /bench -->`
    regenerated from the saved rows of those benchmarks: which run measured them, the table."""

    def block(match: re.Match[str]) -> str:
        runs: dict[str, list[str]] = {}  # the line saying how they were measured -> benchmarks
        rows: list[Row] = []
        for benchmark in match[2].split():
            saved = load_rows(benchmark, folder)
            header, mine = saved if saved is not None else ("not measured yet (`make bench`)", [])
            runs.setdefault(header, []).append(f"`{benchmark}`")
            rows.extend(mine)
        lines = [f"- {', '.join(names)}: {header}" for header, names in runs.items()]
        body = "\n".join(lines) + "\n\n" + (table(rows) + "\n" if rows else "")
        return match[1] + body + match[4]

    return _BLOCK.sub(block, text)


def main(argv: Sequence[str] | None = None) -> int:
    """python -m bench.report [--check]: regenerate bench/README.md's tables from
    bench/metrics/ (--check: exit 1 if the README's tables differ from them)."""
    args = list(sys.argv[1:] if argv is None else argv)
    text = README.read_text()
    new = tables(text)
    if "--check" in args:
        if new != text:
            print("bench/README.md: its tables differ from bench/metrics/ (python -m bench.report)")
            return 1
        return 0
    README.write_text(new)
    print(f"bench.report: {README.name} tables regenerated from {METRICS.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
