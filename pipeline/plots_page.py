"""Make `dvc plots show` draw offline: a page template with Vega inlined, and DVC set to use it.

Usage: python -m pipeline.plots_page [REPO] (the page itself: pipeline.project.offline_page)
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipeline.core.errors import cli, fail
from pipeline.project.offline_page import install


@cli
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 1:
        raise fail("usage", "python -m pipeline.plots_page [REPO] (see --help)")
    target = install(Path(argv[0] if argv else "."))
    print(f"plots_page: {target} set as the page of `dvc plots show`, which now draws offline")


if __name__ == "__main__":
    main()
