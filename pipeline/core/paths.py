"""Where each stage reads and writes, relative to the project root (dvc runs stages from there)."""

from pathlib import Path

RAW_DIR = Path("data/raw")
POSES_DIR = Path("data/poses")  # the pose stages' pickles of your videos (dvc.yaml says it too)
SUBSET_DIR = Path("data/subset")
SHARDS_DIR = Path("data/shards")
MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")


def model_path(name: str) -> Path:
    return MODELS_DIR / f"{name}.pt"


def resume_path(name: str) -> Path:
    return MODELS_DIR / f"{name}.resume.pt"


def curves_path(name: str) -> Path:
    """The train stage's per-epoch curves and their summary (dvclive's layout)."""
    return METRICS_DIR / "train" / name


def metrics_path(name: str) -> Path:
    return METRICS_DIR / f"{name}.json"
