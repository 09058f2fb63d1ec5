"""Hostile pickles and checkpoints are refused before their payload can run.

Every payload here would create a marker file if it ran; each is first shown to do so through
an unrestricted loader (so the test proves something), then shown to be refused, with no marker,
by the restricted unpickler, by the extract and fetch stages (exit 2, one line, no output) and,
for checkpoints, by torch.load(weights_only=True) in evaluate and in the resume logic.
"""

from __future__ import annotations

import ast
import io
import os
import pickle
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import (
    REPO,
    ShellPayload,
    call_stage,
    error_line,
    make_dataset,
    run_stage,
    write_params,
)

from pipeline.core.errors import PipelineError
from pipeline.files import pklio
from pipeline.learning import checkpoint, training

pytestmark = pytest.mark.slow  # stages in subprocesses or trained workspaces

MODULE_CODE = """
from pathlib import Path
import os
if os.environ.get("EVIL_IMPORT_MARKER"):
    Path(os.environ["EVIL_IMPORT_MARKER"]).touch()
def run(path):
    Path(path).touch()
"""


class FakeGlobal:
    """Pickled as a reference to `module.name`, which need not exist here."""

    def __init__(self, module: str, name: str) -> None:
        self.module, self.name = module, name

    def __call__(self, *args: Any) -> None:  # pickle's save_reduce wants a callable
        raise AssertionError("never called")


class Call:
    """Pickled as `func(*args)`: what unpickling it would call."""

    def __init__(self, func: Any, *args: Any) -> None:
        self.func, self.args = func, args

    def __call__(self, *args: Any) -> None:
        raise AssertionError("never called")

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.func, self.args)


class HostilePickler(pickle._Pickler):  # the pure-Python pickler lets FakeGlobal be saved
    dispatch = dict(pickle._Pickler.dispatch)

    def save_fake_global(self, obj: FakeGlobal) -> None:
        if self.proto >= 4:  # STACK_GLOBAL, as modern pickles name globals
            self.save(obj.module)
            self.save(obj.name)
            self.write(pickle.STACK_GLOBAL)
        else:  # GLOBAL, as protocol 0-3 pickles do
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[FakeGlobal] = save_fake_global


def dumps(obj: Any, protocol: int) -> bytes:
    buffer = io.BytesIO()
    HostilePickler(buffer, protocol=protocol).dump(obj)
    return buffer.getvalue()


def payloads(marker: Path) -> dict[str, tuple[str, Any]]:
    """name -> (the global the loader must refuse first, the object to pickle)."""
    m = str(marker)
    g = FakeGlobal
    touch_code = f"open({m!r}, 'w').close()"
    return {
        "os.system": ("os.system", Call(g("os", "system"), f"touch {m}")),
        "posix.system": ("posix.system", Call(g("posix", "system"), f"touch {m}")),
        "nt.system": ("nt.system", Call(g("nt", "system"), f"touch {m}")),
        "subprocess.Popen": ("subprocess.Popen", Call(g("subprocess", "Popen"), ["touch", m])),
        "subprocess.check_call": (
            "subprocess.check_call",
            Call(g("subprocess", "check_call"), ["touch", m]),
        ),
        "builtins.eval": ("builtins.eval", Call(g("builtins", "eval"), touch_code)),
        "builtins.exec": ("builtins.exec", Call(g("builtins", "exec"), touch_code)),
        "importlib.import_module": (
            "importlib.import_module",
            Call(g("importlib", "import_module"), "evil_payload_mod"),
        ),
        "builtins.getattr": (
            "builtins.getattr",
            Call(
                Call(g("builtins", "getattr"), Call(g("builtins", "__import__"), "os"), "system"),
                f"touch {m}",
            ),
        ),
        "made-up module": ("evil_made_up_mod.run", Call(g("evil_made_up_mod", "run"), m)),
        "the pipeline's own writer": (
            "pipeline.files.atomic.write_text",
            Call(g("pipeline.files.atomic", "write_text"), m, "x"),
        ),
    }


NAMES = list(payloads(Path("m")))


@pytest.fixture
def evil_modules(tmp_path, monkeypatch) -> Path:
    """Two importable modules that create the marker: evil_payload_mod on import (marker path
    from $EVIL_IMPORT_MARKER), evil_made_up_mod.run(path) when called. Made importable here
    and, through PYTHONPATH, in stage subprocesses."""
    folder = tmp_path / "modules"
    folder.mkdir()
    (folder / "evil_payload_mod.py").write_text(MODULE_CODE)
    (folder / "evil_made_up_mod.py").write_text(MODULE_CODE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", str(folder))
    for name in ("evil_payload_mod", "evil_made_up_mod"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return folder


def place(payload: Any, where: str) -> Any:
    """The payload as the whole pickle, or deep inside an otherwise valid dataset."""
    if where == "whole file":
        return payload
    data = make_dataset(labels=(0, 1), groups=range(1, 5), test_groups=(1,), clips_per_group=1)
    data["annotations"][-1]["keypoint"] = payload  # after every other clip has been read
    return data


def marker_appears(marker: Path, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while not marker.exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.parametrize("name", NAMES)
def test_each_payload_really_runs_when_loaded_without_restriction(
    tmp_path, evil_modules, monkeypatch, name
):
    """Sanity check of the payloads themselves: plain pickle.loads creates the marker."""
    marker = tmp_path / "MARKER"
    monkeypatch.setenv("EVIL_IMPORT_MARKER", str(marker))
    if name == "nt.system":  # Windows' os module: stand in for it on this platform
        monkeypatch.setitem(sys.modules, "nt", types.SimpleNamespace(system=os.system))
    _, payload = payloads(marker)[name]
    pickle.loads(dumps(payload, protocol=2))
    assert marker_appears(marker, wait=30), f"the {name} payload does not work"


@pytest.mark.parametrize("where", ["whole file", "inside an annotation"])
@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("name", NAMES)
def test_load_pickle_refuses_every_global_and_the_payload_never_runs(
    tmp_path, evil_modules, monkeypatch, name, protocol, where
):
    marker = tmp_path / "MARKER"
    monkeypatch.setenv("EVIL_IMPORT_MARKER", str(marker))
    refused, payload = payloads(marker)[name]
    path = tmp_path / "evil.pkl"
    path.write_bytes(dumps(place(payload, where), protocol))
    with pytest.raises(PipelineError) as excinfo:
        pklio.load_pickle(path)
    text = str(excinfo.value)
    assert text == (
        f"{path}: not a usable pickle: refused to load global {refused} "
        "(only numpy arrays and plain containers are allowed)"
    )
    assert not marker_appears(marker, wait=0.1 if "Popen" in name else 0)


@pytest.mark.parametrize("stage", ["extract", "fetch"])
@pytest.mark.parametrize("name", NAMES)
def test_stages_refuse_a_hostile_pickle_with_exit_2_and_no_output(
    tmp_path, evil_modules, monkeypatch, stage, name
):
    """In this process, for every payload; a present data.pkl is validated by fetch too."""
    marker = tmp_path / "MARKER"
    monkeypatch.setenv("EVIL_IMPORT_MARKER", str(marker))
    refused, payload = payloads(marker)[name]
    work = tmp_path / "work"
    (work / "data" / "raw").mkdir(parents=True)
    pkl = work / "data" / "raw" / "ucf101_2d.pkl"
    pkl.write_bytes(dumps(place(payload, "inside an annotation"), 4))
    write_params(work, {"data.source": "ucf101", "data.url": "http://127.0.0.1:9/never"})
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    result = call_stage(stage, work)
    line = error_line(result)
    assert line == (
        f"error: data/raw/ucf101_2d.pkl: not a usable pickle: refused to load global {refused} "
        "(only numpy arrays and plain containers are allowed)"
    )
    assert result.stdout == ""
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == before  # nothing written
    assert not marker_appears(marker, wait=0.1 if "Popen" in name else 0)


@pytest.mark.parametrize(
    ("stage", "name"),
    [("extract", "os.system"), ("extract", "importlib.import_module"), ("fetch", "builtins.exec")],
)
def test_stage_subprocesses_refuse_a_hostile_pickle(
    tmp_path, evil_modules, monkeypatch, stage, name
):
    marker = tmp_path / "MARKER"
    monkeypatch.setenv("EVIL_IMPORT_MARKER", str(marker))
    refused, payload = payloads(marker)[name]
    (tmp_path / "data.pkl").write_bytes(dumps(place(payload, "inside an annotation"), 2))
    write_params(tmp_path, {"data.source": "ucf101", "data.pkl": "data.pkl"})
    result = run_stage(stage, tmp_path, timeout=60)
    line = error_line(result)
    prefix = "error: data.pkl: not a usable pickle: refused to load global"
    assert line.startswith(f"{prefix} {refused}")
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.pkl", "modules", "params.yaml"]


# --- one loader for every pickle -----------------------------------------------------------------


def pickle_reads(tree: ast.AST) -> list[str]:
    """Every way a module could read a pickle other than through pklio's restricted loader."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in (
            "pickle",
            "_pickle",
            "dill",
            "cloudpickle",
            "joblib",
            "shelve",
        ):
            names = {a.name for a in node.names}
            if names - {"dump", "dumps", "PicklingError", "UnpicklingError", "HIGHEST_PROTOCOL"}:
                found.append(f"from {node.module} import {sorted(names)}")
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in ("dill", "cloudpickle", "joblib", "shelve", "marshal"):
                    found.append(f"import {alias.name}")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            owner, attr = node.value.id, node.attr
            if owner in ("pickle", "_pickle") and attr in (
                "load",
                "loads",
                "Unpickler",
                "_Unpickler",
            ):
                found.append(f"{owner}.{attr}")
            if attr in ("read_pickle", "add_safe_globals", "safe_globals"):
                found.append(f"{owner}.{attr}")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            keywords = {k.arg: k.value for k in node.keywords}
            if node.func.attr == "load" and getattr(node.func.value, "id", None) == "torch":
                weights_only = keywords.get("weights_only")
                if not (isinstance(weights_only, ast.Constant) and weights_only.value is True):
                    found.append("torch.load without weights_only=True")
            allow = keywords.get("allow_pickle")
            if allow is not None and not (isinstance(allow, ast.Constant) and allow.value is False):
                found.append(f"{node.func.attr}(allow_pickle=...)")
    return found


def test_the_checker_would_notice_a_second_pickle_reader():
    code = """
import pickle, numpy as np, torch, pandas as pd
from pickle import loads

pickle.load(f)
class U(pickle.Unpickler): pass
class V(pickle._Unpickler): pass
torch.load(p)
torch.load(p, weights_only=False)
np.load(p, allow_pickle=True)
pd.read_pickle(p)
"""
    assert len(pickle_reads(ast.parse(code))) == 8


def test_no_module_but_the_unpickler_reads_pickles_and_torch_load_is_weights_only():
    files = sorted((REPO / "pipeline").rglob("*.py"))
    assert len(files) > 10
    offenders = {}
    for path in files:
        found = pickle_reads(ast.parse(path.read_text(), str(path)))
        if path.name == "unpickler.py":  # the one place: C's unpickler, after the scan
            found = [f for f in found if f != "pickle.Unpickler"]
        if found:
            offenders[str(path.relative_to(REPO))] = found
    assert offenders == {}
    text = (REPO / "pipeline" / "files" / "unpickler.py").read_text()
    assert text.count("pickle.Unpickler") == 1 and "pickle._Unpickler" not in text
    assert "class _Loader(pickle.Unpickler)" in text
    # the loader runs only after the scan has passed the whole file
    load = text[text.index("    def load(self)") :]
    assert load.index("self._scan(") < load.index("_Loader(")


def test_the_project_has_no_other_pickle_reader_by_grep():
    """A plain-text backstop for the AST check: the raw strings that read pickles."""
    command = [
        "grep",
        "-rnE",
        r"pickle\.(load|loads|_?Unpickler)\b|allow_pickle=True|read_pickle",
        str(REPO / "pipeline"),
        "--include=*.py",
    ]
    if shutil.which("grep") is None:
        pytest.skip("no grep")
    lines = subprocess.run(command, capture_output=True, text=True, timeout=30).stdout.splitlines()
    assert [line for line in lines if "unpickler.py" not in line] == []
    assert len([line for line in lines if "unpickler.py" in line]) == 1


# --- checkpoints ----------------------------------------------------------------------------------


class Sneaky:
    """A custom class instance: unpickling it calls __setstate__, which creates the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __setstate__(self, state: dict[str, Any]) -> None:
        Path(state["marker"]).touch()


def hostile_checkpoints(marker: Path) -> dict[str, Any]:
    good = {key: 0 for key in checkpoint.KEYS} | {"model": {"w": torch.zeros(2)}}
    return {
        "os.system payload": {**good, "extra": ShellPayload(marker)},
        "custom class instance": {**good, "config": Sneaky(marker)},
        "function reference": {**good, "hook": os.system},
    }


@pytest.mark.parametrize("kind", ["os.system payload", "custom class instance"])
def test_checkpoint_payloads_really_run_without_weights_only(tmp_path, kind):
    marker = tmp_path / "MARKER"
    torch.save(hostile_checkpoints(marker)[kind], tmp_path / "m.pt")
    torch.load(tmp_path / "m.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", list(hostile_checkpoints(Path("m"))))
def test_load_checkpoint_refuses_more_than_tensors(tmp_path, kind):
    marker = tmp_path / "MARKER"
    path = tmp_path / "m.pt"
    torch.save(hostile_checkpoints(marker)[kind], path)
    with pytest.raises(PipelineError, match=r"refused to load the checkpoint \(") as excinfo:
        checkpoint.load(path)
    text = str(excinfo.value)
    assert text.startswith(f"{path}: ") and "\n" not in text
    assert "False" not in text and "add_safe_globals" not in text  # no advice to load unsafely
    refused = "test_security.Sneaky" if kind == "custom class instance" else "posix.system"
    assert f"GLOBAL {refused} " in text  # torch's line naming it, then what to run
    assert text.endswith("); retrain it with `dvc repro train@m`")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (torch.zeros(3), "not a checkpoint of the train stage (no 'model')"),
        ({"model": {}}, "not a checkpoint of the train stage (no 'config')"),
        (b"garbage", "refused to load the checkpoint ("),
    ],
)
def test_load_checkpoint_names_a_file_that_is_no_train_checkpoint(tmp_path, content, expected):
    path = tmp_path / "m.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(PipelineError) as excinfo:
        checkpoint.load(path)
    assert str(excinfo.value).startswith(f"{path}: {expected}")


def test_evaluate_stage_exits_2_on_a_hostile_checkpoint(tmp_path):
    marker = tmp_path / "MARKER"
    write_params(tmp_path, {"train.device": "cpu"})
    (tmp_path / "models").mkdir()
    torch.save(hostile_checkpoints(marker)["os.system payload"], tmp_path / "models/improved.pt")
    result = run_stage("evaluate", tmp_path, "improved", timeout=90)
    line = error_line(result)
    assert line.startswith("error: models/improved.pt: refused to load the checkpoint (")
    assert "posix.system" in line
    assert not marker.exists()
    assert not (tmp_path / "metrics").exists()


@pytest.mark.parametrize("kind", ["os.system payload", "custom class instance", "not a dict"])
def test_a_hostile_resume_file_is_ignored_and_never_runs(tmp_path, kind):
    """Training starts over rather than loading a resume file that needs more than tensors."""
    marker = tmp_path / "MARKER"
    path = tmp_path / "improved.resume.pt"
    if kind == "not a dict":
        torch.save([1, 2], path)
    else:
        payload = ShellPayload(marker) if kind == "os.system payload" else Sneaky(marker)
        torch.save({"fingerprint": "k", "epoch": 3, "extra": payload}, path)
    assert training.restore(path.read_bytes(), "k") is None
    assert not marker.exists()
    torch.save({"fingerprint": "k", "epoch": 3}, path)  # a plain one with the right key loads
    assert training.restore(path.read_bytes(), "k") == {"fingerprint": "k", "epoch": 3}
