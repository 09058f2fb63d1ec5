"""`make demo`: the whole pipeline, offline, in a scratch workspace; ends with the metrics table.

Usage: python -m pipeline.demo DEST [key.sub=value ...]
"""

from __future__ import annotations

import subprocess
import sys
import time

from pipeline import workspace
from pipeline.errors import cli


@cli
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        raise SystemExit(__doc__)
    dest = workspace.create(argv[0], workspace.parse_overrides(argv[1:]))
    print(f"demo: pipeline workspace at {dest}", flush=True)
    start = time.monotonic()
    for command in (["dvc", "repro"], ["dvc", "metrics", "show"]):
        print(f"$ {' '.join(command)}", flush=True)
        if subprocess.run(command, cwd=dest).returncode != 0:
            raise SystemExit(f"demo: `{' '.join(command)}` failed in {dest}")
    print(
        f"demo: done in {time.monotonic() - start:.0f} s; explore it with "
        f"`cd {argv[0]} && dvc plots show` or `dvc exp run -S model.hidden=32`"
    )


if __name__ == "__main__":
    main()
