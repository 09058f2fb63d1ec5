"""A self-contained copy of the pipeline in a fresh git + DVC repo, with params overridden.

`make demo` runs in one so the user's params.yaml and results stay as they were; the
end-to-end tests run in one so they drive the real `dvc` CLI without touching the project.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import fail

PROJECT = Path(__file__).resolve().parents[1]
COPIED = ("dvc.yaml", "params.yaml", ".dvcignore", "pipeline")
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


def apply_overrides(params: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
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


def git(dest: Path, *args: str) -> None:
    subprocess.run(["git", *GIT_ID, *args], cwd=dest, check=True, capture_output=True)


def create(dest: str | Path, overrides: Mapping[str, Any] | None = None) -> Path:
    """Make `dest` (replacing it) a git + DVC repo holding the pipeline; return its path."""
    dest = Path(dest).resolve()
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    for name in COPIED:
        source = PROJECT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            shutil.copy2(source, dest / name)
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    text = yaml.safe_dump(apply_overrides(params, overrides or {}), sort_keys=False)
    (dest / "params.yaml").write_text(text)
    (dest / "data" / "raw").mkdir(parents=True)
    git(dest, "init", "-q")
    subprocess.run(["dvc", "init", "-q"], cwd=dest, check=True, capture_output=True)
    for key, value in (("core.analytics", "false"), ("core.autostage", "true")):
        subprocess.run(["dvc", "config", key, value], cwd=dest, check=True, capture_output=True)
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "pipeline workspace")
    return dest
