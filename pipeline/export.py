"""Export a trained model: python -m pipeline.export MODEL --format onnx|torchscript --out FILE

The file computes what `evaluate` and `predict` compute from preprocessed clips, with the
input streams, the mirror images and the averaging over views inside (`inference.Classifier`):

  inputs   x        float32 [clips, views, frames, persons, 17, 3]: each clip's test views as
                    the shards store them (data/shards/test-*.npy): x, y and score per COCO-17
                    joint, normalized, zero after the clip's length and for absent persons
           lengths  int64 [clips]: each clip's frames before the zero padding
  output   probabilities  float32 [clips, classes], in the order of the `classes` metadata

`clips` and `views` may be any size; averaging the `views` metadata's number of views gives
exactly evaluate's probabilities. Turning a raw clip into `x` (person choice, normalization,
frame sampling, hidden joints) is the `preprocessing` metadata; `pipeline.predict` does it.

The metadata: `input`, `output`, `frames`, `persons`, `joints` (names),
`channels`, `classes`, `labels` (the pickle's label of each class), `views`, `flip`,
`preprocessing` (the shards params and hidden joints), `model` (its params section), `source`.
ONNX keeps it in the model's metadata_props, each value as JSON text (onnxruntime:
`session.get_modelmeta().custom_metadata_map`), TorchScript as one JSON object in the extra
file metadata.json (`torch.jit.load(FILE, _extra_files={"metadata.json": ""})`). ONNX needs
the `export` extra (`pip install -e ".[export]"`: onnx, onnxscript, onnxruntime).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import torch

from pipeline.core import params, skeleton
from pipeline.core.errors import ArgumentParser, cli, fail
from pipeline.files.atomic import atomic_open, atomic_path, prepare_outputs
from pipeline.learning import evaluated, inference
from pipeline.learning.checkpoint import Checkpoint
from pipeline.models import traceable

FORMATS = ("onnx", "torchscript")
INPUTS = ("x", "lengths")
OUTPUT = "probabilities"
METADATA_FILE = "metadata.json"  # TorchScript's extra file


def contract(ckpt: Checkpoint) -> dict[str, Any]:
    """The input contract, the file's metadata."""
    frames, shards = ckpt.shards.frames, params.plain(ckpt.shards)
    return {
        "input": f"x float32 [clips, views, {frames}, {ckpt.persons}, {ckpt.joints}, "
        f"{len(ckpt.channels)}] (test views as the shards store them); lengths int64 "
        "[clips] (frames before the zero padding)",
        "output": f"{OUTPUT} float32 [clips, {len(ckpt.classes)}]: softmax averaged over the "
        "views" + (" and their mirror images" if ckpt.config.eval.flip else ""),
        "frames": frames,
        "persons": ckpt.persons,
        "joints": list(skeleton.JOINTS),
        "channels": ckpt.channels,
        "classes": ckpt.classes,
        "labels": ckpt.labels,
        "views": ckpt.config.eval.clips,
        "flip": ckpt.config.eval.flip,
        "preprocessing": {**shards, "hidden_joints": ckpt.hidden_joints},
        "model": params.plain(ckpt.config),
        "source": ckpt.source,
    }


def classifier(ckpt: Checkpoint) -> torch.nn.Module:
    model = traceable(ckpt.build_model())
    return inference.Classifier(model, ckpt.config, ckpt.config.eval.flip).eval()


def example(ckpt: Checkpoint) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs to trace with: 2 clips of 2 views (a dimension of size 1 would be fixed)."""
    x = torch.rand(2, 2, ckpt.shards.frames, ckpt.persons, ckpt.joints, len(ckpt.channels))
    return x, torch.tensor([ckpt.shards.frames, max(1, ckpt.shards.frames // 2)])


def to_onnx(ckpt: Checkpoint, out: Path) -> None:
    try:
        import onnxscript  # noqa: F401  (torch's ONNX exporter needs it)
    except ImportError:
        raise fail(
            "--format onnx",
            "needs the export extra: pip install -e '.[export]' (onnx, onnxscript, onnxruntime)",
        ) from None
    clips, views = torch.export.Dim("clips"), torch.export.Dim("views")
    # The exporter reports each step on stdout and logs and warns of what it tried (torchvision
    # ops it skips, say): the command's output is its own one line.
    log = logging.getLogger("torch.onnx")
    level = log.level
    try:
        log.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                classifier(ckpt),
                example(ckpt),
                input_names=list(INPUTS),
                output_names=[OUTPUT],
                dynamo=True,
                dynamic_shapes={"x": {0: clips, 1: views}, "lengths": {0: clips}},
            )
    finally:
        log.setLevel(level)
    program.model.metadata_props.update(
        {key: json.dumps(value) for key, value in contract(ckpt).items()}
    )
    with atomic_path(out) as tmp:
        program.save(str(tmp), external_data=False)


def to_torchscript(ckpt: Checkpoint, out: Path) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # TorchScript's deprecation, the tracer's warnings
        traced = torch.jit.trace(classifier(ckpt), example(ckpt))
        # Saved to memory, then written by Python: torch.jit.save onto a full disk aborts the
        # whole process from C++ (no message, a temporary left), where a write error is one line.
        buffer = io.BytesIO()
        torch.jit.save(traced, buffer, _extra_files={METADATA_FILE: json.dumps(contract(ckpt))})
    with atomic_open(out) as handle:
        handle.write(buffer.getbuffer())


@cli
def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser("pipeline.export")
    parser.add_argument("model", type=Path)
    parser.add_argument("--format", required=True, choices=FORMATS)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.out.resolve() == args.model.resolve():
        raise fail(str(args.out), "--out is the model file itself: choose another name")
    prepare_outputs(files=[args.out])
    section = params.STAGE_SECTION.get(args.model.stem, "model")
    ckpt, _ = evaluated.load(args.model, section)  # the views and flips evaluate used
    (to_onnx if args.format == "onnx" else to_torchscript)(ckpt, args.out)
    print(
        f"export: {args.model} -> {args.out} ({args.format}; {len(ckpt.classes)} classes, "
        f"input x [clips, views, {ckpt.shards.frames}, {ckpt.persons}, {ckpt.joints}, "
        f"{len(ckpt.channels)}] and lengths [clips])"
    )


if __name__ == "__main__":
    main()
