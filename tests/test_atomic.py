"""Killing extract or shards at any point leaves the old output or none, never a partial one.

Each stage runs as `python -m pipeline.<stage>` and SIGKILLs itself at a chosen moment (see
`conftest.start_stage`): while writing a file of the output, when the output is complete under
its temporary name but not yet renamed, and right after the old output was moved aside. The
output path must then hold the old output byte for byte, or nothing; temporaries may be left,
but only under a '.<name>.*.tmp' name; and a rerun must succeed. (train: see test_resume.py.)
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from conftest import (
    call_stage,
    finish,
    make_dataset,
    run_stages,
    start_stage,
    write_params,
    write_pkl,
)

from pipeline.dataset.shardset import ShardSet
from pipeline.dataset.subset import SPLITS, Subset
from pipeline.files import atomic

pytestmark = pytest.mark.slow  # stages in subprocesses or trained workspaces

OLD = {"data.classes": [0, 1], "shards.frames": 16}
NEW = {"data.classes": [0, 1, 2], "shards.frames": 12}  # what the killed run would have written


def snapshot(folder: Path) -> dict[str, bytes] | None:
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def setup(root: Path, with_old: bool) -> None:
    """data.pkl and params for NEW; with_old: subset and shards already built from OLD."""
    data = make_dataset(labels=(0, 1, 2), groups=range(1, 7), clips_per_group=2, seed=5)
    write_pkl(data, root / "data.pkl")
    base = {"data.pkl": "data.pkl", "shards.workers": 1}
    if with_old:
        write_params(root, {**base, **OLD})
        run_stages(root, "extract", "shards")
    write_params(root, {**base, **NEW})


def check_leftovers(data: Path) -> None:
    """data/ holds the outputs, and temporaries only under a '.<output>.*.tmp' name."""
    for path in data.iterdir():
        assert path.name in ("subset", "shards") or (
            path.name.startswith((".subset.", ".shards.")) and path.name.endswith(".tmp")
        ), f"{path} is neither an output nor a temporary"


def check_subset(root: Path) -> None:
    sub = Subset(root / "data" / "subset")
    assert sub.index["label"].nunique() == len(NEW["data.classes"])
    for i in range(len(sub.index)):
        sub.clip(i)  # every clip reads back whole
    sub.close()


def check_shards(root: Path) -> None:
    for split in SPLITS:
        shards = ShardSet(root / "data" / "shards", split)
        assert shards.manifest.frames == NEW["shards.frames"]
        assert shards.gather(list(range(len(shards)))).shape[1] == NEW["shards.frames"]


CASES = [  # (stage, (function, match, n), an old output present)
    ("extract", ("pandas.DataFrame.to_csv", "", 1), True),  # writing index.csv
    ("extract", ("os.replace", "subset", 1), True),  # complete, old one moved aside
    ("extract", ("os.replace", "subset", 1), False),
    ("extract", ("os.replace", ".subset.pipeline-old.*", 1), True),  # complete, moving the old
    ("shards", ("pipeline.dataset.preprocess.build_table", "", 2), True),  # amid writing shards
    ("shards", ("os.replace", "manifest.json", 1), True),
    ("shards", ("os.replace", "shards", 1), True),
    ("shards", ("os.replace", "shards", 1), False),
    ("shards", ("os.replace", ".shards.pipeline-old.*", 1), True),
]


@pytest.mark.parametrize(
    ("stage", "kill_at", "with_old"),
    CASES,
    ids=[f"{s}-{k[0]}-{k[1] or 'any'}-{'old' if o else 'none'}" for s, k, o in CASES],
)
def test_a_killed_stage_leaves_the_old_output_or_none_and_a_rerun_works(
    tmp_path, stage, kill_at, with_old
):
    setup(tmp_path, with_old)
    if stage == "shards" and not with_old:
        assert call_stage("extract", tmp_path).returncode == 0
    output = tmp_path / "data" / ("subset" if stage == "extract" else "shards")
    before = snapshot(output)
    assert (before is not None) == with_old

    code, out, err = finish(start_stage(stage, tmp_path, kill_at=kill_at), timeout=60)
    assert code == -signal.SIGKILL, (code, out, err)
    after = snapshot(output)
    if kill_at == ("os.replace", output.name, 1):
        # the new folder is complete and the old one moved aside: none, never a mixed one
        assert after is None
    else:
        assert after == before, "the output path changed although the run never finished"
    check_leftovers(output.parent)

    result = call_stage(stage, tmp_path)
    assert result.returncode == 0, result.stderr
    check_leftovers(output.parent)
    assert not list(output.parent.glob(f".{output.name}.*")), "the rerun clears what was left"
    (check_subset if stage == "extract" else check_shards)(tmp_path)


def test_prepare_outputs_removes_a_killed_runs_temporaries_and_nothing_of_the_users(
    tmp_path: Path,
) -> None:
    out = tmp_path / "results.csv"
    ours = [atomic._tmp_name(out), atomic._tmp_name(out, directory=True)]  # a killed run's
    users = [
        tmp_path / name
        for name in (
            ".results.csv.original.tmp",
            ".results.csv.mybackup.tmp",
            ".results.csv.bak.tmp",
            "keep.txt",
        )
    ]
    for path in users:
        path.write_text("mine")
    atomic.prepare_outputs(files=[out])
    assert not any(path.exists() for path in ours)
    assert all(path.read_text() == "mine" for path in users)
