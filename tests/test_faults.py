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
import re
import shutil
from collections.abc import Callable
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
    write_params,
    write_pkl,
)

from pipeline.learning import training

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


# --- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    setup: Setup
    stage: tuple[str, ...]  # the module under pipeline/ and its arguments
    code: int
    last_line: str  # a regex for the last line on stderr (re.search)
    process: bool = False  # run as `python -m pipeline.<stage>`, not in this process


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
        r"expected one of \['lstm', 'tcn', 'stgcn'\], found 'x'\)" + RETRAIN_IMPROVED,
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
]


def marks(case: Case) -> list[pytest.MarkDecorator]:
    return [requires_realdata] if case.setup is real_clips else []


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
        code, out, err = run_here(case.stage[0], ws, *case.stage[1:])
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
