"""`python -m pipeline.render`: animated skeleton GIFs of chosen clips, from a pickle or a subset.

The clips are drawn from poses placed by hand, so a test knows where each bone must be and
reads its colour back from the GIF.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import call_stage, error_line, make_annotation, run_stage, write_pkl
from PIL import Image, ImageSequence

from pipeline.core.skeleton import J
from pipeline.dataset import subset
from pipeline.viz import showcase
from pipeline.viz.drawing import PALETTE, Caption, _fitted, _font, draw_clip

IMG = (120, 160)  # (height, width) of the clips' image frame
SHOULDER_Y = 40


def t_pose(frames: int) -> tuple[np.ndarray, np.ndarray]:
    """One person, arms stretched sideways: the left arm towards +x, the right towards -x."""
    kp = np.zeros((1, frames, 17, 2), np.float32)
    place = {
        "nose": (80, 20),
        "left_eye": (84, 16),
        "right_eye": (76, 16),
        "left_ear": (88, 18),
        "right_ear": (72, 18),
        "left_shoulder": (90, SHOULDER_Y),
        "left_elbow": (120, SHOULDER_Y),
        "left_wrist": (150, SHOULDER_Y),
        "right_shoulder": (70, SHOULDER_Y),
        "right_elbow": (40, SHOULDER_Y),
        "right_wrist": (10, SHOULDER_Y),
        "left_hip": (86, 80),
        "right_hip": (74, 80),
        "left_knee": (88, 100),
        "right_knee": (72, 100),
        "left_ankle": (88, 118),
        "right_ankle": (72, 118),
    }
    for name, xy in place.items():
        kp[0, :, J[name]] = xy
    return kp, np.ones((1, frames, 17), np.float32)


def clip(name: str, frames: int, label: int = 0) -> dict:
    kp, score = t_pose(frames)
    ann = make_annotation(name, label, frames=frames, img_shape=IMG)
    return {**ann, "keypoint": kp.astype(np.float16), "keypoint_score": score.astype(np.float16)}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pickle of three T-posing clips and a predictions table for them."""
    root = tmp_path_factory.mktemp("render")
    clips = [clip("wave_a", 5), clip("wave_b", 7), clip("jump_a", 6, label=1)]
    write_pkl(
        {"split": {"test": [c["frame_dir"] for c in clips]}, "annotations": clips},
        root / "clips.pkl",
    )
    pd.DataFrame(
        {
            "frame_dir": ["wave_a", "wave_b", "jump_a"],
            "actual": ["wave", "wave", "jump"],
            "predicted": ["wave", "jump", "wave"],
            "confidence": [0.9, 0.6, 0.8],
            "top3": ["wave|jump", "jump|wave", "wave|jump"],
        }
    ).to_csv(root / "predictions.csv", index=False)
    return root


def frames_of(path: Path) -> list[np.ndarray]:
    with Image.open(path) as gif:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(gif)]


def has(frame: np.ndarray, colour: str) -> np.ndarray:
    return (frame == PALETTE[colour]).all(axis=-1)


def image_box(frame: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, height, width) of the drawn image frame (img_shape, scaled)."""
    rows, cols = np.nonzero(has(frame, "image"))
    return rows.min(), cols.min(), rows.max() - rows.min() + 1, cols.max() - cols.min() + 1


@pytest.mark.parametrize("width", [160, 320])
def test_a_gif_per_clip_with_every_frame_left_and_right_in_their_colours(
    data: Path, tmp_path: Path, width: int
) -> None:
    done = call_stage(
        "render",
        data,
        "clips.pkl",
        "--clips",
        "wave_a",
        "--out",
        str(tmp_path),
        "--width",
        str(width),
        "--predictions",
        "predictions.csv",
    )
    assert done.returncode == 0, done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["wave_a.gif"]
    frames = frames_of(tmp_path / "wave_a.gif")
    assert len(frames) == 5
    scale = width / IMG[1]
    for frame in frames:
        top, left, height, wide = image_box(frame)
        assert frame.shape[1] == width and (left, wide) == (0, width)
        assert height == round(IMG[0] * scale)  # the image frame keeps img_shape's proportions
        y = top + round(SHOULDER_Y * scale)
        assert has(frame, "left")[y, round(135 * scale)]  # mid left forearm (120..150)
        assert has(frame, "right")[y, round(25 * scale)]  # mid right forearm (40..10)
        assert has(frame, "left").sum() > 20 and has(frame, "right").sum() > 20
        assert has(frame, "right_answer").any() and not has(frame, "wrong_answer").any()


def test_a_wrong_prediction_is_red_and_frames_can_be_fewer(data: Path, tmp_path: Path) -> None:
    done = call_stage(
        "render",
        data,
        "clips.pkl",
        "--clips",
        "wave_b",
        "--frames",
        "3",
        "--out",
        str(tmp_path),
        "--predictions",
        "predictions.csv",
    )
    assert done.returncode == 0, done.stderr
    frames = frames_of(tmp_path / "wave_b.gif")
    assert len(frames) == 3
    assert all(has(f, "wrong_answer").any() and not has(f, "right_answer").any() for f in frames)


def test_errors_are_the_most_confident_wrong_predictions(data: Path, tmp_path: Path) -> None:
    done = call_stage(
        "render",
        data,
        "clips.pkl",
        "--errors",
        "1",
        "--out",
        str(tmp_path),
        "--predictions",
        "predictions.csv",
    )
    assert done.returncode == 0, done.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["jump_a.gif"]  # 0.8 beats wave_b's 0.6
    assert len(frames_of(tmp_path / "jump_a.gif")) == 6


def test_a_subset_folder_is_an_input_too(data: Path, tmp_path: Path) -> None:
    """The subset extract writes: clips stored flat, with their class names and img_shape."""
    kp, score = t_pose(4)
    row = {
        "frame_dir": "wave_c",
        "label": 0,
        "target": 0,
        "class_name": "wave",
        "group": "1",
        "split": "test",
        "frames": 4,
        "persons": 1,
        "img_h": IMG[0],
        "img_w": IMG[1],
    }
    meta = subset.Meta(
        source="clips.pkl",
        train_split="t",
        test_split="test",
        labels=[0],
        classes=["wave"],
        validation="group",
        counts={"train": 0, "val": 0, "test": 1},
        skipped=[],
        warnings=[],
    )
    subset.write(tmp_path / "subset", [row], [{"keypoint": kp, "keypoint_score": score}], meta)
    done = call_stage("render", tmp_path, "subset", "--clips", "wave_c", "--out", "gifs")
    assert done.returncode == 0, done.stderr
    frames = frames_of(tmp_path / "gifs" / "wave_c.gif")
    assert len(frames) == 4 and has(frames[0], "left").any() and has(frames[0], "right").any()


def test_bad_input_is_one_line_and_exit_2_with_nothing_written(data: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a pickle")
    out = tmp_path / "out"
    cases = {
        "notes.txt: not a usable pickle": (str(tmp_path / "notes.txt"), "--clips", "wave_a"),
        "no clip named 'nope' (it holds 3 clips": ("clips.pkl", "--clips", "wave_a", "nope"),
        "one of the arguments --clips --errors is required": ("clips.pkl",),
        "--errors needs predictions": ("clips.pkl", "--errors", "2"),
    }
    for expected, argv in cases.items():
        line = error_line(call_stage("render", data, *argv, "--out", str(out)))
        assert expected in line, line
        assert not out.exists()
    (tmp_path / "file").write_text("mine")
    for unwritable in (tmp_path / "file", tmp_path / "file" / "sub"):
        args = ["clips.pkl", "--clips", "wave_a", "--out", str(unwritable)]
        line = error_line(call_stage("render", data, *args))
        assert "expected a folder to hold" in line and str(tmp_path / "file") in line
    assert (tmp_path / "file").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "notes.txt"]


@pytest.mark.slow
def test_the_command_line_exits_2_on_a_missing_clip(data: Path, tmp_path: Path) -> None:
    done = run_stage("render", data, "clips.pkl", "--clips", "nope", "--out", str(tmp_path / "o"))
    assert error_line(done).startswith("error: clips.pkl: no clip named 'nope'")
    assert "Traceback" not in done.stderr and not (tmp_path / "o").exists()


def test_gif_names_stay_in_the_folder_and_never_meet() -> None:
    names = ["v_Wave_g01_c01", "a b", "a_b", "a/b", "../up", "..", ".hidden"]
    files = [showcase.file_name(name) for name in names]
    assert files[0] == "v_Wave_g01_c01.gif" and files[2] == "a_b.gif"  # unchanged when safe
    assert len(set(files)) == len(files), files
    assert all("/" not in f and not f.startswith(".") and f.endswith(".gif") for f in files)


def test_the_clips_name_is_never_cut_at_the_right_edge() -> None:
    """The gallery's GIFs are 200 pixels wide: the name has a line of its own under the
    image, and a name too long even for that keeps its end, where clips differ."""
    kp, score = t_pose(3)
    for name, shown in [
        ("v_ApplyEyeMakeup_g04_c01", "v_ApplyEyeMakeup_g04_c01"),
        ("v_" + "VeryLongActionName" * 4 + "_g04_c01", "..."),
    ]:
        frame = np.asarray(draw_clip(kp, score, IMG, Caption(name), width=200)[0].convert("RGB"))
        top, _, height, _ = image_box(frame)
        footer = has(frame[top + height :], "dim")
        assert footer.any() and np.nonzero(footer)[1].max() <= 200 - 4, name
        assert _fitted(name, _font(max(10, 200 // 24)), 200 - 8).endswith("_g04_c01")
        assert shown in _fitted(name, _font(max(10, 200 // 24)), 200 - 8)


def test_a_joint_at_the_origin_is_not_drawn_whatever_its_score() -> None:
    """PYSKL marks an undetected joint (0, 0); with a score above MIN_SCORE (or none in the
    pickle) it would pull a bone to the image's top-left corner."""
    kp, score = t_pose(1)
    kp[0, 0, J["left_wrist"]] = (0, 0)
    frame = np.asarray(draw_clip(kp, score, IMG, Caption("c"), width=160)[0].convert("RGB"))
    top, left, _, _ = image_box(frame)
    corner = has(frame[top : top + 20, left : left + 20], "left")
    assert not corner.any()
    assert has(frame, "left").sum() > 20  # the rest of the left arm is drawn
