"""`make demo`: the whole pipeline, offline, on synthetic data, in a workspace of its own.

Usage: python -m pipeline.demo DEST [key.sub=value ...]

DEST becomes a git + DVC repository holding a copy of the pipeline, with params.yaml's values
overridden by the key=value pairs; its synthetic pickle is generated and tracked, `dvc repro`
runs every stage, the result is committed (so `dvc metrics diff`, `dvc exp show` and queued
experiments start from a locked HEAD), `dvc metrics show` prints the table and `dvc plots show`
writes DEST/dvc_plots/index.html: curves, confusion matrices and a gallery of skeleton GIFs,
drawn offline.

Run again on the same DEST, it keeps everything there (params, experiments, results), brings
the pipeline's code up to date and reruns only what changed. A DEST that exists and was not
made by this command is refused, never deleted.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from pipeline.core.errors import cli, fail
from pipeline.project import workspace


@cli
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0].startswith("-"):
        raise fail("usage", "python -m pipeline.demo DEST [key.sub=value ...] (see --help)")
    dest, overrides = Path(argv[0]), workspace.parse_overrides(argv[1:])
    start = time.monotonic()
    if workspace.is_workspace(dest):
        print(f"demo: reusing the workspace at {dest} (its params and experiments are kept)")
        workspace.copy_code(dest)
    else:
        workspace.create(dest, overrides)
        print(f"demo: new pipeline workspace at {dest}", flush=True)
    for command in (("dvc", "repro"), ("dvc", "metrics", "show"), ("dvc", "plots", "show")):
        print(f"$ {' '.join(command)}", flush=True)
        workspace.run_tool(dest, *command)
        if command[1] == "repro" and workspace.commit(dest, "demo: pipeline run"):
            print("demo: committed the run (dvc.lock, metrics)", flush=True)
    print(
        f"demo: done in {time.monotonic() - start:.0f} s; open {dest / 'dvc_plots' / 'index.html'}"
        f" in a browser (curves, confusion matrices, a gallery of skeletons), or explore with "
        f"`cd {dest} && dvc exp run -S model.hidden=32`"
        " (with the venv's tools on PATH: `source .venv/bin/activate`)"
    )


if __name__ == "__main__":
    main()
