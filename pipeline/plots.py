"""Stage `plots`: what `dvc plots show` draws, from both models' results.

Writes metrics/plots/ (drawn by the templates in .dvc/plots/, listed in dvc.yaml's `plots`):
- confusion_<name>.csv: every (actual, predicted) pair of classes with its count of test clips
  and its share of the true class's clips, so both matrices are square with every class on
  both axes, also a class that is never predicted;
- curves.csv: loss and accuracy per epoch of both models on train and validation, named by
  model and split;
- per_class.csv: recall and F1 of every class for both models, side by side;
and metrics/gallery/: the improved model on test clips, as GIFs of their skeletons with the
true and predicted class: its most confident errors (error<k>_<clip>.gif) and, for each class,
its most confident correct clip (right_<clip>.gif). (The GIFs go to DVC's cache, the small
tables to git.)
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.core.errors import cli
from pipeline.core.paths import METRICS_DIR, SHARDS_DIR, SUBSET_DIR
from pipeline.dataset.manifest import Manifest
from pipeline.files.atomic import atomic_dir, prepare_outputs
from pipeline.viz import plotdata
from pipeline.viz.drawing import draw_clip, save_gif
from pipeline.viz.showcase import (
    best_correct_per_class,
    caption,
    file_name,
    most_confident_errors,
    subset_clips,
)

PLOTS_DIR = METRICS_DIR / "plots"
GALLERY_DIR = METRICS_DIR / "gallery"
MODELS = ["baseline", "improved"]  # the two evaluate stages of dvc.yaml
# The gallery stays small whatever the data: a few errors, the first classes' correct clips,
# few frames, small images (a GIF of 16 frames 200 pixels wide is some 10-20 kB).
GALLERY_ERRORS = 4
GALLERY_CLASSES = 12
GALLERY_FRAMES = 16
GALLERY_WIDTH = 200
GALLERY_FPS = 8


def write_gallery(folder: Path, predictions: pd.DataFrame, classes: list[str]) -> list[str]:
    """GIFs of the most confident errors and of one correct clip per class; their names."""
    chosen = [
        (f"error{k}_", row.frame_dir)
        for k, row in enumerate(
            most_confident_errors(predictions, GALLERY_ERRORS).itertuples(), start=1
        )
    ]
    right = best_correct_per_class(predictions, classes[:GALLERY_CLASSES])
    chosen += [("right_", name) for name in right["frame_dir"]]
    clips = subset_clips(SUBSET_DIR, [name for _, name in chosen])
    written = []
    for (prefix, _), clip in zip(chosen, clips, strict=True):
        frames = draw_clip(
            clip.keypoint,
            clip.score,
            clip.img_shape,
            caption(clip, predictions),
            width=GALLERY_WIDTH,
            frames=GALLERY_FRAMES,
        )
        written.append(file_name(clip.name, prefix))
        save_gif(frames, folder / written[-1], GALLERY_FPS)
    return written


@cli
def main() -> None:
    prepare_outputs(folders=[PLOTS_DIR, GALLERY_DIR])
    classes = Manifest.read(SHARDS_DIR).classes
    predictions = {name: plotdata.read_predictions(name) for name in MODELS}
    # Both folders are complete before either replaces the old one: a failure while drawing
    # the gallery leaves the old tables too.
    with atomic_dir(PLOTS_DIR) as tables, atomic_dir(GALLERY_DIR) as pictures:
        for name, table in predictions.items():
            confusion = plotdata.square_confusion(table, classes, name)
            confusion.to_csv(tables / f"confusion_{name}.csv", index=False)
        plotdata.curves(MODELS).round(6).to_csv(tables / "curves.csv", index=False)
        per_class = plotdata.per_class(MODELS, classes).round(6)
        per_class.to_csv(tables / "per_class.csv", index=False)
        gallery = write_gallery(pictures, predictions["improved"], classes)
    errors = sum(name.startswith("error") for name in gallery)
    print(
        f"plots: square confusion matrices of {len(classes)} classes, curves, per-class "
        f"scores; a gallery of {errors} errors and {len(gallery) - errors} correct clips "
        f"in {GALLERY_DIR}"
    )


if __name__ == "__main__":
    main()
