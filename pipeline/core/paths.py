"""Where each stage reads and writes, relative to the project root (dvc runs stages from there)."""

from pathlib import Path

RAW_DIR = Path("data/raw")
POSES_DIR = Path("data/poses")  # the pose stages' pickles of your videos (dvc.yaml says it too)
SUBSET_DIR = Path("data/subset")
SHARDS_DIR = Path("data/shards")
MODELS_DIR = Path("models")
METRICS_DIR = Path("metrics")
# The fusion's stream models, one file per stream: `fuse` depends on the folder (dvc.yaml), so
# adding a stream to fusion.streams reruns it; it reads only the listed streams' files.
STREAMS_DIR = MODELS_DIR / "streams"
# A stream model's name, the train stage's argument: `stream-<stream>` (models/streams/<stream>.pt).
STREAM_MODEL = "stream-"


def model_path(name: str) -> Path:
    """models/<name>.pt, or for a stream model `stream-<stream>` models/streams/<stream>.pt."""
    if name.startswith(STREAM_MODEL):
        return STREAMS_DIR / f"{name.removeprefix(STREAM_MODEL)}.pt"
    return MODELS_DIR / f"{name}.pt"


def resume_path(name: str) -> Path:
    """models/<name>.resume.pt, for stream models too: outside models/streams, so a killed
    run's state does not change the folder `fuse` depends on."""
    return MODELS_DIR / f"{name}.resume.pt"


def curves_path(name: str) -> Path:
    """The train stage's per-epoch curves and their summary (dvclive's layout)."""
    return METRICS_DIR / "train" / name


def metrics_path(name: str) -> Path:
    return METRICS_DIR / f"{name}.json"
