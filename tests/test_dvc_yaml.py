"""dvc.yaml declares everything each stage reads, so DVC reruns exactly what changed.

A stage whose code imports a module that dvc.yaml does not list keeps stale results when that
module changes (training is deterministic, so a retrained model can hash the same and the
evaluation is skipped). These tests derive what each stage really uses, from its imports and
from the files it opens when it runs, and compare it with what dvc.yaml declares.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, call_stage, make_dataset, write_params, write_pkl

PIPELINE = REPO / "pipeline"
DVC_YAML = yaml.safe_load((REPO / "dvc.yaml").read_text())
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
# Files a stage may read that DVC must not track, and why.
UNDECLARED_READS = {
    "params.yaml": "DVC tracks the params each stage names, not the file",
    "models/baseline.resume.pt": "train's own resume state after a kill (gitignored, not a result)",
    "models/improved.resume.pt": "train's own resume state after a kill (gitignored, not a result)",
    **{
        f"models/stream-{stream}.resume.pt": "train's own resume state (gitignored)"
        for stream in ("joint", "bone", "motion", "bone_motion")
    },
    "labels.txt": "data.label_map: DVC tracks its name (a param), not its content; params.yaml "
    "and the README say to force extract after editing it",
}


# A `foreach` over a params mapping that is empty by default (pose.videos: no stage until you
# name a folder of videos) is checked with this example in it.
EXAMPLE_ITEMS = {"${pose.videos}": {"my_videos": "data/videos"}}


def params_value(reference: str) -> object:
    """The value of `${section.key}` in params.yaml."""
    node: object = PARAMS
    for key in reference.removeprefix("${").removesuffix("}").split("."):
        assert isinstance(node, dict), reference
        node = node[key]
    return node


def expand(stage: str, body: dict) -> dict[str, dict]:
    """A stage's definitions by name, `foreach` expanded the way DVC does: a dict's keys, or a
    list of names' names, are the stages' suffixes."""
    if "foreach" not in body:
        return {stage: body}
    text = yaml.safe_dump(body["do"])
    items = body["foreach"]
    if isinstance(items, str):  # ${section.key} of params.yaml
        items = EXAMPLE_ITEMS.get(items) or params_value(items)
    if isinstance(items, list):
        items = {item: item for item in items}
    return {
        f"{stage}@{key}": yaml.safe_load(text.replace("${key}", key).replace("${item}", item))
        for key, item in items.items()
    }


STAGES = {
    name: stage
    for key, body in DVC_YAML["stages"].items()
    for name, stage in expand(key, body).items()
}


def paths(entries: list) -> set[str]:
    """Paths of a deps/outs/metrics list (an entry may be `path` or `{path: options}`)."""
    return {entry if isinstance(entry, str) else next(iter(entry)) for entry in entries or []}


def code_files(deps: set[str]) -> set[str]:
    """The pipeline's .py files among deps, a folder dep standing for every .py file in it."""
    found = set()
    for dep in deps:
        if dep.startswith("pipeline/"):
            folder = REPO / dep
            inside = folder.rglob("*.py") if folder.is_dir() else [folder]
            found |= {str(path.relative_to(REPO)) for path in inside}
    return found


def module_file(module: str) -> Path:
    """The file of a dotted module under pipeline/ (`core.errors`, or `models`, a package)."""
    path = PIPELINE.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def is_module(module: str) -> bool:
    path = PIPELINE.joinpath(*module.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def has_code(init: Path) -> bool:
    """A package's __init__.py runs on every import below it; a docstring alone changes nothing."""
    body = ast.parse(init.read_text()).body
    return any(not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant)) for n in body)


def module_imports(module: str) -> set[str]:
    """The `pipeline.*` modules one module imports, dotted below `pipeline` (itself excluded)."""
    tree = ast.parse(module_file(module).read_text())
    found = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] == ("pipeline")
        ):
            package = node.module.removeprefix("pipeline").removeprefix(".")
            for alias in node.names:  # `from pipeline.core import params`: a module or a name
                name = f"{package}.{alias.name}".lstrip(".")
                found.add(name if is_module(name) else package)
        elif isinstance(node, ast.Import):
            found |= {
                a.name.removeprefix("pipeline.")
                for a in node.names
                if a.name.startswith("pipeline.")
            }
    found.discard("")
    return found - {module}


def closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(module_imports(name))
    return seen


def code_deps(module: str) -> set[str]:
    """The files that importing `module` runs: its closure, and each package __init__ with code."""
    files = set()
    for name in closure(module):
        files.add(module_file(name))
        parts = name.split(".")
        for depth in range(len(parts)):  # pipeline/__init__.py, pipeline/core/__init__.py, ...
            init = PIPELINE.joinpath(*parts[:depth], "__init__.py")
            if init.is_file() and has_code(init):
                files.add(init)
    return {str(path.relative_to(REPO)) for path in files}


def stage_module(stage: dict) -> str:
    return stage["cmd"].split()[2].removeprefix("pipeline.")  # python -m pipeline.<module>


# Modules a stage imports at run time, not in its import statements: pose the estimator a param
# names (the default's), check the backbone registry (`params.backbones()`, which the data
# stages, importing params too, never call).
IMPORTED_AT_RUN = {
    "pose": [PARAMS["pose"]["estimator"].split(":")[0].removeprefix("pipeline.")],
    "check": ["models"],
}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_the_code_deps_of_a_stage_are_exactly_what_it_imports(name: str) -> None:
    stage = STAGES[name]
    module = stage_module(stage)
    needed = set().union(code_deps(module), *map(code_deps, IMPORTED_AT_RUN.get(module, [])))
    listed = code_files(paths(stage["deps"]))
    missing = sorted(needed - listed)
    assert not missing, f"dvc.yaml: stage {name} imports but does not list {missing}"
    # a module listed but not used reruns the stage for nothing
    assert not listed - needed, f"dvc.yaml: stage {name} lists unused {sorted(listed - needed)}"


def test_check_imports_the_backbone_registry_as_it_runs() -> None:
    """What IMPORTED_AT_RUN says of `check`: it reads the model sections through the registry,
    which none of its import statements names."""
    code = """
import sys
from pipeline import check
check.main([])
print(sorted(m for m in sys.modules if m.startswith("pipeline.models")))
"""
    assert "models" not in closure("check")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "'pipeline.models.registry'" in done.stdout, done.stdout


def test_the_closure_catches_a_deleted_dep_line() -> None:
    """The check above is not vacuous: drop one listed module, or the models folder, and it
    reports what is missing."""
    stage = STAGES["evaluate@improved"]
    listed = code_files(paths(stage["deps"]) - {"pipeline/learning/inference.py"})
    needed = code_deps("evaluate")
    assert needed - listed == {"pipeline/learning/inference.py"}
    assert needed - code_files(paths(stage["deps"]) - {"pipeline/models"}) == {
        str(path.relative_to(REPO)) for path in (PIPELINE / "models").glob("*.py")
    }


@pytest.mark.parametrize(("key", "section"), [("baseline", "baseline"), ("improved", "model")])
def test_train_reads_its_whole_section_but_eval(key: str, section: str) -> None:
    train = set(STAGES[f"train@{key}"]["params"])
    assert train == {"train"} | {f"{section}.{k}" for k in PARAMS[section] if k != "eval"}
    assert f"{section}.eval" in STAGES[f"evaluate@{key}"]["params"]


def test_extract_reads_the_data_section_but_what_only_fetch_reads() -> None:
    fetch_only = {"source", "url", "md5", "sha256"}  # how the pickle is got, not what it holds
    assert set(STAGES["extract"]["params"]) == {f"data.{k}" for k in PARAMS["data"]} - {
        f"data.{k}" for k in fetch_only
    }


def test_pose_reads_its_whole_section_but_videos() -> None:
    """Every setting that changes a video's poses or the pickle is a param of the pose stage
    (`videos` is its folder, a dep), and is what `pose --params` reads."""
    from pipeline.pose import OPTIONS

    listed = set(STAGES["pose@my_videos"]["params"])
    assert listed == {f"pose.{k}" for k in PARAMS["pose"] if k != "videos"}
    assert {f"pose.{k}" for k in [*OPTIONS, "options"]} == listed
    assert "data/videos" in paths(STAGES["pose@my_videos"]["deps"])


# --- what the stages open when they run --------------------------------------------------------

_opened: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and isinstance(args[0], str | Path):
        mode, flags = args[1], args[2]
        writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND
        if isinstance(mode, str):
            writing = any(flag in mode for flag in "wax+")
        else:  # os.open: no mode string, only flags
            writing = bool(flags & writes)
        if not writing:
            _opened.append(str(args[0]))


sys.addaudithook(_audit)  # hooks cannot be removed: this one records only while `_opened` is set


def reads_of(stage: str, cwd: Path, *argv: str) -> set[str]:
    """Files under cwd that one in-process stage run opened for reading, relative to cwd."""
    global _opened
    _opened = []
    try:
        result = call_stage(stage, cwd, *argv)
    finally:
        opened, _opened = _opened, None
    assert result.returncode == 0, result.stderr
    found = set()
    for path in opened:
        full = (cwd / path).resolve()
        if not full.is_relative_to(cwd.resolve()):
            continue
        found.add(str(full.relative_to(cwd.resolve())))
    return found


def declared(path: str, stage: dict) -> bool:
    """Whether `path` lies in one of the stage's deps or outs (a file, or a folder holding it)."""
    listed = paths(stage["deps"]) | paths(stage.get("outs")) | paths(stage.get("metrics"))
    return any(path == item or path.startswith(item.rstrip("/") + "/") for item in listed)


@pytest.mark.slow
def test_every_file_a_stage_reads_is_a_dep_or_its_own_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "work"
    pkl = work / "data" / "raw" / "ucf101_2d.pkl"
    write_pkl(make_dataset(labels=(0, 1, 2), groups=range(1, 9)), pkl)
    (work / "labels.txt").write_text("wave\njump\nrun\n")
    # the pose stage's example folder (EXAMPLE_ITEMS), estimated by the fake estimator
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    has_cv2 = importlib.util.find_spec("cv2") is not None
    if has_cv2:
        from video_fakes import write_video

        for k, name in enumerate(["jump", "wave", "jump", "wave"]):
            write_video(work / "data" / "videos" / name / f"p{k}.mp4", frames=4, shift=k)
    write_params(
        work,
        {
            "data.classes": [0, 1, 2],
            "data.label_map": "labels.txt",
            "shards.frames": 8,
            "shards.test_views": 2,
            "model.eval.clips": 2,
            "baseline.epochs": 1,
            "model.epochs": 1,
            "model.hidden": 8,
            "ensemble.eval.clips": 2,
            "ensemble.epochs": 1,
            "ensemble.hidden": 8,
            "pose.estimator": "video_fakes:BrightBox",
            "pose.options": {},
            "pose.workers": 1,
        },
    )
    values = yaml.safe_load((work / "params.yaml").read_text())
    undeclared = {}
    for name, stage in STAGES.items():
        if name.startswith("pose@") and not has_cv2:
            continue  # the video extra is not installed
        module, *argv = stage["cmd"].split()[2:]
        deps = {dep.replace("${data.pkl}", values["data"]["pkl"]) for dep in paths(stage["deps"])}
        stage = {**stage, "deps": sorted(deps)}
        reads = reads_of(module.removeprefix("pipeline."), work, *argv)
        extra = {p for p in reads if not declared(p, stage) and p not in UNDECLARED_READS}
        if extra:
            undeclared[name] = sorted(extra)
    assert not undeclared, f"dvc.yaml: stages read files they do not list as deps: {undeclared}"


def test_train_reads_every_backbones_settings() -> None:
    """A backbone's settings are a sub-section named after it: each one is a param of train,
    so changing the settings `arch` names retrains."""
    from pipeline.models.registry import REGISTRY

    listed = set(DVC_YAML["stages"]["train"]["do"]["params"])
    assert {f"${{item}}.{name}" for name in REGISTRY} <= listed
    listed = set(DVC_YAML["stages"]["stream"]["do"]["params"])
    assert {f"ensemble.{name}" for name in REGISTRY} <= listed
