"""Stage `summary`: improved against baseline, and what they were measured on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.atomic import write_json
from pipeline.errors import cli, fail
from pipeline.paths import METRICS_DIR, SHARDS_DIR
from pipeline.shardset import read_manifest


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise fail(str(path), "not found: run the evaluate stages first (dvc repro)") from None


def summarize(baseline: dict[str, Any], improved: dict[str, Any], manifest: dict[str, Any]) -> dict:
    """Both accuracies and the share of the baseline's errors that the improved model removes."""
    err_b, err_i = 1.0 - baseline["accuracy"], 1.0 - improved["accuracy"]
    return {
        "baseline_accuracy": baseline["accuracy"],
        "improved_accuracy": improved["accuracy"],
        "accuracy_gain": round(improved["accuracy"] - baseline["accuracy"], 6),
        "error_reduction": round((err_b - err_i) / err_b, 6) if err_b > 0 else 0.0,
        "data": manifest["data"]["source"],
        "train_split": manifest["data"]["train"],
        "test_split": manifest["data"]["test"],
        "classes": len(manifest["classes"]),
        "test_clips": improved["test_clips"],
    }


@cli
def main() -> None:
    result = summarize(
        _read(METRICS_DIR / "baseline.json"),
        _read(METRICS_DIR / "improved.json"),
        read_manifest(SHARDS_DIR),
    )
    write_json(METRICS_DIR / "summary.json", result)
    print(
        f"summary: baseline {result['baseline_accuracy']:.4f}, improved "
        f"{result['improved_accuracy']:.4f}, error reduction {result['error_reduction']:.1%}"
    )


if __name__ == "__main__":
    main()
