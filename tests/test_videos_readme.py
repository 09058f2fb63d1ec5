"""The README's "Your own videos" commands, run as written in a fresh clone: real footage (the
clips in ../shared/videos, cut into halves, forward as one class and time-reversed as another)
through the real estimator, `dvc add`, `dvc exp run` to metrics, and `predict --render`."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import readme
from usershell import ALL_STAGES, fresh_clone, md5, ran, sh
from video_fakes import SHARED_VIDEOS

cv2 = pytest.importorskip("cv2", reason="the video extra is not installed")
pytest.importorskip("mediapipe", reason="the video extra is not installed")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not SHARED_VIDEOS.is_dir(), reason=f"no real videos at {SHARED_VIDEOS}"),
]

# The people of the README's example, one real clip each (at most FRAMES frames of it).
PEOPLE = {
    "anna": "ntu_hugging.avi",
    "ben": "arm_wrestling.mp4",
    "carl": "basketball.mp4",
    "dora": "ntu_hugging_1080p.mp4",
}
FRAMES = 60
WIDTH = 480  # the copies are scaled down: decoding and writing them stays quick


def read_frames(path: Path) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while len(frames) < FRAMES:
        ok, frame = capture.read()
        if not ok:
            break
        height, width = frame.shape[:2]
        frames.append(cv2.resize(frame, (WIDTH, round(height * WIDTH / width))))
    capture.release()
    return frames, fps


def write(path: Path, frames: list[np.ndarray], fps: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone with data/videos/{waving,clapping}/<person>_<n>.mp4: each clip's halves
    forward (waving) and time-reversed (clapping); and a cache of its own."""
    clone = fresh_clone(tmp_path_factory.mktemp("videos"))
    for person, name in PEOPLE.items():
        frames, fps = read_frames(SHARED_VIDEOS / name)
        half = len(frames) // 2
        for n, part in enumerate((frames[:half], frames[half:])):
            write(clone / "data" / "videos" / "waving" / f"{person}_{n + 1}.mp4", part, fps)
            write(clone / "data" / "videos" / "clapping" / f"{person}_{n + 3}.mp4", part[::-1], fps)
    return clone


def test_your_own_videos_as_the_readme_says(
    clone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pose, add, commit, exp_run, metrics, predict = readme.block("Your own videos")
    done = sh(pose, clone)
    assert done.stdout.startswith("pose: 16 videos (16 estimated, 0 cached), 2 classes")
    pkl = clone / "data" / "raw" / "my_videos.pkl"
    before = md5(pkl)
    sh(add, clone)
    sh(commit, clone)
    assert sh("git status --porcelain data", clone).stdout == ""
    assert ran(sh(exp_run, clone).stdout) == ALL_STAGES
    summary = json.loads((clone / "metrics" / "summary.json").read_text())
    assert summary["classes"] == 2
    assert "improved" in sh(metrics, clone).stdout
    per_class = (clone / "metrics" / "improved" / "per_class.csv").read_text()
    assert "waving" in per_class and "clapping" in per_class
    # the test split holds whole people: the four videos of one of them
    test = pd_read(clone / "metrics" / "improved" / "predictions.csv")
    people = {name.split("__")[1] for name in test}
    assert len(people) == 1 and len(test) == 4, test
    assert md5(pkl) == before  # the user's data is only read
    # the same settings again: nothing is estimated
    assert "(0 estimated, 16 cached)" in sh(pose, clone).stdout
    assert md5(pkl) == before  # rewritten with the same bytes
    shown = sh(predict, clone).stdout
    lines = shown.splitlines()
    assert lines[0].split()[:3] == ["frame_dir", "predicted", "confidence"], shown
    assert lines[1].split()[0] == "anna_1"
    assert lines[-1] == "predict: drew 30 frames -> anna_1.mp4"
    capture = cv2.VideoCapture(str(clone / "anna_1.mp4"))
    count = 0
    while capture.read()[0]:
        count += 1
    assert count == 30
    # the Python API takes the video too (its poses now come from the cache)
    api = (
        "from pipeline.predict import Predictor; "
        "print(Predictor.load('models/improved.pt').predict_video('data/videos/waving/anna_1.mp4'))"
    )
    probs = ast.literal_eval(sh(f'python -c "{api}"', clone).stdout.strip())
    assert set(probs) == {"waving", "clapping"} and abs(sum(probs.values()) - 1) < 1e-5
    predicted, confidence = lines[1].split()[1:3]
    assert next(iter(probs)) == predicted and abs(probs[predicted] - float(confidence)) < 1e-3


def pd_read(path: Path) -> list[str]:
    import pandas as pd

    return list(pd.read_csv(path)["frame_dir"])
