"""The README's "Your own videos" commands, run as written in a fresh clone: real footage (the
clips in ../shared/videos, forward as one class and time-reversed as another) tracked with
`dvc add`, through the real estimator in the pose stage, `dvc exp run` to metrics, and
`predict --render`; then a new person's videos added: `dvc repro` estimates only them."""

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

# The people of the README's example, one real clip each (FRAMES frames of it, from START):
# forward it is "waving", time-reversed "clapping". A fifth person comes later.
PEOPLE = {
    "anna": ("ntu_hugging.avi", 0),
    "ben": ("arm_wrestling.mp4", 0),
    "carl": ("basketball.mp4", 0),
    "dora": ("ntu_hugging_1080p.mp4", 0),
}
LATER = {"eve": ("arm_wrestling.mp4", 100)}
FRAMES = 20
WIDTH = 320  # the copies are scaled down: decoding and estimating them stays quick


def read_frames(path: Path, start: int) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while len(frames) < start + FRAMES:
        ok, frame = capture.read()
        if not ok:
            break
        height, width = frame.shape[:2]
        frames.append(cv2.resize(frame, (WIDTH, round(height * WIDTH / width))))
    capture.release()
    return frames[start:], fps


def write(path: Path, frames: list[np.ndarray], fps: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()


def film(videos: Path, people: dict[str, tuple[str, int]], clapping: bool = True) -> None:
    """Each person's clip into videos/waving/<person>_1.mp4 and, reversed, clapping/..._2."""
    for person, (name, start) in people.items():
        frames, fps = read_frames(SHARED_VIDEOS / name, start)
        write(videos / "waving" / f"{person}_1.mp4", frames, fps)
        if clapping:
            write(videos / "clapping" / f"{person}_2.mp4", frames[::-1], fps)


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh clone with data/videos/{waving,clapping}/<person>_<n>.mp4."""
    clone = fresh_clone(tmp_path_factory.mktemp("videos"))
    film(clone / "data" / "videos", PEOPLE)
    return clone


def checksums(folder: Path) -> dict[str, str]:
    return {str(path.relative_to(folder)): md5(path) for path in sorted(folder.rglob("*.mp4"))}


def test_your_own_videos_as_the_readme_says(
    clone: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    videos = clone / "data" / "videos"
    add, exp_run, commit, metrics, predict = readme.block("Your own videos")
    more, commit_more = readme.block("Your own videos", 1)
    before = checksums(videos)
    sh(add, clone)
    done = sh(exp_run, clone)
    assert ran(done.stdout) == ALL_STAGES | {"pose@my_videos"}
    assert "pose: 8 videos (8 estimated, 0 cached), 2 classes" in done.stdout
    sh(commit, clone)
    assert sh("git status --porcelain", clone).stdout == ""  # the commands commit everything
    summary = json.loads((clone / "metrics" / "summary.json").read_text())
    assert summary["classes"] == 2
    assert "improved" in sh(metrics, clone).stdout
    per_class = (clone / "metrics" / "improved" / "per_class.csv").read_text()
    assert "waving" in per_class and "clapping" in per_class
    # the test split holds whole people: both videos of one of them
    test = pd_read(clone / "metrics" / "improved" / "predictions.csv")
    people = {name.split("__")[1] for name in test}
    assert len(people) == 1 and len(test) == 2, test
    shown = sh(predict, clone).stdout
    lines = shown.splitlines()
    assert lines[0].split()[:3] == ["frame_dir", "predicted", "confidence"], shown
    assert lines[1].split()[0] == "anna_1"
    assert lines[-1] == f"predict: drew {FRAMES} frames -> anna_1.mp4"
    capture = cv2.VideoCapture(str(clone / "anna_1.mp4"))
    count = 0
    while capture.read()[0]:
        count += 1
    assert count == FRAMES
    # the Python API takes the video too (its poses come from the cache the stage filled)
    api = (
        "from pipeline.predict import Predictor; "
        "print(Predictor.load('models/improved.pt').predict_video('data/videos/waving/anna_1.mp4'))"
    )
    probs = ast.literal_eval(sh(f'python -c "{api}"', clone).stdout.strip())
    assert set(probs) == {"waving", "clapping"} and abs(sum(probs.values()) - 1) < 1e-5
    predicted, confidence = lines[1].split()[1:3]
    assert next(iter(probs)) == predicted and abs(probs[predicted] - float(confidence)) < 1e-3

    # one new video: only it is estimated, and the pipeline runs on
    film(videos, LATER, clapping=False)
    done = sh(more, clone)
    assert "pose: 9 videos (1 estimated, 8 cached), 2 classes" in done.stdout, done.stdout
    assert {"pose@my_videos", "extract", "summary"} <= ran(done.stdout)
    sh(commit_more, clone)
    assert sh("git status --porcelain", clone).stdout == "?? anna_1.mp4\n"  # predict's drawing
    # the user's videos were only read, by every command
    assert {k: v for k, v in checksums(videos).items() if k in before} == before
    assert not (clone / "data" / "raw" / "my_videos.pkl").exists()


def pd_read(path: Path) -> list[str]:
    import pandas as pd

    return list(pd.read_csv(path)["frame_dir"])
