"""Make `dvc plots show` draw offline: a page template with Vega inlined, and DVC set to use it.

Usage: python -m pipeline.plots_page [REPO]

DVC's own page loads Vega, Vega-Lite and vega-embed from a CDN, so on a machine without network
(`make demo` runs offline) it is blank. This writes REPO/.dvc/plots.html (REPO: the current
folder by default), a page template holding those libraries as vl-convert-python ships them
(one script, about 900 kB, that needs nothing else), and points DVC at it in the repository's
committed config (`dvc config plots.html_template plots.html`, in .dvc/config). Both are
committed, so every clone draws offline by every route (`dvc repro`, `dvc exp run`, `dvc plots
show`, `dvc plots diff`), not only `make demo`; run it again after upgrading vl-convert-python.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipeline.core.errors import fail
from pipeline.files.atomic import write_text

TEMPLATE = "plots.html"  # in .dvc/, where DVC resolves a relative plots.html_template
VEGA_LITE = "5.21"  # the newest 5.x: DVC's templates and ours are Vega-Lite 5 specs

# DVC fills {plot_divs} with a div per plot (each calling vegaEmbed) and {refresh_tag} for
# `--open` live pages; {scripts}, where DVC puts its CDN links, is left out on purpose. The
# bundle runs in a function of its own so its top-level names cannot clash with a plot's.
PAGE = """<!DOCTYPE html>
<!-- made by python -m pipeline.plots_page: VERSIONS -->
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC plots</title>
    <script>(function () {
BUNDLE
})();</script>
    <style>
        body { font-family: sans-serif; }
        table { border-spacing: 15px; }
        /* DVC gives each image a full-width box: side by side they read as a gallery */
        div[id$="_gif"], div[id$="_png"] {
            display: inline-block !important; vertical-align: top; border: none !important;
            margin: 4px; font-size: 11px; }
        div[id$="_gif"] p, div[id$="_png"] p { margin: 2px; }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def page() -> str:
    """The template's text: DVC's placeholders, and the Vega libraries inlined."""
    try:
        import vl_convert
    except ImportError:
        raise fail(
            "vl_convert",
            "not installed: `pip install vl-convert-python` (or `make install`) "
            "brings the Vega libraries an offline page needs",
        ) from None
    versions = (
        f"vega {vl_convert.get_vega_version()}, vega-lite {VEGA_LITE}, vega-embed "
        f"{vl_convert.get_vega_embed_version()}, from vl-convert-python"
    )
    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE)
    if "</script" in bundle.lower():  # it would end the <script> element early
        raise fail("vl_convert", "its JavaScript bundle contains '</script'; cannot inline it")
    return PAGE.replace("VERSIONS", versions).replace("BUNDLE", bundle)


def install(repo: Path) -> Path:
    """Write the template into repo/.dvc/ and set it as the repository's page for DVC, in the
    config that git carries (commit both)."""
    dvc_dir = repo / ".dvc"
    if not dvc_dir.is_dir():
        raise fail(str(repo), "not a DVC repository (no .dvc folder): run this at its root")
    target = dvc_dir / TEMPLATE
    write_text(target, page())
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "config", "plots.html_template", TEMPLATE],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    if done.returncode:
        reason = " ".join((done.stderr or done.stdout).split())
        raise fail(str(repo), f"`dvc config plots.html_template` failed: {reason}")
    return target
