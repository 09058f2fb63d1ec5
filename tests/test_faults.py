"""Bad input a hostile but realistic user gives the stages (issue 15, items 4-7 and 12).

Each row of CASES is one fault: how to set it up in a copy of a small workspace that was
extracted, sharded, trained and evaluated once per module, the stage command to run, the exit
code, and a regex the last stderr line must match (it names the file or key at fault). Every
row also checks that the output holds no traceback, that stderr is that one line, and, when
the stage fails, that every earlier output is left byte for byte as it was. Rows marked
`process` run `python -m pipeline.<stage>` as a real process; the others call the same main()
in this process, which is much faster. Faults of the environment (unwritable folders, kills,
Ctrl-C, damaged intermediates) are in tests/test_faults_env.py.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from conftest import (
    REALDATA,
    call_stage,
    make_dataset,
    requires_realdata,
    run_stage,
    run_stages,
    ucf_name,
    write_params,
    write_pkl,
)

from pipeline.files import clipfiles
from pipeline.learning import runtime, training

PKL = "data/raw/tiny.pkl"
TINY = {
    "data.pkl": PKL,
    "data.classes": "all",
    "shards.frames": 16,
    "shards.persons": 1,
    "shards.test_views": 2,
    "shards.workers": 1,
    "train.device": "cpu",
    "train.threads": 1,
    "train.batch_size": 8,
    "baseline.hidden": 32,
    "baseline.epochs": 1,
    "model.hidden": 8,
    "model.layers": 2,
    "model.epochs": 1,
    "model.eval.clips": 2,
}


def tiny_dataset(labels: tuple[int, ...] = (0, 1)) -> dict[str, Any]:
    """24 clips of 2 classes: groups 1-2 are test, 3-6 train (one is held out for val)."""
    return make_dataset(labels=labels, groups=range(1, 7), clips_per_group=2, frames=(16, 24))


def run_here(stage: str, ws: Path, *args: str) -> tuple[int, str, str]:
    """The stage's main() in this process, with `args` as its command line."""
    result = call_stage(stage, ws, *args)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workspace with a subset, shards, both models trained (1 epoch) and evaluated."""
    ws = tmp_path_factory.mktemp("faults") / "trained"
    write_pkl(tiny_dataset(), ws / PKL)
    write_params(ws, TINY)
    run_stages(
        ws,
        "extract",
        "shards",
        ("train", "baseline"),
        ("train", "improved"),
        ("evaluate", "baseline"),
        ("evaluate", "improved"),
    )
    return ws


# --- how each case changes the workspace ----------------------------------------------------------

Setup = Callable[[Path], None]


def params(**overrides: Any) -> Setup:
    """params.yaml with these dotted keys (`__` for `.`) changed from the workspace's."""
    return lambda ws: write_params(
        ws, {**TINY, **{k.replace("__", "."): v for k, v in overrides.items()}}
    )


def params_text(old: bytes, new: bytes) -> Setup:
    """params.yaml with bytes `old` replaced by `new`, for what YAML itself reads oddly."""

    def setup(ws: Path) -> None:
        path = ws / "params.yaml"
        assert old in path.read_bytes()
        path.write_bytes(path.read_bytes().replace(old, new, 1))

    return setup


def params_folder(ws: Path) -> None:
    (ws / "params.yaml").unlink()
    (ws / "params.yaml").mkdir()


def label_map(text: str) -> Setup:
    def setup(ws: Path) -> None:
        (ws / "labels.txt").write_text(text)
        write_params(ws, {**TINY, "data.label_map": "labels.txt"})

    return setup


def dataset(change: Callable[[dict[str, Any]], None], labels: tuple[int, ...] = (0, 1)) -> Setup:
    """data.pkl replaced by the tiny dataset after `change`."""

    def setup(ws: Path) -> None:
        data = tiny_dataset(labels)
        change(data)
        write_pkl(data, ws / PKL)

    return setup


def only_in_test(label: int) -> Callable[[dict[str, Any]], None]:
    def change(data: dict[str, Any]) -> None:
        labels = {a["frame_dir"]: a["label"] for a in data["annotations"]}
        data["split"]["train1"] = [n for n in data["split"]["train1"] if labels[n] != label]

    return change


def scores_zero(data: dict[str, Any]) -> None:
    for ann in data["annotations"]:
        ann["keypoint_score"][:] = 0


def no_person_in_test(data: dict[str, Any]) -> None:
    for ann in data["annotations"]:
        if ann["frame_dir"] in data["split"]["test1"]:
            ann["keypoint"], ann["keypoint_score"] = ann["keypoint"][:0], ann["keypoint_score"][:0]


def real_clips(ws: Path) -> None:
    write_params(
        ws, {**TINY, "data.pkl": str(REALDATA / "ucf101_mini_2d.pkl"), "data.val_by": "clip"}
    )


def checkpoint(name: str, change: Callable[[dict[str, Any]], Any]) -> Setup:
    """models/<name>.pt loaded, changed in place by `change` (or replaced by what it returns)."""

    def setup(ws: Path) -> None:
        path = ws / "models" / f"{name}.pt"
        ckpt = torch.load(path, weights_only=True)
        replaced = change(ckpt)
        torch.save(ckpt if replaced is None else replaced, path)

    return setup


def checkpoint_bytes(name: str, content: Callable[[bytes], bytes]) -> Setup:
    def setup(ws: Path) -> None:
        path = ws / "models" / f"{name}.pt"
        path.write_bytes(content(path.read_bytes()))

    return setup


def shards_rebuilt(**overrides: Any) -> Setup:
    """The shards built again with other params after the models were trained."""

    def setup(ws: Path) -> None:
        params(**overrides)(ws)
        code, _, err = run_here("shards", ws)
        assert code == 0, err

    return setup


def poison(ckpt: dict[str, Any]) -> None:
    ckpt["model"]["fc.weight"][0, 0] = float("nan")


# --- issue 24: input that asks for too much, special files, odd values -----------------------

CLIP = ucf_name(0, 1, 1)  # a clip of tiny_dataset
KEYPOINT = np.random.default_rng(0).random((1, 12, 17, 2), np.float32) * 100


def written(name: str, content: Callable[[Path], None]) -> Setup:
    """A file `name` in the workspace, made by `content(path)`."""
    return lambda ws: content(ws / name)


def npz_fields(**fields: Any) -> Callable[[Path], None]:
    return lambda path: np.savez(path, **fields)


def npy_as_npz(path: Path) -> None:
    with open(path, "wb") as handle:
        np.save(handle, KEYPOINT)


def npz_claiming(shape: tuple[int, ...]) -> Callable[[Path], None]:
    """An .npz whose keypoint header claims `shape` while it holds 8 bytes."""

    def make(path: Path) -> None:
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header, {"descr": "<f4", "fortran_order": False, "shape": shape}
        )
        shape_npy = io.BytesIO()
        np.save(shape_npy, np.array([240, 320]))
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("keypoint.npy", header.getvalue() + bytes(8))
            archive.writestr("img_shape.npy", shape_npy.getvalue())

    return make


def zip_bomb(path: Path) -> None:
    """A 0.3 MB .npz whose keypoints unpack to 260 MiB of zeros (the limit is 256 MiB)."""
    count = (clipfiles.CLIP_LIMIT + (4 << 20)) >> 2
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("keypoint.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(
                member, {"descr": "<f4", "fortran_order": False, "shape": (count,)}
            )
            zeros = bytes(1 << 22)
            for _ in range(count * 4 // len(zeros)):
                member.write(zeros)


def sparse(size: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        with open(path, "wb") as handle:
            handle.truncate(size)  # a hole: no time or disk spent on its bytes

    return make


def symlink_to(target: str) -> Callable[[Path], None]:
    return lambda path: path.symlink_to(target)


def fifo(relative: str) -> Setup:
    """`relative` replaced by a FIFO with no writer: opening it to read would wait forever."""

    def setup(ws: Path) -> None:
        path = ws / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        os.mkfifo(path)

    return setup


def with_params(first: Setup, **overrides: Any) -> Setup:
    def setup(ws: Path) -> None:
        params(**overrides)(ws)
        first(ws)

    return setup


def huge_img_shape(data: dict[str, Any]) -> None:
    next(a for a in data["annotations"] if a["frame_dir"] == CLIP)["img_shape"] = (60000, 1)


def wide_img_shape(data: dict[str, Any]) -> None:
    """A side past what every reader of image sizes holds to (the subset's index.csv too)."""
    next(a for a in data["annotations"] if a["frame_dir"] == CLIP)["img_shape"] = (240, 2**40)


def long_clip(data: dict[str, Any]) -> None:
    ann = next(a for a in data["annotations"] if a["frame_dir"] == CLIP)
    ann["keypoint"] = np.resize(ann["keypoint"], (ann["keypoint"].shape[0], 3000, 17, 2))
    ann["keypoint_score"] = np.resize(ann["keypoint_score"], (ann["keypoint"].shape[0], 3000, 17))
    ann["total_frames"] = 3000


def params_padded(size: int) -> Setup:
    def setup(ws: Path) -> None:
        with open(ws / "params.yaml", "a") as handle:
            handle.write(("#" * 99 + "\n") * (size // 100))

    return setup


CORES = runtime.cores()
PREDICT = ("predict", "--top", "1", "models/baseline.pt")
RENDER = ("render", PKL, "--clips", CLIP, "--out", "gifs")
REGULAR_ONLY = r"expected a regular file, found {}; only regular files are read$"


# --- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    setup: Setup
    stage: tuple[str, ...]  # the module under pipeline/ and its arguments
    code: int
    last_line: str  # a regex for the last line on stderr (re.search)
    process: bool = False  # run as `python -m pipeline.<stage>`, not in this process
    slow: bool = False  # over a second: left out of `make test-fast`
    peak_mib: int | None = None  # the most memory (numpy's and Python's) the stage may take


RETRAIN_BASELINE = r"; retrain it with `dvc repro train@baseline`$"
RETRAIN_IMPROVED = r"; retrain it with `dvc repro train@improved`$"
TWO_LABELS_ONE_NAME = r"gives labels 0 and 1 the same class name '{}'; each class needs its own"
DIVERGED = (
    r"^error: params\.yaml: train improved diverged in epoch \d+, "
    r"(batch \d+ of \d+|validation after its last batch) \(loss (nan|inf|-inf)\): "
    r"lower model\.lr \(now 10\.0\); no model was saved$"
)

CASES = [
    # 4. class names
    Case(
        "class_pattern gives two labels one name",
        params(data__class_pattern="^(v)_"),
        ("extract",),
        2,
        r"^error: data/raw/tiny\.pkl: data\.class_pattern '\^\(v\)_' "
        + TWO_LABELS_ONE_NAME.format("v"),
    ),
    Case(
        "label map gives two labels one name",
        label_map("walk\nwalk\n"),
        ("extract",),
        2,
        r"^error: labels\.txt: the label map " + TWO_LABELS_ONE_NAME.format("walk"),
    ),
    Case(
        "a class only in test under classes: all",
        dataset(only_in_test(2), labels=(0, 1, 2)),
        ("extract",),
        0,
        r"^warning: data/raw/tiny\.pkl: label 2 \(4 clips\) appears only in split 'test1', "
        r"not in 'train1'; data\.classes: all takes the labels of train, so they are left out$",
    ),
    Case(
        "every keypoint score 0",
        dataset(scores_zero),
        ("extract",),
        0,
        r"^warning: data/raw/tiny\.pkl: 24 of 24 chosen clips have every keypoint score 0 "
        r"\(first '.*'\); .*shards\.min_score",
    ),
    # 5. params.yaml
    Case(
        "params.yaml is not UTF-8",
        params_text(b"data:\n", b"data: # caf\xe9\n"),
        ("extract",),
        2,
        r"^error: params\.yaml: not UTF-8 text \(byte 0xe9 on line 1\)$",
        process=True,
    ),
    Case(
        "params.yaml is a folder",
        params_folder,
        ("shards",),
        2,
        r"^error: params\.yaml: is a folder; expected the params file$",
        process=True,
    ),
    Case(
        "train.seed beyond 64 bits",
        params(train__seed=2**64),
        ("train", "baseline"),
        2,
        r"^error: params\.yaml: train\.seed: expected an integer in \[0, 4294967295\], "
        r"found 18446744073709551616$",
    ),
    Case(
        "data.seed beyond what sklearn takes",
        params(data__seed=2**40),
        ("extract",),
        2,
        r"^error: params\.yaml: data\.seed: expected an integer in \[0, 4294967295\], "
        r"found 1099511627776$",
    ),
    Case(
        "data.url without a host",
        params(data__source="ucf101", data__url="http:///x"),
        ("fetch",),
        2,
        r"^error: params\.yaml: data\.url: expected an http:// or https:// URL with a host name "
        r"\(this one has no host\), found 'http:///x'$",
    ),
    Case(
        "data.md5 digits left unquoted",
        params_text(b"md5: null", b"md5: 12345678901234567890123456789012"),
        ("fetch",),
        2,
        r"^error: params\.yaml: data\.md5: expected a 32-digit hex digest in quotes \(YAML read "
        r"these digits as a number\), found 12345678901234567890123456789012$",
    ),
    # 6. training that diverges (after an epoch or two, so a resume file existed)
    Case(
        "training diverges",
        params(model__lr=10.0, model__optimizer="sgd", model__epochs=5),
        ("train", "improved"),
        2,
        DIVERGED,
        process=True,
    ),
    # 7. checkpoints that do not fit their config or the shards
    Case(
        "checkpoint config narrower than its weights",
        checkpoint("baseline", lambda c: c["config"].update(hidden=16)),
        ("evaluate", "baseline"),
        2,
        r"^error: models/baseline\.pt: weight 'lstm\.weight_ih_l0' is \[128, 34\], its config "
        r"\(arch lstm, hidden 16, layers 1\) gives \[64, 34\]" + RETRAIN_BASELINE,
    ),
    Case(
        "checkpoint says lstm on conv weights",
        checkpoint("improved", lambda c: c["config"].update(arch="lstm")),
        ("evaluate", "improved"),
        2,
        r"^error: models/improved\.pt: weight 'lstm\.weight_ih_l0' is missing, though its "
        r"config \(arch lstm, hidden 8, layers 2\) needs it" + RETRAIN_IMPROVED,
    ),
    Case(
        "checkpoint config without streams",
        checkpoint("improved", lambda c: c["config"].pop("streams") and None),
        ("evaluate", "improved"),
        2,
        r"^error: models/improved\.pt: its config is not a valid model section \(model\.streams "
        r"is missing\)" + RETRAIN_IMPROVED,
    ),
    Case(
        "checkpoint arch bogus",
        checkpoint("improved", lambda c: c["config"].update(arch="x")),
        ("evaluate", "improved"),
        2,
        r"^error: models/improved\.pt: its config is not a valid model section \(model\.arch: "
        r"expected one of \['ctrgcn', 'lstm', 'stgcn', 'stgcnpp', 'tcn'\], found 'x'\)"
        + RETRAIN_IMPROVED,
    ),
    Case(
        "shards rebuilt with 2 persons after training on 1",
        shards_rebuilt(shards__persons=2),
        ("evaluate", "baseline"),
        2,
        r"^error: models/baseline\.pt: it was trained on shards with shards\.persons = 1, "
        r"data/shards/manifest\.json has 2" + RETRAIN_BASELINE,
    ),
    Case(
        "checkpoint of random bytes",
        checkpoint_bytes("baseline", lambda b: np.random.default_rng(0).bytes(len(b))),
        ("evaluate", "baseline"),
        2,
        r"^error: models/baseline\.pt: refused to load the checkpoint \(Unsupported operand \d+\)"
        + RETRAIN_BASELINE,
    ),
    Case(
        "checkpoint truncated",
        checkpoint_bytes("baseline", lambda b: b[: len(b) // 2]),
        ("evaluate", "baseline"),
        2,
        r"^error: models/baseline\.pt: refused to load the checkpoint \(the file is damaged or "
        r"truncated\)" + RETRAIN_BASELINE,
    ),
    Case(
        "checkpoint of the old format: weights alone",
        checkpoint("baseline", lambda c: c["model"]),
        ("evaluate", "baseline"),
        2,
        r"^error: models/baseline\.pt: not a checkpoint of the train stage \(no 'model'\)"
        + RETRAIN_BASELINE,
    ),
    Case(
        "checkpoint with NaN weights",
        checkpoint("baseline", poison),
        ("evaluate", "baseline"),
        2,
        r"^error: models/baseline\.pt: weight 'fc\.weight' holds NaN or infinite values \(its "
        r"training diverged\); retrain it with `dvc repro train@baseline` after lowering its lr$",
    ),
    # 12. degenerate data
    Case(
        "the 6 real clips are one class",
        real_clips,
        ("extract",),
        2,
        r"^error: .*/ucf101_mini_2d\.pkl: the train clips of the selection hold 1 class "
        r"\('ApplyEyeMakeup'\); a classifier needs 2 or more \(check data\.classes\)$",
    ),
    Case(
        "one chosen class",
        params(data__classes=[1]),
        ("extract",),
        2,
        r"^error: data/raw/tiny\.pkl: the train clips of the selection hold 1 class "
        r"\('ApplyLipstick'\); a classifier needs 2 or more \(check data\.classes\)$",
    ),
    Case(
        "no test clip left after the clips without persons",
        dataset(no_person_in_test),
        ("extract",),
        2,
        r"^error: data/raw/tiny\.pkl: the selection leaves no test clip \(8 clips with no person "
        r"were skipped; check data\.classes and splits\)$",
    ),
    # issue 24, 3. sizes asked for by the input, checked against a stated limit before use
    Case(
        "npz header claims 136 TiB",
        written("clip.npz", npz_claiming((2**40, 17, 2))),
        (*PREDICT, "clip.npz"),
        2,
        r"^error: clip\.npz: field 'keypoint': its header claims shape \(1099511627776, 17, 2\) "
        r"of float32 \(136 TiB\), more than the 136 bytes it holds$",
        peak_mib=16,
    ),
    Case(
        "npz zip bomb",
        written("clip.npz", zip_bomb),
        (*PREDICT, "clip.npz"),
        2,
        r"^error: clip\.npz: its arrays unpack to 260 MiB, over the limit of 256 MiB for one clip$",
        slow=True,  # 260 MiB to compress
        peak_mib=16,
    ),
    Case(
        "JSON clip is /dev/zero",
        written("clip.json", symlink_to("/dev/zero")),
        (*PREDICT, "clip.json"),
        2,
        r"^error: clip\.json: " + REGULAR_ONLY.format("a character device"),
        peak_mib=16,
    ),
    Case(
        "JSON clip of 33 MiB",
        written("clip.json", sparse(33 << 20)),
        (*PREDICT, "clip.json"),
        2,
        r"^error: clip\.json: the JSON clip is 33 MiB, over the limit of 32 MiB for such a file$",
        peak_mib=16,
    ),
    Case(
        "params.yaml is /dev/zero",
        lambda ws: ((ws / "params.yaml").unlink(), (ws / "params.yaml").symlink_to("/dev/zero")),
        ("extract",),
        2,
        r"^error: params\.yaml: " + REGULAR_ONLY.format("a character device"),
        peak_mib=16,
    ),
    Case(
        "img_shape wider than any image",
        dataset(wide_img_shape),
        ("extract",),
        2,
        rf"^error: {PKL}: clip '{CLIP}': img_shape must be \(height, width\), each in "
        r"1\.\.2147483648, found \(240, 1099511627776\)$",
        peak_mib=64,
    ),
    Case(
        "render of img_shape (60000, 1)",
        dataset(huge_img_shape),
        RENDER,
        2,
        rf"^error: {PKL}: clip '{CLIP}': img_shape \(60000, 1\) at --width 320 makes the image "
        r"320x19200000 pixels; the limit is 8192 pixels high$",
        peak_mib=64,
    ),
    Case(
        "render of more frames than a GIF holds",
        dataset(long_clip),
        RENDER,
        2,
        rf"^error: {PKL}: clip '{CLIP}': 3000 frames of 320x316 pixels make 303,360,000 pixels; "
        r"the limit for one GIF is 268,435,456: draw fewer with --frames \(or a smaller --width\)$",
        peak_mib=64,
    ),
    Case(
        "checkpoint asking for GiBs per clip",
        checkpoint("baseline", lambda c: c["shards"].update(frames=100000, test_views=100)),
        (*PREDICT, PKL),
        2,
        r"^error: models/baseline\.pt: its params ask for [\d.]+ GiB of memory per clip "
        r"\(shards\.frames 100000, shards\.test_views 100, eval\.clips 1, hidden 32\); the "
        r"limit is 1 GiB; retrain it with `dvc repro train@baseline` with smaller ones$",
        peak_mib=64,
    ),
    # issue 24, 4. special files: never replaced, never read
    Case(
        "predict --out onto a FIFO",
        fifo("out.csv"),
        (*PREDICT, PKL, "--out", "out.csv"),
        2,
        r"^error: out\.csv: expected a regular file or nothing at this output path, found a FIFO "
        r"\(named pipe\), which is never replaced; choose another path$",
    ),
    Case(
        "export --out onto a symlink to /dev/null",
        written("model.ts", symlink_to("/dev/null")),
        ("export", "models/baseline.pt", "--format", "torchscript", "--out", "model.ts"),
        2,
        r"^error: model\.ts: expected a regular file or nothing at this output path, found a "
        r"character device, which is never replaced; choose another path$",
    ),
    Case(
        "render --out holding a FIFO where a GIF goes",
        fifo(f"gifs/{CLIP}.gif"),
        RENDER,
        2,
        rf"^error: gifs/{CLIP}\.gif: expected a regular file or nothing at this output path, "
        r"found a FIFO \(named pipe\), which is never replaced; choose another path$",
    ),
    Case(
        "data.pkl is a FIFO",
        fifo(PKL),
        ("extract",),
        2,
        rf"^error: {PKL}: " + REGULAR_ONLY.format(r"a FIFO \(named pipe\)"),
        process=True,
        slow=True,
    ),
    Case(
        "params.yaml is a FIFO",
        fifo("params.yaml"),
        ("train", "baseline"),
        2,
        r"^error: params\.yaml: " + REGULAR_ONLY.format(r"a FIFO \(named pipe\)"),
        process=True,
        slow=True,
    ),
    Case(
        "the model is a FIFO",
        fifo("models/baseline.pt"),
        (*PREDICT, PKL),
        2,
        r"^error: models/baseline\.pt: " + REGULAR_ONLY.format(r"a FIFO \(named pipe\)"),
    ),
    Case(
        "the clip to predict is a FIFO",
        fifo("clip.npz"),
        (*PREDICT, "clip.npz"),
        2,
        r"^error: clip\.npz: " + REGULAR_ONLY.format(r"a FIFO \(named pipe\)"),
    ),
    Case(
        "the pickle to predict is a FIFO",
        fifo("in.pkl"),
        (*PREDICT, "in.pkl"),
        2,
        r"^error: in\.pkl: " + REGULAR_ONLY.format(r"a FIFO \(named pipe\)"),
    ),
    Case(
        "the label map is a FIFO",
        with_params(fifo("labels.txt"), data__label_map="labels.txt"),
        ("extract",),
        2,
        r"^error: labels\.txt: " + REGULAR_ONLY.format(r"a FIFO \(named pipe\)"),
    ),
    Case(
        "render --predictions is a FIFO",
        fifo("preds.csv"),
        (*RENDER, "--predictions", "preds.csv"),
        2,
        r"^error: preds\.csv: " + REGULAR_ONLY.format(r"a FIFO \(named pipe\)"),
    ),
    Case(
        "a shard is a FIFO",
        fifo("data/shards/test-00000.npy"),
        ("evaluate", "baseline"),
        2,
        r"^error: data/shards/test-00000\.npy: " + REGULAR_ONLY.format(r"a FIFO \(named pipe\)"),
    ),
    # issue 24, 6. params and odd values
    Case(
        "params.yaml gives a key twice",
        params_text(b"data:\n", b"data:\n  seed: 1\n"),
        ("extract",),
        2,
        r"^error: params\.yaml: not valid params: key 'seed' appears twice \(lines 2 and \d+\)$",
    ),
    Case(
        "params.yaml holds an integer of 5000 digits",
        params_text(b"md5: null", b"md5: " + b"9" * 5000),
        ("fetch",),
        2,
        r"^error: params\.yaml: not valid params: a number of more than 4300 digits$",
    ),
    Case(
        "params.yaml of 2 MiB",
        params_padded(2 << 20),
        ("extract",),
        2,
        r"^error: params\.yaml: the params file is 2(\.\d+)? MiB, over the limit of 1 MiB for "
        r"such a file$",
        peak_mib=16,
    ),
    Case(
        "render --fps 1e-9",
        lambda ws: None,
        (*RENDER, "--fps", "1e-9"),
        2,
        r"^error: usage: --fps: expected 0\.01 to 1000\.0 frames per second, found 1e-09 ",
    ),
    Case(
        "a 0-d img_shape",
        written("clip.npz", npz_fields(keypoint=KEYPOINT, img_shape=np.array(240))),
        (*PREDICT, "clip.npz"),
        2,
        r"^error: clip\.npz: img_shape: expected \[height, width\], found a 0-d value$",
    ),
    Case(
        "an .npz that is really a .npy",
        written("clip.npz", npy_as_npz),
        (*PREDICT, "clip.npz"),
        2,
        r"^error: clip\.npz: a single \.npy array, not an \.npz archive of named fields; save "
        r"the clip with np\.savez\(path, keypoint=\.\.\., img_shape=\.\.\.\)",
    ),
    Case(
        "train.threads: 1024",
        params(train__threads=1024),
        ("train", "baseline"),
        2,
        rf"^error: params\.yaml: train\.threads: expected 0 \(every core\) to {4 * CORES} \(4 "
        rf"per core of the {CORES} this process may use\), found 1024$",
    ),
    Case(
        "train.threads: 1024 in a model file",
        checkpoint("baseline", lambda c: c["train"].update(threads=1024)),
        (*PREDICT, PKL),
        2,
        rf"^error: models/baseline\.pt: train\.threads: expected 0 \(every core\) to "
        rf"{4 * CORES} \(4 per core of the {CORES} this process may use\), found 1024$",
    ),
    Case(
        "train.nproc far above the cores",
        params(train__nproc=4 * CORES + 1, train__batch_size=4 * CORES + 1),
        ("train", "baseline"),
        2,
        rf"^error: params\.yaml: train\.nproc: expected at most {4 * CORES} processes on CPU \(4 "
        rf"per core of the {CORES} this process may use\), found {4 * CORES + 1}$",
    ),
]


def marks(case: Case) -> list[pytest.MarkDecorator]:
    slow = case.slow or case.process  # a process of its own starts torch: over a second
    return [requires_realdata] * (case.setup is real_clips) + [pytest.mark.slow] * slow


@contextlib.contextmanager
def traced() -> Iterator[list[int]]:
    """The peak of memory allocated in the block (numpy reports its arrays to tracemalloc)."""
    peak = [0]
    tracemalloc.start()
    try:
        yield peak
        peak[0] = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def files(ws: Path) -> dict[str, bytes]:
    """Every file of the workspace but params.yaml (a case may edit it), by content: a failed
    stage must leave all of them, its training curves included, exactly as they were."""
    return {
        str(path.relative_to(ws)): path.read_bytes()
        for path in sorted(ws.rglob("*"))
        if path.is_file() and path.name != "params.yaml"
    }


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=marks(c)) for c in CASES])
def test_fault(trained: Path, tmp_path: Path, case: Case) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(trained, ws)
    case.setup(ws)
    before = files(ws)
    if case.process:
        result = run_stage(case.stage[0], ws, *case.stage[1:], timeout=120)
        code, out, err = result.returncode, result.stdout, result.stderr
    else:
        with traced() if case.peak_mib else contextlib.nullcontext([0]) as peak:
            code, out, err = run_here(case.stage[0], ws, *case.stage[1:])
        if case.peak_mib is not None:
            assert peak[0] < case.peak_mib << 20, f"took {peak[0] / 2**20:.0f} MiB"
    assert code == case.code, (out, err)
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err  # one line: the error, or the one warning
    assert re.search(case.last_line, lines[-1]), lines[-1]
    if code != 0:
        assert files(ws) == before  # the earlier outputs, byte for byte, and nothing new
        assert not list(ws.rglob("*.tmp")) and not list(ws.rglob(".*.tmp*"))


def test_a_diverging_run_keeps_no_resume_file_it_wrote(trained: Path, tmp_path: Path) -> None:
    """The diverging case above fails in a later epoch, after a resume file was written: the
    failed run removes it (resuming it under the same params would only diverge again)."""
    ws = tmp_path / "ws"
    shutil.copytree(trained, ws)
    params(model__lr=10.0, model__optimizer="sgd", model__epochs=5)(ws)
    written: list[int] = []
    save = training.save_atomic

    def spy(obj: Any, path: Path) -> None:
        written.append(obj["epoch"])
        save(obj, path)

    with contextlib.ExitStack() as stack:
        stack.callback(setattr, training, "save_atomic", save)
        training.save_atomic = spy
        code, _, err = run_here("train", ws, "improved")
    assert code == 2 and re.search(DIVERGED, err.splitlines()[-1]), err
    assert written, "the run diverged in epoch 1: it would not test the resume file"
    assert not (ws / "models" / "improved.resume.pt").exists()
    assert (ws / "models" / "improved.pt").read_bytes() == (
        trained / "models" / "improved.pt"
    ).read_bytes()
