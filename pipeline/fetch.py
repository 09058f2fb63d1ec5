"""Stage `fetch`: the raw skeleton pickle at data.pkl, validated.

`data.source: ucf101` keeps a file already at data.pkl once it passes validation, and
otherwise downloads data.url (resuming, checksummed). `data.source: synthetic` writes the
offline stand-in instead, in the same format.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline import params, pklio, synthetic
from pipeline.download import download, file_hashes
from pipeline.errors import cli, fail
from pipeline.paths import RAW_DIR


def validate(path: Path) -> None:
    """A usable PYSKL pickle: loads through the restricted unpickler and has splits + clips."""
    splits, annotations = pklio.check_dataset(pklio.load_pickle(path), str(path))
    if not annotations:
        raise fail(str(path), "the pickle holds no annotations")


def verify_hashes(path: Path, data: Mapping[str, Any]) -> None:
    """A present file must match data.md5 / data.sha256 when they are set."""
    wanted = {name: data[name].lower() for name in ("md5", "sha256") if data[name]}
    if not wanted:
        return
    found = file_hashes(path, tuple(wanted))
    for name, expected in wanted.items():
        if found[name] != expected:
            raise fail(str(path), f"{name} mismatch: expected {expected}, found {found[name]}")


def fetch(data: Mapping[str, Any], fetch_cfg: Mapping[str, Any], synth: Mapping[str, Any]) -> str:
    """Run the stage; return what was done, for the log line."""
    target = Path(data["pkl"])
    if data["source"] == "synthetic":
        synthetic.write(
            target, clips_per_group=tuple(synth["clips_per_group"]), frames=tuple(synth["frames"]),
            seed=synth["seed"], mirror=synth["mirror"],
        )  # fmt: skip
        return f"wrote the synthetic stand-in to {target}"
    if target.exists():
        verify_hashes(target, data)
        validate(target)
        return f"kept the valid file already at {target}"
    download(
        data["url"], target, root=RAW_DIR, retries=fetch_cfg["retries"],
        backoff=fetch_cfg["backoff"], timeout=fetch_cfg["timeout"], md5=data["md5"],
        sha256=data["sha256"], validate=validate,
    )  # fmt: skip
    return f"downloaded {data['url']} to {target}"


@cli
def main() -> None:
    loaded = params.load("data", "fetch", "synthetic")
    print("fetch: " + fetch(loaded["data"], loaded["fetch"], loaded["synthetic"]))


if __name__ == "__main__":
    main()
