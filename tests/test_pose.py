"""pipeline.pose: videos -> a PYSKL 2D pickle that extract reads (fake estimator, real decoding);
the tracker; bad input; and MediaPipe itself on a real clip (where ../shared/videos exists)."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("cv2", reason="the video extra is not installed")

from conftest import call_stage, error_line, write_params  # noqa: E402
from video_fakes import SHARED_VIDEOS, BrightBox, write_video  # noqa: E402

from pipeline.files import pklio  # noqa: E402

pytestmark = pytest.mark.slow  # stages in subprocesses or trained workspaces

FAKE = ["--estimator", "video_fakes:BrightBox", "--workers", "1"]


def pose(cwd: Path, *args: str):
    return call_stage("pose", cwd, *args)


def videos_folder(root: Path, per_class: int = 3) -> Path:
    for c, name in enumerate(["jump", "wave"]):
        for k in range(per_class):
            write_video(
                root / "videos" / name / f"p{k}_take{c}.mp4", frames=10 + k, shift=7 * c + k
            )
    return root / "videos"


def load(path: Path) -> dict:
    return pickle.loads(path.read_bytes())


def test_folder_becomes_a_pickle_extract_reads(tmp_path: Path) -> None:
    videos = videos_folder(tmp_path)
    done = pose(tmp_path, str(videos), "--out", "v.pkl", "--cache", "cache", *FAKE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("pose: 6 videos (6 estimated, 0 cached), 2 classes")
    data = load(tmp_path / "v.pkl")
    splits, annotations = pklio.check_dataset(data, "v.pkl")
    assert {a["frame_dir"] for a in annotations} == {
        f"{c}__p{k}_take{i}__p{k}_take{i}" for i, c in enumerate(["jump", "wave"]) for k in range(3)
    }
    for ann in annotations:
        assert pklio.check_annotation(ann, "v.pkl", 0) == 1
        assert ann["label"] == (0 if ann["frame_dir"].startswith("jump") else 1)
        assert ann["img_shape"] == ann["original_shape"] == (48, 64)
        assert ann["keypoint"].dtype == np.float32 and ann["keypoint"].shape[2:] == (17, 2)
        assert ann["total_frames"] == ann["keypoint"].shape[1] in (10, 11, 12)
        assert np.allclose(ann["keypoint_score"], 0.9)
    assert sorted(splits) == ["test", "train"]
    assert sorted(splits["train"] + splits["test"]) == sorted(a["frame_dir"] for a in annotations)
    # each class has a video in test and in train
    for name in ("jump", "wave"):
        assert any(f.startswith(name) for f in splits["test"])
        assert any(f.startswith(name) for f in splits["train"])


def test_coordinates_are_in_the_original_frames_pixels(tmp_path: Path) -> None:
    """--max-side scales the frames the estimator sees; the pickle keeps the video's pixels."""
    write_video(tmp_path / "v" / "a" / "big.mp4", frames=4, size=(320, 160))
    args = ("--out", "v.pkl", "--no-cache", "--test-fraction", "0", *FAKE)
    full = load_done(tmp_path, str(tmp_path / "v"), *args)
    small = load_done(tmp_path, str(tmp_path / "v"), *args, "--max-side", "80")
    a, b = full["annotations"][0], small["annotations"][0]
    assert a["img_shape"] == b["img_shape"] == (160, 320)
    assert np.abs(a["keypoint"] - b["keypoint"]).max() < 320 / 80 * 2  # a pixel or two at 80
    box = a["keypoint"][0, 0]
    assert box[:, 0].max() > 80 and box[:, 1].max() > 40  # not the scaled frame's pixels


def load_done(cwd: Path, *args: str) -> dict:
    done = pose(cwd, *args)
    assert done.returncode == 0, done.stderr
    return load(cwd / "v.pkl")


def test_the_cache_estimates_only_new_videos(tmp_path: Path) -> None:
    videos = videos_folder(tmp_path, per_class=2)
    args = (str(videos), "--out", "v.pkl", "--cache", "cache", *FAKE)
    assert "(4 estimated, 0 cached)" in pose(tmp_path, *args).stdout
    first = (tmp_path / "v.pkl").read_bytes()
    assert "(0 estimated, 4 cached)" in pose(tmp_path, *args).stdout
    assert (tmp_path / "v.pkl").read_bytes() == first
    write_video(videos / "wave" / "p9_new.mp4", frames=5, shift=30)
    BrightBox.frames_seen = 0
    assert "(1 estimated, 4 cached)" in pose(tmp_path, *args).stdout
    # the worker process counted its own frames; this process saw none
    assert BrightBox.frames_seen == 0
    # other settings are another key
    assert "(5 estimated, 0 cached)" in pose(tmp_path, *args, "--stride", "2").stdout


def test_the_stage_takes_its_settings_from_params(tmp_path: Path) -> None:
    """--params (the pose@<name> stage): stride, group pattern, test share and the estimator
    with its options come from params.yaml's pose section; options given too are refused; a
    new video is the only one estimated."""
    videos = videos_folder(tmp_path, per_class=3)
    settings = {
        "pose.estimator": "video_fakes:BrightBox",
        "pose.options": {"threshold": 100},
        "pose.stride": 2,
        "pose.group_pattern": "^(p\\d)_",
        "pose.test_fraction": 0.34,
        "pose.workers": 1,
    }
    write_params(tmp_path, settings)
    args = (str(videos), "--out", "v.pkl", "--cache", "cache", "--params")
    assert "(6 estimated, 0 cached)" in pose(tmp_path, *args).stdout
    data = load(tmp_path / "v.pkl")
    frames = {a["frame_dir"]: a["total_frames"] for a in data["annotations"]}
    assert frames["jump__p2__p2_take0"] == 6  # 12 frames, every second one
    assert data["split"]["test"] and all("__p" in f for f in data["split"]["test"])
    groups = {f.split("__")[1] for f in data["split"]["test"]}
    assert len(groups) == 1 and len(data["split"]["test"]) == 2  # one person, both classes
    # the options reach the estimator, and are in the cache's key
    write_params(tmp_path, {**settings, "pose.options": {"threshold": 50}})
    assert "(6 estimated, 0 cached)" in pose(tmp_path, *args).stdout
    write_video(videos / "wave" / "p7_new.mp4", frames=5, shift=30)
    assert "(1 estimated, 6 cached)" in pose(tmp_path, *args).stdout
    refused = pose(tmp_path, *args, "--stride", "3")
    assert "--stride: not with --params" in error_line(refused)
    write_params(tmp_path, {**settings, "pose.options": {"treshold": 50}})
    line = error_line(pose(tmp_path, *args))
    assert line.startswith("error: pose.options: expected settings that video_fakes:BrightBox")
    write_params(tmp_path, {**settings, "pose.stride": 0})
    line = error_line(pose(tmp_path, *args))
    assert line == "error: params.yaml: pose.stride: expected an integer in [1, 10000], found 0"


def test_make_data_leaves_a_pose_stages_pickle_to_dvc(tmp_path: Path) -> None:
    """data.pkl under data/poses/ is made by `dvc repro`: fetch neither downloads nor tracks it."""
    write_params(tmp_path, {"data.pkl": "data/poses/my_videos.pkl"})
    done = call_stage("fetch", tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "fetch: nothing to get: data/poses/my_videos.pkl is a pose stage's pickle of your "
        "videos (dvc repro)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


@pytest.mark.parametrize("how", ["interrupt", "die"])
def test_a_stopped_run_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """Ctrl-C on its third video (exit 130), or its worker killed (one line, exit 2): no
    pickle; the two videos done are cached, and the next run estimates the rest only."""
    videos = videos_folder(tmp_path, per_class=2)
    monkeypatch.setenv("VIDEO_FAKES_COUNTER", str(tmp_path / "counter"))
    monkeypatch.setenv("VIDEO_FAKES_STOP", how)
    args = (str(videos), "--out", "v.pkl", "--cache", "cache", "--workers", "1")
    fake = ("--estimator", "video_fakes:StopsAtThirdVideo")
    start = time.monotonic()
    stopped = pose(tmp_path, *args, *fake)
    assert time.monotonic() - start < 50  # the worker was not waited for (it sleeps 60 s)
    if how == "interrupt":
        assert stopped.returncode == 130, stopped.stderr
        assert stopped.stderr.strip() == "interrupted: pose stopped; its previous outputs are kept"
    else:
        assert "error: pose: a worker process died" in error_line(stopped)
    assert not (tmp_path / "v.pkl").exists() and not list(tmp_path.glob(".v.pkl*"))
    resumed = pose(tmp_path, *args, *fake)
    assert "(2 estimated, 2 cached)" in resumed.stdout, resumed.stderr


def test_csv_with_splits_and_groups(tmp_path: Path) -> None:
    for k in range(4):
        write_video(tmp_path / "clips" / f"c{k}.mp4", frames=6, shift=k)
    (tmp_path / "list.csv").write_text(
        "video,label,split,group\n"
        "clips/c0.mp4,sit,train,ann\nclips/c1.mp4,stand,train,ann\n"
        "clips/c2.mp4,sit,test,bob\nclips/c3.mp4,stand,test,bob\n"
    )
    data = load_done(tmp_path, "list.csv", "--out", "v.pkl", "--no-cache", *FAKE)
    assert data["split"] == {
        "test": ["sit__bob__c2", "stand__bob__c3"],
        "train": ["sit__ann__c0", "stand__ann__c1"],
    }


def test_groups_never_straddle_splits(tmp_path: Path) -> None:
    """--group-pattern: a person's videos all land on one side."""
    for person in range(5):
        for c, name in enumerate(["a", "b"]):
            write_video(tmp_path / "v" / name / f"person{person}_{c}.mp4", frames=3, shift=person)
    args = ("--out", "v.pkl", "--no-cache", "--group-pattern", r"^(person\d+)_", *FAKE)
    data = load_done(tmp_path, str(tmp_path / "v"), *args, "--test-fraction", "0.4")
    group = {a["frame_dir"]: a["frame_dir"].split("__")[1] for a in data["annotations"]}
    train = {group[f] for f in data["split"]["train"]}
    test = {group[f] for f in data["split"]["test"]}
    assert train and test and not train & test
    assert len(data["split"]["test"]) == 4  # two people, both classes each


def test_a_video_with_no_person_is_kept_and_counted(tmp_path: Path) -> None:
    videos = videos_folder(tmp_path, per_class=2)
    write_video(videos / "jump" / "empty.mp4", frames=5, person=False)
    done = pose(tmp_path, str(videos), "--out", "v.pkl", "--no-cache", *FAKE)
    assert done.returncode == 0
    assert "warning: no person found in 1 of 5 videos (first 'jump__empty__empty')" in done.stderr
    ann = {a["frame_dir"]: a for a in load(tmp_path / "v.pkl")["annotations"]}
    assert ann["jump__empty__empty"]["keypoint"].shape == (0, 5, 17, 2)


def bad_input_cases(root: Path) -> dict[str, tuple[list[str], str]]:
    good = write_video(root / "good" / "a" / "ok.mp4", frames=4)
    (root / "text" / "a").mkdir(parents=True)
    (root / "text" / "a" / "notes.mp4").write_text("not a video\n")
    (root / "zero" / "a").mkdir(parents=True)
    (root / "zero" / "a" / "nothing.mp4").write_bytes(b"")
    avi = root / "cut" / "a" / "cut.avi"
    avi.parent.mkdir(parents=True)
    import cv2

    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"MJPG"), 25, (64, 48))
    for t in range(40):
        writer.write(np.full((48, 64, 3), t * 6, np.uint8))
    writer.release()
    avi.write_bytes(avi.read_bytes()[: avi.stat().st_size // 2])
    (root / "novideos" / "a").mkdir(parents=True)
    (root / "novideos" / "a" / "readme.txt").write_text("x")
    write_video(root / "dark" / "a" / "dark.mp4", frames=4, person=False)
    (root / "empty.csv").write_bytes(b"")
    (root / "header.csv").write_text("video,label\n")
    (root / "missing.csv").write_text(f"video,label\n{good},a\nnope.mp4,b\n")
    (root / "columns.csv").write_text(f"file,class\n{good},a\n")
    (root / "partsplit.csv").write_text(f"video,label,split\n{good},a,train\n{good},b,\n")
    return {
        "not a video": (["text"], "text/a/notes.mp4: not a video OpenCV can read"),
        "empty file": (["zero"], "zero/a/nothing.mp4: expected a video, found an empty file"),
        "truncated": (["cut"], "cut/a/cut.avi: truncated: its header declares 40 frames"),
        "no videos": (["novideos"], "novideos: no videos found"),
        "no person": (["dark"], "dark: no person found in any of its 1 videos"),
        "missing folder": (["absent"], "absent: not found"),
        "0-byte csv": (["empty.csv"], "empty.csv: empty: expected a header"),
        "no rows": (["header.csv"], "header.csv: no rows"),
        "missing file": (["missing.csv"], "missing.csv: line 3: video: file not found"),
        "columns": (["columns.csv"], "columns.csv: header: expected columns video,label"),
        "some splits": (["partsplit.csv"], "partsplit.csv: split: expected a split in every row"),
        "bad --out": (["good", "--out", "v.txt"], "v.txt: --out: expected a file name ending"),
        "bad pattern": (["good", "--group-pattern", "x"], "--group-pattern: expected a regex"),
    }


def test_bad_input_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    for name, (args, message) in bad_input_cases(tmp_path).items():
        out = [] if "--out" in args else ["--out", "v.pkl"]
        done = pose(tmp_path, *args, *out, "--no-cache", *FAKE)
        line = error_line(done)
        assert message in line, (name, line)
        assert not (tmp_path / "v.pkl").exists(), name
        assert not list(tmp_path.glob(".v.pkl*")), name


# --- MediaPipe itself, on real footage ---

requires_videos = pytest.mark.skipif(
    not SHARED_VIDEOS.is_dir(), reason=f"real videos not found at {SHARED_VIDEOS}"
)


@requires_videos
def test_mediapipe_finds_the_person_in_a_real_clip(tmp_path: Path) -> None:
    pytest.importorskip("mediapipe", reason="the video extra is not installed")
    folder = tmp_path / "v" / "hugging"
    folder.mkdir(parents=True)
    (folder / "ntu_hugging.avi").symlink_to(SHARED_VIDEOS / "ntu_hugging.avi")
    done = pose(tmp_path, str(tmp_path / "v"), "--out", "v.pkl", "--no-cache", "--workers", "1")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # mediapipe's own log lines stay in the worker
    (ann,) = load(tmp_path / "v.pkl")["annotations"]
    kp, score = ann["keypoint"], ann["keypoint_score"]
    height, width = ann["img_shape"]
    assert (height, width) == (1080, 1920) and kp.shape[1:] == (72, 17, 2)
    assert 1 <= kp.shape[0] <= 2
    assert (kp[..., 0] >= 0).all() and (kp[..., 0] <= width).all()
    assert (kp[..., 1] >= 0).all() and (kp[..., 1] <= height).all()
    assert (score >= 0).all() and (score <= 1).all()
    found = (score.max(-1) > 0).any(0)
    assert found.mean() >= 0.9
    # the people are where NTU's hug is: in the middle of the frame, standing
    seen = kp[0][score[0] > 0.5]
    assert width * 0.2 < np.median(seen[:, 0]) < width * 0.8
