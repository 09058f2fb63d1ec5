"""Reading shards: batches gathered across shard files, one view per clip, shuffling."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import PipelineError
from pipeline.dataset.shardset import ShardSet


@pytest.fixture
def folder(tmp_path):
    """A 'train' split of 7 clips in shards of 3, 3 and 1, with 2 views; values encode position."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((7, 2, 4, 1, 17, 3)).astype(np.float32)
    names = []
    for number, start in enumerate(range(0, 7, 3)):
        names.append(f"train-{number:05d}.npy")
        np.save(tmp_path / names[-1], data[start : start + 3])
    pd.DataFrame(
        {
            "frame_dir": [f"clip{i}" for i in range(7)],
            "label": 0,
            "target": np.arange(7) % 2,
            "class_name": "a",
            "length": [4, 3, 2, 4, 1, 4, 4],
        }
    ).to_csv(tmp_path / "train.csv", index=False)
    manifest = {
        "classes": ["a", "b"],
        "labels": [0, 1],
        "channels": ["x", "y", "score"],
        "shape": [4, 1, 17, 3],
        "hidden_joints": [],
        "params": {},
        "data": {"source": "tiny.pkl", "train": "train1", "test": "test1"},
        "splits": {"train": {"clips": 7, "views": 2, "shards": names}},
    }
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    return tmp_path, data


def test_gather_reads_across_shards_in_the_asked_order(folder):
    path, data = folder
    split = ShardSet(path, "train")
    idx = np.array([6, 0, 4, 3, 2])
    np.testing.assert_array_equal(split.gather(idx), data[idx, 0])
    np.testing.assert_array_equal(split.gather(idx, 1), data[idx, 1])


def test_gather_takes_one_view_per_clip(folder):
    path, data = folder
    split = ShardSet(path, "train")
    idx, views = np.array([5, 1, 2, 6]), np.array([1, 0, 1, 1])
    np.testing.assert_array_equal(split.gather(idx, views), data[idx, views])


def test_batches_cover_every_clip_once_and_shuffle_by_seed(folder):
    split = ShardSet(folder[0], "train")
    plain = list(split.batches(3))
    assert [b.tolist() for b in plain] == [[0, 1, 2], [3, 4, 5], [6]]
    assert [len(b) for b in split.batches(3, drop_last=True)] == [3, 3]
    one = np.concatenate(list(split.batches(3, np.random.default_rng(1))))
    two = np.concatenate(list(split.batches(3, np.random.default_rng(1))))
    other = np.concatenate(list(split.batches(3, np.random.default_rng(2))))
    assert sorted(one) == list(range(7)) and np.array_equal(one, two)
    assert not np.array_equal(one, other)


def test_missing_manifest_names_the_stage_to_run(tmp_path):
    wanted = r"manifest.json: not found; run `dvc repro -f -s shards` to rebuild it"
    with pytest.raises(PipelineError, match=wanted):
        ShardSet(tmp_path, "train")
