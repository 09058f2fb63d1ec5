"""A self-contained copy of the pipeline in a fresh git + DVC repo, with params overridden.

`make demo` runs in one so the user's params.yaml and results stay as they were; the
end-to-end tests run in one so they drive the real `dvc` CLI without touching the project.
A workspace carries a marker file: only a folder that holds it is ever reused or refreshed.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from pipeline.core.errors import fail
from pipeline.project import offline_page

PROJECT = Path(__file__).resolve().parents[2]  # pipeline/project/ -> the checkout
# What a refresh brings up to date (.dvc/plots: the Vega templates dvc.yaml's plots name).
CODE = ("dvc.yaml", ".dvcignore", "pipeline", ".dvc/plots")
# Folders replaced whole, so that a module the project dropped goes; into the others ours are
# copied over, and a user's own files there stay.
REPLACED = ("pipeline",)
MARKER = ".pipeline-workspace"
GIT_ID = ["-c", "user.name=pipeline", "-c", "user.email=pipeline@localhost"]


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key.sub=value` strings (values parsed as YAML, as `dvc exp run -S` does) to a dict."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise fail("overrides", f"expected key=value, found {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def apply_overrides(params: Any, overrides: Mapping[str, Any]) -> Any:
    """Set dotted keys in a params mapping; each key must exist already (a typo is an error)."""
    for dotted, value in overrides.items():
        *path, last = dotted.split(".")
        node = params
        for part in path:
            if not isinstance(node.get(part), dict):
                raise fail("params.yaml", f"{dotted}: no such section to override")
            node = node[part]
        if last not in node:
            raise fail("params.yaml", f"{dotted}: no such key to override")
        node[last] = value
    return params


def override_file(path: Path, overrides: Mapping[str, Any]) -> None:
    """Apply overrides to a params.yaml in place, keeping its comments and layout (as `dvc exp
    run -S` does), so the file still documents itself after the edit."""
    rt = YAML()  # round-trip mode: comments, key order and nulls survive
    rt.width = 4096
    doc = apply_overrides(rt.load(path.read_text()), overrides)
    out = io.StringIO()
    rt.dump(doc, out)
    path.write_text(out.getvalue())


def git(dest: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *GIT_ID, *args], cwd=dest, check=True, capture_output=True, text=True
    )


def commit(dest: Path, message: str) -> bool:
    """Stage everything and commit it; False when there was nothing to commit."""
    git(dest, "add", "-A")
    if not git(dest, "status", "--porcelain").stdout.strip():
        return False
    git(dest, "commit", "-q", "-m", message)
    return True


def is_workspace(dest: Path) -> bool:
    return (dest / MARKER).is_file()


def copy_code(dest: Path) -> None:
    """The pipeline's code into a workspace (a DVC repo already), and the offline page that
    `dvc plots show` draws with."""
    for name in CODE:
        source, target = PROJECT / name, dest / name
        if source.is_dir():
            if name in REPLACED:
                shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(
                source, target, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True
            )
        elif source.exists():
            shutil.copy2(source, target)
    offline_page.install(dest)


def tool_env(importable: Path | None = None) -> dict[str, str]:
    """This environment with this interpreter's bin folder first on PATH, so the `python` and
    `dvc` that stages and DVC run are this venv's, activated or not. With `importable` (a
    checkout), its `pipeline` comes first on PYTHONPATH, for running its stages from another
    folder (the tests and benchmarks do; a workspace runs the copy it holds)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if importable is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(importable), env.get("PYTHONPATH")]))
    return env


def run_tool(dest: Path, *command: str) -> None:
    """A command of this venv (`dvc`, `python -m pipeline.fetch`) in the workspace; its output
    goes to the terminal, and a failure is one line."""
    if subprocess.run([sys.executable, "-m", *command], cwd=dest, env=tool_env()).returncode:
        raise fail(str(dest), f"`{' '.join(command)}` failed (its output is above)")


def remove(dest: str | Path) -> None:
    """Delete a workspace this module made (it holds the marker); any other folder is kept."""
    if is_workspace(Path(dest)):
        shutil.rmtree(dest)


def create(
    dest: str | Path, overrides: Mapping[str, Any] | None = None, raw: Path | None = None
) -> Path:
    """Make `dest` (absent or empty) a git + DVC repo holding the pipeline, with its raw pickle
    obtained (`python -m pipeline.fetch`: tracked by DVC when it was generated or downloaded;
    `raw`, a pickle to copy to data.pkl instead) and committed; return its path.

    A folder that holds anything else is refused: it may be somebody's work.
    """
    dest = Path(dest).resolve()
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise fail(
            str(dest),
            f"exists and is not an empty folder or a pipeline workspace (no {MARKER} "
            "in it): choose another folder, or remove this one yourself",
        )
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy2(PROJECT / "params.yaml", dest / "params.yaml")
    override_file(dest / "params.yaml", overrides or {})
    (dest / "data" / "raw").mkdir(parents=True)
    if raw is not None:
        pkl = yaml.safe_load((dest / "params.yaml").read_text())["data"]["pkl"]
        shutil.copy2(raw, dest / pkl)
    (dest / ".gitignore").write_text("__pycache__/\n/dvc_plots/\n")
    (dest / MARKER).write_text(
        "made by pipeline.project.workspace: `make demo` may reuse this folder\n"
    )
    git(dest, "init", "-q")
    # Not even these commands report their use: the workspace's config turns it off for the rest.
    quiet = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "-q"], cwd=dest, env=quiet, check=True, capture_output=True)
    for key, value in (("core.analytics", "false"), ("core.autostage", "true")):
        subprocess.run(
            [*dvc, "config", key, value], cwd=dest, env=quiet, check=True, capture_output=True
        )
    copy_code(dest)  # after `dvc init`, which refuses a folder that holds .dvc/ already
    run_tool(dest, "pipeline.fetch")
    commit(dest, "pipeline workspace and its raw data")
    return dest
