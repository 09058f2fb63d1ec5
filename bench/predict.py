"""Benchmark: inference on CPU, torch against ONNX Runtime, for both models.

A freshly initialised model of each params section (speed does not depend on the weights), with
101 classes and the section's test-time views and flips, is exported to ONNX by
`pipeline.export`; both run the same clips (synthetic, 100 frames long, preprocessed as
`predict` does) at batch 1 (single-clip latency) and batch 64 (8 with --quick). Each figure is
the median of timed calls after two warm-up calls; the batch-1 row also gives the latency of
`Predictor.predict` on one raw clip, preprocessing included.
Anchor: PYSKL reports 13.8 clips/s for ST-GCN on a laptop CPU at 100 frames.
There is no target; the figures are for the record.
"""

from __future__ import annotations

import itertools
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from bench import train as bench_train
from bench.common import plural
from bench.context import Context, load_params
from bench.measure import BenchError, measure
from bench.report import Row
from pipeline.core.params import STAGE_SECTION

BATCHES = (1, 64)
QUICK_BATCHES = (1, 8)  # --quick: a smoke run, where 64 clips of 10 views take seconds a call
CLASSES = 101
FRAMES = 100  # raw clip length, as the PYSKL anchor's


def timed(call: Callable[[], Any], budget: float, least: int) -> float:
    """Median seconds of one call: two warm-up calls, then at least `least` calls and until
    `budget` seconds have gone."""
    call(), call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < least or time.perf_counter() - start < budget:
        begin = time.perf_counter()
        call()
        times.append(time.perf_counter() - begin)
    return statistics.median(times)


def child_predict(
    sections: list[str], threads: int | None, batches: list[int], budget: float, least: int
) -> dict[str, dict[str, Any]]:
    """Each section's figures, by section, measured one after the other in this process."""
    return {
        section: predict_section(section, threads, batches, budget, least) for section in sections
    }


def predict_section(
    section: str, threads: int | None, batches: list[int], budget: float, least: int
) -> dict[str, Any]:
    import dataclasses

    import numpy as np
    import onnxruntime as ort
    import torch

    from pipeline import export
    from pipeline.dataset import preprocess, synthetic
    from pipeline.files import clipfiles
    from pipeline.learning import features, inference
    from pipeline.learning.checkpoint import Checkpoint
    from pipeline.models import build_model
    from pipeline.predict import Predictor

    cfg, train, _ = bench_train.setup(section, threads=threads)
    shards = load_params("shards")["shards"]
    in_channels = features.in_channels(cfg.streams, cfg.score)
    model = build_model(cfg, in_channels, shards.persons, CLASSES)
    ckpt = Checkpoint(
        weights=model.state_dict(),
        config=cfg,
        train=train,
        shards=shards,
        hidden_joints=[],
        classes=[f"class{i}" for i in range(CLASSES)],
        labels=list(range(CLASSES)),
        channels=list(preprocess.CHANNELS),
        in_channels=in_channels,
        persons=shards.persons,
        joints=17,
        epochs_run=0,
        selected_epoch=0,
        val_acc=0.0,
        val_loss=0.0,
        device="cpu",
    )
    predictor = Predictor(ckpt, "cpu")
    data = synthetic.generate(clips_per_group=(1, 1), frames=(FRAMES, FRAMES), labels=[0, 1, 2])
    clips = [
        clipfiles.Clip(a["frame_dir"], a["keypoint"], a["keypoint_score"], a["img_shape"])
        for a in data["annotations"]
        if len(a["keypoint"])
    ][: max(batches)]
    done = [predictor.preprocess(clip) for clip in clips]
    x = np.stack([views[: predictor.views] for views, _ in done])
    lengths = np.array([n for _, n in done])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        export.to_onnx(dataclasses.replace(ckpt, source=section), tmp + "/model.onnx")
        exported = time.perf_counter() - start
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = torch.get_num_threads(), 1
        session = ort.InferenceSession(
            tmp + "/model.onnx", options, providers=["CPUExecutionProvider"]
        )
    classifier = inference.Classifier(predictor.model, cfg, predictor.flip)
    result: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "export_s": exported,
        "views": predictor.views * (2 if predictor.flip else 1),
    }
    for batch in batches:
        inputs = {"x": x[:batch], "lengths": lengths[:batch]}
        tensors = [torch.from_numpy(a) for a in inputs.values()]
        with torch.no_grad():
            result[f"torch_{batch}"] = timed(partial(classifier, *tensors), budget, least)
        result[f"onnx_{batch}"] = timed(partial(session.run, None, inputs), budget, least)
    clip = clips[0]
    result["raw_clip"] = timed(
        lambda: predictor.predict(clip.keypoint, clip.keypoint_score, clip.img_hw), budget, least
    )
    return result


def run(ctx: Context) -> list[Row]:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise BenchError("onnxruntime is not installed (pip install -e '.[export]')") from None
    budget, least = (0.1, 1) if ctx.quick else (3.0, 20)
    batches = QUICK_BATCHES if ctx.quick else BATCHES
    # One child process per model, so each row's peak RSS is its model's own; --quick runs both
    # models in one child (its RSS is the pair's), saving a start-up of torch and of its ONNX
    # exporter in a smoke run whose figures are not for the record.
    names = {section: name for name, section in STAGE_SECTION.items()}
    groups = [list(names)] if ctx.quick else [[section] for section in names]
    rows = []
    for threads, sections in itertools.product(ctx.thread_counts(), groups):
        got = measure(
            "bench.predict:child_predict",
            {
                "sections": sections,
                "threads": threads,
                "batches": list(batches),
                "budget": budget,
                "least": least,
            },
            timeout=900 * len(sections),
        )
        for section, r in got.result.items():
            name = names[section]
            used, views = plural(r["threads"], "thread"), plural(r["views"], "view")
            for batch in batches:
                ours, theirs = r[f"torch_{batch}"], r[f"onnx_{batch}"]
                note = (
                    f"median call: torch {ours * 1e3:.1f} ms, ONNX Runtime "
                    f"{theirs * 1e3:.1f} ms; {views} a clip, {CLASSES} classes, fresh weights"
                )
                if batch == 1:
                    note += (
                        f"; a raw clip through Predictor.predict {r['raw_clip'] * 1e3:.1f} ms"
                        f"; ONNX export {r['export_s']:.1f} s"
                    )
                rows.append(
                    Row(
                        name=f"predict {name}, batch {batch} (CPU, {used})",
                        wall_s=ours,
                        rss_bytes=got.rss_bytes,
                        throughput=batch / ours,
                        reference=f"ONNX Runtime {batch / theirs:,.1f} clips/s",
                        ratio=theirs / ours,
                        note=note,
                    )
                )
    return rows
