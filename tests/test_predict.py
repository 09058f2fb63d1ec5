"""Using a trained model: `pipeline.predict` (command and Python API) and `pipeline.export`.

One workspace trains and evaluates both models on tiny data (the improved one averaging 3
views and their mirror images); predicting its test split from the raw pickle must give exactly
the predictions evaluate wrote, and an exported ONNX model the probabilities torch gives.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import (
    REALDATA,
    ShellPayload,
    call_stage,
    error_line,
    make_annotation,
    make_dataset,
    requires_realdata,
    run_stages,
    stage_env,
    write_params,
    write_pkl,
)

from pipeline import predict
from pipeline.dataset.shardset import ShardSet
from pipeline.files import clipfiles
from pipeline.learning import inference
from pipeline.predict import Predictor

PKL = "data/raw/ucf101_2d.pkl"
MODELS = ("baseline", "improved")
EMPTY = "v_Archery_g01_c09"  # a test clip with no person: left out, as extract leaves it out


pytestmark = [
    pytest.mark.slow,
    pytest.mark.usefixtures("torch_state_kept"),
]  # predict's main sets torch's threads


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both models trained and evaluated; the pickle also holds label 3, which is not chosen,
    and a clip with no person. Batches of 2 make predict preprocess in several chunks."""
    work = tmp_path_factory.mktemp("predict")
    data = make_dataset(
        labels=(0, 1, 2, 3),
        groups=range(1, 9),
        test_groups=(1, 2, 3),
        persons=(1, 2),
        frames=(12, 40),
    )
    data["annotations"].append(make_annotation(EMPTY, 2, persons=0))
    data["split"]["test1"].append(EMPTY)
    write_pkl(data, work / PKL)
    write_params(
        work,
        {
            "data.classes": [0, 1, 2],
            "shards.frames": 16,
            "shards.test_views": 3,
            "shards.workers": 1,
            "train.threads": 1,
            "train.batch_size": 2,
            "baseline.epochs": 1,
            "baseline.hidden": 8,
            "baseline.eval": {"clips": 2, "flip": False},
            "model.epochs": 1,
            "model.hidden": 8,
            "model.layers": 2,
            "model.eval": {"clips": 3, "flip": True},
        },
    )
    run_stages(
        work,
        "extract",
        "shards",
        *((stage, name) for name in MODELS for stage in ("train", "evaluate")),
    )
    return work


def evaluated(work: Path, name: str) -> pd.DataFrame:
    return pd.read_csv(work / "metrics" / name / "predictions.csv")


def test_the_views_are_really_averaged(work: Path) -> None:
    views = {
        name: json.loads((work / f"metrics/{name}.json").read_text())["views"] for name in MODELS
    }
    assert views == {"baseline": 2, "improved": 6}  # 3 views and their mirror images


@pytest.mark.parametrize("name", MODELS)
def test_the_test_split_gets_exactly_the_predictions_of_evaluate(work: Path, name: str) -> None:
    done = call_stage(
        "predict", work, f"models/{name}.pt", PKL, "--split", "test1", "--out", "p.csv"
    )
    assert done.returncode == 0, done.stderr
    got, want = pd.read_csv(work / "p.csv"), evaluated(work, name)
    assert list(got.columns) == list(want.columns)
    assert got["frame_dir"].tolist() == want["frame_dir"].tolist()
    same = ["actual", "predicted", "top3"]
    assert (got[same] == want[same]).all().all()
    np.testing.assert_allclose(got["confidence"], want["confidence"], rtol=0, atol=1e-6)
    assert len(want) == 18 and set(want["actual"]) == {"ApplyEyeMakeup", "ApplyLipstick", "Archery"}
    assert done.stderr.splitlines() == [
        f"warning: {PKL}: left out 1 clip with no person (first {EMPTY!r})",
        f"warning: {PKL}: left out 6 clips of labels the model was not trained on (3)",
    ]
    assert done.stdout == "predict: 18 clips -> p.csv\n"


def test_after_an_eval_only_change_predict_follows_the_projects_eval_params(
    work: Path, tmp_path: Path
) -> None:
    """`dvc exp run -S model.eval.clips=1 -S model.eval.flip=false` re-evaluates the model
    without retraining it: predict, with no --views or --flip, takes the eval params that the
    project's params.yaml now holds, as evaluate did, not the model file's (3 views, flipped)."""
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    config = yaml.safe_load((copy / "params.yaml").read_text())
    config["model"]["eval"] = {"clips": 1, "flip": False}
    (copy / "params.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    run_stages(copy, ("evaluate", "improved"))
    done = call_stage(
        "predict", copy, "models/improved.pt", PKL, "--split", "test1", "--out", "p.csv"
    )
    assert done.returncode == 0, done.stderr
    got, want = pd.read_csv(copy / "p.csv"), evaluated(copy, "improved")
    assert got["predicted"].tolist() == want["predicted"].tolist()
    np.testing.assert_allclose(got["confidence"], want["confidence"], rtol=0, atol=1e-6)
    assert not np.allclose(want["confidence"], evaluated(work, "improved")["confidence"])
    model = Predictor.load(copy / "models/improved.pt", device="cpu")
    assert (model.views, model.flip) == (1, False)
    elsewhere = tmp_path / "improved.pt"  # a model file outside a project: as it was trained
    shutil.copy2(copy / "models/improved.pt", elsewhere)
    model = Predictor.load(elsewhere, device="cpu")
    assert (model.views, model.flip) == (3, True)


def test_other_views_and_flips_as_evaluate_would_average_them(work: Path) -> None:
    """--views and --flip: what evaluate gives after `dvc exp run -S model.eval...`."""
    done = call_stage(
        "predict",
        work,
        "models/improved.pt",
        PKL,
        "--split",
        "test1",
        "--views",
        "1",
        "--no-flip",
        "--out",
        "one.csv",
    )
    assert done.returncode == 0, done.stderr
    predictor = Predictor.load(work / "models/improved.pt", device="cpu")
    test = ShardSet(work / "data/shards", "test")
    probs = inference.predict(
        predictor.model,
        test,
        predictor.checkpoint.config,
        torch.device("cpu"),
        2,
        views=1,
        flip=False,
    )
    got = pd.read_csv(work / "one.csv")
    np.testing.assert_allclose(got["confidence"], probs.max(1), rtol=0, atol=1e-6)
    assert not np.allclose(got["confidence"], evaluated(work, "improved")["confidence"])


def test_json_output_top_k_and_every_clip_of_the_pickle(work: Path) -> None:
    done = call_stage("predict", work, "models/improved.pt", PKL, "--out", "all.json", "--top", "2")
    assert done.returncode == 0, done.stderr
    rows = json.loads((work / "all.json").read_text())
    assert len(rows) == 3 * 8 * 2  # every clip of labels 0-2, train and test; none with no person
    assert set(rows[0]) == {"frame_dir", "actual", "predicted", "confidence", "top2"}
    by_name = {row["frame_dir"]: row for row in rows}
    for clip in evaluated(work, "improved").itertuples():
        row = by_name[clip.frame_dir]
        assert row["top2"] == clip.top3.split("|")[:2] and row["predicted"] == clip.predicted
        assert abs(row["confidence"] - clip.confidence) <= 1e-6


def test_without_out_a_short_table_on_stdout(work: Path) -> None:
    done = call_stage("predict", work, "models/baseline.pt", PKL)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["frame_dir", "actual", "predicted", "confidence", "top3"]
    assert len(lines) == 1 + predict.SHOWN + 1 and lines[-1].startswith("... 28 more clips")


def test_a_reader_that_stops_early_ends_it_quietly(work: Path) -> None:
    """`predict ... | head -1`: stdout's reader is gone when the table is written; the command
    stops as Unix tools do (exit 141, SIGPIPE's code), with no traceback."""
    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first line
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pipeline.predict", "models/baseline.pt", PKL],
            cwd=work,
            env=stage_env(),
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=300,
        )
    finally:
        os.close(write)
    assert done.returncode == 141, done.stderr
    assert all(line.startswith("warning: ") for line in done.stderr.splitlines()), done.stderr


def test_a_pickle_without_labels_is_predicted_whole(work: Path, tmp_path: Path) -> None:
    data = pickle.loads((work / PKL).read_bytes())
    for ann in data["annotations"]:
        del ann["label"]
    write_pkl(data, tmp_path / "new.pkl")
    done = call_stage(
        "predict",
        work,
        "models/improved.pt",
        str(tmp_path / "new.pkl"),
        "--split",
        "test1",
        "--out",
        str(tmp_path / "p.csv"),
    )
    assert done.returncode == 0, done.stderr
    got = pd.read_csv(tmp_path / "p.csv")
    assert "actual" not in got.columns and len(got) == 24  # label 3's clips too
    want = evaluated(work, "improved").set_index("frame_dir")
    mine = got.set_index("frame_dir").loc[want.index]
    np.testing.assert_allclose(mine["confidence"], want["confidence"], rtol=0, atol=1e-6)


def one_clip(work: Path) -> dict:
    """The first test clip of the pickle, as its annotation."""
    data = pickle.loads((work / PKL).read_bytes())
    return next(a for a in data["annotations"] if a["frame_dir"] == data["split"]["test1"][0])


def test_one_clip_as_npz_or_json_and_through_the_python_api(work: Path, tmp_path: Path) -> None:
    ann = one_clip(work)
    want = evaluated(work, "improved").set_index("frame_dir").loc[ann["frame_dir"]]
    fields = {
        "keypoint": ann["keypoint"],
        "keypoint_score": ann["keypoint_score"],
        "img_shape": np.array(ann["img_shape"]),
    }
    np.savez(tmp_path / "clip.npz", **fields)
    (tmp_path / "clip.json").write_text(json.dumps({k: v.tolist() for k, v in fields.items()}))
    for name in ("clip.npz", "clip.json"):
        done = call_stage(
            "predict",
            work,
            "models/improved.pt",
            str(tmp_path / name),
            "--out",
            str(tmp_path / f"{name}.csv"),
        )
        assert done.returncode == 0, done.stderr
        (row,) = pd.read_csv(tmp_path / f"{name}.csv").itertuples()
        assert (row.frame_dir, row.predicted) == ("clip", want["predicted"])
        assert abs(row.confidence - want["confidence"]) <= 1e-6

    predictor = Predictor.load(work / "models/improved.pt", device="cpu")
    probs = predictor.predict(ann["keypoint"], ann["keypoint_score"], ann["img_shape"])
    assert list(probs) == want["top3"].split("|") and sorted(probs) == sorted(predictor.classes)
    assert abs(probs[want["predicted"]] - want["confidence"]) <= 1e-6
    assert abs(sum(probs.values()) - 1) < 1e-5
    unscored = predictor.predict(ann["keypoint"].tolist(), None, ann["img_shape"])
    assert sorted(unscored) == sorted(probs) and unscored != probs  # scores of 1 feed the model


@requires_realdata
def test_real_clips(work: Path, tmp_path: Path) -> None:
    """Float16 arrays, extra keys and several persons, as the real pickle holds them."""
    real = REALDATA / "ucf101_mini_2d.pkl"
    done = call_stage(
        "predict", work, "models/improved.pt", str(real), "--out", str(tmp_path / "p.csv")
    )
    assert done.returncode == 0, done.stderr
    got = pd.read_csv(tmp_path / "p.csv")
    assert len(got) == 6 and set(got["actual"]) == {"ApplyEyeMakeup"}
    assert got["confidence"].between(1 / 3, 1).all()


def bad_inputs(work: Path, tmp: Path) -> list[tuple[list[str], str]]:
    """(arguments, the error line they must give)."""
    ann = one_clip(work)
    np.savez(tmp / "flat.npz", keypoint=ann["keypoint"][0], img_shape=[240, 320])
    np.savez(tmp / "noshape.npz", keypoint=ann["keypoint"])
    keypoint = np.ones((1, 5, 17, 2))
    keypoint[0, 2, 3] = np.nan
    nan = {"keypoint": keypoint.tolist(), "img_shape": [240, 320]}
    (tmp / "nan.json").write_text(json.dumps(nan))
    (tmp / "ragged.json").write_text(json.dumps({"keypoint": [[1, 2], [3]], "img_shape": [1, 1]}))
    data = make_dataset(labels=(5, 6))
    write_pkl(data, tmp / "other.pkl")
    write_pkl({"split": {}, "annotations": [ShellPayload(tmp / "MARKER")]}, tmp / "evil.pkl")
    (tmp / "model.pt").write_text("not a model")
    torch.save({"weights": torch.zeros(2)}, tmp / "weights.pt")
    m = "models/improved.pt"
    return [
        (
            [m, str(tmp / "flat.npz")],
            f"keypoint must have shape [persons, frames, 17, 2], found {ann['keypoint'][0].shape}",
        ),
        ([m, str(tmp / "noshape.npz")], "missing field 'img_shape' (expected keypoint"),
        ([m, str(tmp / "nan.json")], "clip 'nan': keypoint holds NaN or infinite coordinates"),
        ([m, str(tmp / "ragged.json")], "keypoint: expected an array of numbers"),
        ([str(tmp / "model.pt"), PKL], "refused to load the checkpoint"),
        ([str(tmp / "weights.pt"), PKL], "not a checkpoint of the train stage (no 'model')"),
        (
            [m, str(tmp / "other.pkl")],
            "none of its 24 clips has a label the model was trained on "
            "(its labels: 5, 6; the model's: 0, 1, 2)",
        ),
        (
            [m, PKL, "--split", "test9"],
            "split 'test9' not found (the file has ['test1', 'train1'])",
        ),
        ([m, str(tmp / "flat.npz"), "--split", "test1"], "only a pickle has splits"),
        ([m, str(tmp / "evil.pkl")], "not a usable pickle"),
        ([m, str(tmp / "absent.pkl")], "file not found"),
        ([m, PKL, "--top", "4"], "--top: expected an integer in [1, 3] (the model's classes)"),
        ([m, PKL, "--out", "p.txt"], "expected a file name ending in .csv or .json"),
        ([m, str(tmp / "nan.json"), "--out", str(tmp / "nan.json")], "an input: choose another"),
        ([m, PKL, "--device", "tpu"], "usage: argument --device: invalid choice"),
        ([m, PKL, "--views", "4"], "views: expected 1 to 3 views"),
    ]


def test_bad_input_is_one_line_and_exit_2_with_nothing_written(work: Path, tmp_path: Path):
    before = sorted(p.name for p in work.iterdir())
    for args, message in bad_inputs(work, tmp_path):
        out = [] if "--out" in args else ["--out", str(tmp_path / "out.csv")]
        line = error_line(call_stage("predict", work, *args, *out))
        assert message in line, (args, line)
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "MARKER").exists()
    assert sorted(p.name for p in work.iterdir()) == before


# --- export -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_files(work: Path) -> dict[str, Path]:
    for name in MODELS:
        done = call_stage(
            "export", work, f"models/{name}.pt", "--format", "onnx", "--out", f"{name}.onnx"
        )
        assert done.returncode == 0 and done.stderr == "", done.stderr
        assert done.stdout.startswith(f"export: models/{name}.pt -> {name}.onnx (onnx; 3 classes")
    return {name: work / f"{name}.onnx" for name in MODELS}


def views_of(predictor: Predictor, clips: list[clipfiles.Clip]) -> tuple[np.ndarray, np.ndarray]:
    """The exported model's inputs: each clip's test views and its length."""
    done = [predictor.preprocess(clip) for clip in clips]
    return np.stack([x[: predictor.views] for x, _ in done]), np.array([n for _, n in done])


def onnx_matches_torch(work: Path, onnx: Path, clips: list[clipfiles.Clip]) -> None:
    import onnxruntime as ort

    predictor = Predictor.load(work / f"models/{onnx.stem}.pt", device="cpu")
    x, lengths = views_of(predictor, clips)
    session = ort.InferenceSession(onnx, providers=["CPUExecutionProvider"])
    (got,) = session.run(["probabilities"], {"x": x, "lengths": lengths})
    np.testing.assert_allclose(got, predictor.probabilities(clips), rtol=0, atol=1e-4)
    meta = {k: json.loads(v) for k, v in session.get_modelmeta().custom_metadata_map.items()}
    ckpt = predictor.checkpoint
    assert meta["classes"] == ckpt.classes and meta["labels"] == [0, 1, 2]
    assert (meta["views"], meta["flip"]) == (predictor.views, predictor.flip)
    assert (meta["frames"], meta["persons"], meta["channels"]) == (16, 2, ["x", "y", "score"])
    assert meta["preprocessing"]["normalize"] == "body" and "hidden_joints" in meta["preprocessing"]
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert shapes["x"][2:] == [16, 2, 17, 3] and len(shapes["lengths"]) == 1


@pytest.mark.parametrize("name", MODELS)
def test_onnx_gives_torchs_probabilities(work: Path, onnx_files: dict, name: str) -> None:
    clips, _ = clipfiles.read(work / PKL, "test1")
    onnx_matches_torch(work, onnx_files[name], [c for c in clips if c.label != 3])


@requires_realdata
@pytest.mark.parametrize("name", MODELS)
def test_onnx_gives_torchs_probabilities_on_real_clips(work: Path, onnx_files, name) -> None:
    clips, _ = clipfiles.read(REALDATA / "ucf101_mini_2d.pkl")
    onnx_matches_torch(work, onnx_files[name], clips)


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated")
def test_torchscript_gives_torchs_probabilities_and_holds_the_contract(work: Path) -> None:
    done = call_stage(
        "export", work, "models/baseline.pt", "--format", "torchscript", "--out", "b.ts"
    )
    assert done.returncode == 0, done.stderr
    extra = {"metadata.json": ""}
    scripted = torch.jit.load(work / "b.ts", _extra_files=extra)
    predictor = Predictor.load(work / "models/baseline.pt", device="cpu")
    clips, _ = clipfiles.read(work / PKL, "test1")
    clips = [c for c in clips if c.label != 3]
    x, lengths = views_of(predictor, clips)
    got = scripted(torch.from_numpy(x), torch.from_numpy(lengths)).detach().numpy()
    np.testing.assert_allclose(got, predictor.probabilities(clips), rtol=0, atol=1e-5)
    meta = json.loads(extra["metadata.json"])
    assert meta["classes"] == predictor.classes and meta["views"] == 2 and meta["flip"] is False


def test_export_refuses_bad_input(work: Path) -> None:
    assert "refused to load the checkpoint" in error_line(
        call_stage("export", work, PKL, "--format", "onnx", "--out", "x.onnx")
    )
    assert "invalid choice: 'tflite'" in error_line(
        call_stage("export", work, "models/baseline.pt", "--format", "tflite", "--out", "x.tfl")
    )
    assert "the model file itself" in error_line(
        call_stage(
            "export", work, "models/baseline.pt", "--format", "onnx", "--out", "models/baseline.pt"
        )
    )
    assert not (work / "x.onnx").exists()
