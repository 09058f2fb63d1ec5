"""The `plots` stage and the page `dvc plots show` makes of it: square confusion matrices,
named curves, per-class bars and a gallery of skeleton GIFs, drawn offline (in Chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import vl_convert
import yaml
from conftest import (
    REPO,
    call_stage,
    error_line,
    make_dataset,
    run_stages,
    write_params,
    write_pkl,
)
from PIL import Image

from pipeline.core.errors import PipelineError
from pipeline.plots import GALLERY_ERRORS, GALLERY_FRAMES
from pipeline.project import offline_page
from pipeline.viz import plotdata

pytestmark = pytest.mark.slow  # stages in subprocesses or trained workspaces

CLASSES = ["ApplyEyeMakeup", "ApplyLipstick", "Archery"]
PLOT_TITLES = [
    next(iter(plot))
    for plot in yaml.safe_load((REPO / "dvc.yaml").read_text())["plots"]
    if isinstance(plot, dict)
]
assert len(PLOT_TITLES) == 7, PLOT_TITLES  # the checks below loop over them


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every stage run once on tiny data, in this process (a few seconds)."""
    work = tmp_path_factory.mktemp("plots")
    write_pkl(make_dataset(labels=(0, 1, 2), groups=range(1, 9)), work / "data/raw/ucf101_2d.pkl")
    write_params(
        work,
        {
            "data.classes": [0, 1, 2],
            "shards.frames": 8,
            "shards.test_views": 2,
            "shards.workers": 1,
            "model.eval.clips": 2,
            "baseline.epochs": 2,
            "model.epochs": 2,
            "baseline.hidden": 8,
            "model.hidden": 8,
        },
    )
    stages = [
        ("extract",),
        ("shards",),
        ("train", "baseline"),
        ("train", "improved"),
        ("evaluate", "baseline"),
        ("evaluate", "improved"),
        ("plots",),
    ]
    run_stages(work, *stages)
    return work


def test_confusion_matrices_are_square_with_counts_and_shares(work: Path) -> None:
    for name in ("baseline", "improved"):
        table = pd.read_csv(work / f"metrics/plots/confusion_{name}.csv")
        predictions = pd.read_csv(work / f"metrics/{name}/predictions.csv")
        assert list(table[["actual", "predicted"]].itertuples(index=False, name=None)) == [
            (a, p) for a in CLASSES for p in CLASSES
        ]
        pairs = predictions.groupby(["actual", "predicted"]).size()
        for row in table.itertuples():
            assert row.count == pairs.get((row.actual, row.predicted), 0)
        shares = table.groupby("actual")["share"].sum()
        assert np.allclose(shares, 1, atol=1e-3)


def test_a_class_never_predicted_keeps_its_row_and_column() -> None:
    predictions = pd.DataFrame(
        {
            "actual": ["a", "a", "b", "c", "c", "c"],
            "predicted": ["a", "a", "a", "c", "a", "c"],  # nothing is predicted b
        }
    )
    table = plotdata.square_confusion(predictions, ["a", "b", "c"], "baseline")
    matrix = table.pivot(index="actual", columns="predicted", values="count")
    assert matrix.shape == (3, 3)
    assert matrix.to_numpy().tolist() == [[2, 0, 0], [1, 0, 0], [1, 0, 2]]
    share = table.set_index(["actual", "predicted"])["share"]
    assert share[("c", "c")] == pytest.approx(2 / 3, abs=1e-4) and share[("b", "a")] == 1.0


def test_a_prediction_of_an_unknown_class_is_refused() -> None:
    predictions = pd.DataFrame({"actual": ["a"], "predicted": ["z"]})
    with pytest.raises(PipelineError, match=r"column 'predicted', row 1: 'z' is not a class"):
        plotdata.square_confusion(predictions, ["a", "b"], "improved")


def test_curves_and_bars_name_models_and_splits(work: Path) -> None:
    curves = pd.read_csv(work / "metrics/plots/curves.csv")
    series = curves.groupby(["model", "split"])["epoch"].apply(list).to_dict()
    assert series == {
        (m, s): [1, 2] for m in ("baseline", "improved") for s in ("train", "validation")
    }
    assert curves[["loss", "accuracy"]].notna().all().all()
    bars = pd.read_csv(work / "metrics/plots/per_class.csv")
    assert list(bars["class"]) == [c for c in CLASSES for _ in range(2)]
    assert list(bars["model"]) == ["baseline", "improved"] * len(CLASSES)
    report = pd.read_csv(work / "metrics/improved/per_class.csv").set_index("class")
    improved = bars[bars["model"] == "improved"].set_index("class")
    assert np.allclose(improved["f1"], report.loc[CLASSES, "f1-score"])


def test_the_gallery_holds_the_top_errors_and_a_correct_clip_per_class(work: Path) -> None:
    predictions = pd.read_csv(work / "metrics/improved/predictions.csv")
    wrong = predictions[predictions["actual"] != predictions["predicted"]]
    top = wrong.sort_values("confidence", ascending=False, kind="stable").head(GALLERY_ERRORS)
    right = predictions[predictions["actual"] == predictions["predicted"]]
    gallery = work / "metrics/gallery"
    names = sorted(p.name for p in gallery.iterdir())
    expected = [f"error{k}_{clip}.gif" for k, clip in enumerate(top["frame_dir"], start=1)]
    best = right.sort_values("confidence", ascending=False, kind="stable").drop_duplicates("actual")
    expected += [f"right_{clip}.gif" for clip in best["frame_dir"]]
    assert names == sorted(expected) and names
    lengths = pd.read_csv(work / "data/subset/index.csv").set_index("frame_dir")["frames"]
    for path in gallery.iterdir():
        clip = re.sub(r"^(error\d+|right)_", "", path.stem)
        with Image.open(path) as gif:
            assert gif.n_frames == min(GALLERY_FRAMES, lengths[clip]), path.name


def damage_predictions(work: Path) -> None:
    path = work / "metrics/improved/predictions.csv"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.loc[0, "actual"] = "Lipstick"
    table.to_csv(path, index=False)


def damage_per_class(work: Path) -> None:
    path = work / "metrics/baseline/per_class.csv"
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    table.loc[1, "f1-score"] = "high"
    table.to_csv(path, index=False)


def drop_gallery_clips(work: Path) -> None:
    """The subset no longer holds the test clips the gallery draws (renamed in its index)."""
    path = work / "data/subset/index.csv"
    path.write_text(re.sub(r"_g0([12])_", r"_g9\1_", path.read_text()))  # the test groups


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (
            damage_predictions,
            "error: metrics/improved/predictions.csv: column 'actual', row 1: "
            "'Lipstick' is not a class of the shards' manifest; run `dvc repro -f -s "
            "evaluate@improved` to rebuild it",
        ),
        (
            damage_per_class,
            "error: metrics/baseline/per_class.csv: column 'f1-score', row 2: "
            "expected a number, found 'high'; run `dvc repro -f -s evaluate@baseline`",
        ),
        (drop_gallery_clips, "error: data/subset: no clip named 'v_"),
    ],
)
def test_a_failure_keeps_every_previous_output(
    work: Path, tmp_path: Path, damage: object, expected: str
) -> None:
    copy = tmp_path / "w"
    shutil.copytree(work, copy)
    damage(copy)
    before = {p: p.read_bytes() for p in (copy / "metrics").rglob("*") if p.is_file()}
    line = error_line(call_stage("plots", copy))
    assert line.startswith(expected), line
    after = {p: p.read_bytes() for p in (copy / "metrics").rglob("*") if p.is_file()}
    assert after == before  # the tables and the gallery of the last run, whole


# --- the page ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page(work: Path) -> Path:
    """`dvc plots show` in the workspace made a DVC repository with the project's plots."""
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=work, check=True)
    shutil.copy2(REPO / "dvc.yaml", work / "dvc.yaml")
    shutil.copytree(REPO / ".dvc" / "plots", work / ".dvc" / "plots")
    offline_page.install(work)
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "plots", "show"], cwd=work, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return work / "dvc_plots" / "index.html"


def test_the_page_needs_no_network_and_holds_every_plot(page: Path) -> None:
    html = page.read_text()
    assert not re.search(r"<script[^>]+src=", html)  # nothing loaded: Vega is inlined
    assert "window.vegaEmbed=" in html.replace(" ", "")
    for title in PLOT_TITLES:
        assert title in html, title
    gifs = list((page.parent / "static").glob("*.gif"))
    assert len(gifs) == len(list((page.parents[1] / "metrics/gallery").iterdir()))


def test_every_plot_of_the_page_compiles_and_draws(page: Path) -> None:
    """Each filled template renders to SVG in vl-convert's own Vega (no browser needed): a
    template Vega-Lite cannot compile leaves its plot blank on the page."""
    specs = re.findall(r"var spec = (\{.*?\});\n", page.read_text(), re.DOTALL)
    assert len(specs) == len(PLOT_TITLES)
    for text in specs:
        spec = json.loads(text)
        svg = vl_convert.vegalite_to_svg(spec, vl_version=offline_page.VEGA_LITE)
        assert svg.count("<path") > 5, spec["title"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--virtual-time-budget=10000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)")
def test_the_page_draws_offline_in_a_browser(page: Path, tmp_path: Path) -> None:
    """Every Vega plot drew an SVG chart (a failed one leaves its div empty), every GIF is
    an image, and the screenshot is not blank. Chromium has no network here either way."""
    charts = re.findall(r'<div id = "([^"]+)">\s*<script', page.read_text())  # one per plot
    assert len(charts) == len(PLOT_TITLES)
    dom = chromium("--dump-dom", page.as_uri()).stdout
    drawn = {}  # vegaEmbed replaced each div's script with the chart (or an error)
    for part in re.split(r'<div id="', dom)[1:]:
        name, _, body = part.partition('"')
        drawn.setdefault(name, body)
    for chart in charts:
        assert re.search(r'<svg[^>]+class="marks"', drawn.get(chart, "")), chart
    assert dom.count('<img src="static/') == len(list((page.parent / "static").glob("*.gif")))
    shot = tmp_path / "page.png"
    chromium("--window-size=1400,1500", f"--screenshot={shot}", page.as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # charts, text, skeletons


def test_a_class_bar_of_f1_zero_is_drawn_as_zero() -> None:
    """A model with F1 0 on a class has a bar of no length: the value beside each bar tells
    0 from missing data."""
    rows = [
        {"class": "Archery", "model": "baseline", "f1": 0.0, "support": 3, "rev": "workspace"},
        {"class": "Archery", "model": "improved", "f1": 0.75, "support": 3, "rev": "workspace"},
    ]
    text = (REPO / ".dvc" / "plots" / "class_bars.json").read_text()
    text = text.replace('"<DVC_METRIC_DATA>"', json.dumps(rows))
    for placeholder, value in {
        "<DVC_METRIC_TITLE>": "Per-class F1",
        "<DVC_METRIC_X>": "f1",
        "<DVC_METRIC_Y>": "class",
        "<DVC_METRIC_X_LABEL>": "F1",
        "<DVC_METRIC_Y_LABEL>": "class",
    }.items():
        text = text.replace(placeholder, value)
    svg = vl_convert.vegalite_to_svg(json.loads(text), vl_version=offline_page.VEGA_LITE)
    labels = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert "0.00" in labels and "0.75" in labels, labels
