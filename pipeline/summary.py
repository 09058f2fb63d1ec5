"""Stage `summary`: improved against baseline, and what they were measured on."""

from __future__ import annotations

from typing import Any

from pipeline.core.errors import cli
from pipeline.core.paths import METRICS_DIR, SHARDS_DIR, metrics_path
from pipeline.dataset.manifest import Manifest
from pipeline.files.atomic import prepare_outputs, write_json
from pipeline.files.readers import NUMBER, read_json

SUMMARY = METRICS_DIR / "summary.json"


def _read(name: str) -> dict[str, Any]:
    """metrics/<name>.json as evaluate@<name> writes it (the keys used here)."""
    shape = {"accuracy": NUMBER, "test_clips": int}
    return read_json(metrics_path(name), f"evaluate@{name}", shape)


def summarize(baseline: dict[str, Any], improved: dict[str, Any], manifest: Manifest) -> dict:
    """Both accuracies and the share of the baseline's errors that the improved model removes."""
    err_b, err_i = 1.0 - baseline["accuracy"], 1.0 - improved["accuracy"]
    return {
        "baseline_accuracy": baseline["accuracy"],
        "improved_accuracy": improved["accuracy"],
        "accuracy_gain": round(improved["accuracy"] - baseline["accuracy"], 6),
        "error_reduction": round((err_b - err_i) / err_b, 6) if err_b > 0 else 0.0,
        "data": manifest.source,
        "train_split": manifest.train_split,
        "test_split": manifest.test_split,
        "classes": len(manifest.classes),
        "test_clips": improved["test_clips"],
    }


@cli
def main() -> None:
    prepare_outputs(files=[SUMMARY])
    result = summarize(_read("baseline"), _read("improved"), Manifest.read(SHARDS_DIR))
    write_json(SUMMARY, result)
    print(
        f"summary: baseline {result['baseline_accuracy']:.4f}, improved "
        f"{result['improved_accuracy']:.4f}, error reduction {result['error_reduction']:.1%}"
    )


if __name__ == "__main__":
    main()
