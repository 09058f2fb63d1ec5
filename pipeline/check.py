"""Stage `check`: every key of params.yaml is one the pipeline knows.

Usage: python -m pipeline.check

Each stage checks the params it reads, but DVC runs a stage only when a param it lists changes:
a key no stage lists (a typo added with `dvc exp run -S +model.hiden=64`) would change nothing,
and the experiment would be recorded without a word. This stage depends on the whole file, so
any change runs it (in well under a second of work), and an unknown key stops the run with one
line naming the nearest known key.

It also checks the `fusion` section: dvc.yaml makes a stage of each stream `fusion.streams` lists
(`foreach`), so a stream named twice or unknown there is stopped here with one line, rather than
by DVC or by the stream stages themselves.
"""

from __future__ import annotations

import sys

from pipeline.core import params
from pipeline.core.errors import cli, fail


@cli
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv:
        raise fail("usage", "python -m pipeline.check (no arguments; see --help)")
    values = params.read()
    problem = params.unknown_key(values)
    if problem is not None:
        raise fail(params.PARAMS_FILE, problem)
    if "fusion" in values:
        params.parse("fusion", values["fusion"], params.PARAMS_FILE)
    print(f"check: every key of {params.PARAMS_FILE} is known")


if __name__ == "__main__":
    main()
