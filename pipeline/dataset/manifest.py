"""The shards' manifest.json: what `shards` wrote, typed, and checked once when it is read.

Every later stage (train, evaluate, summary, plots) and the benchmarks take the shards' shape,
classes and params from here, never by indexing the JSON themselves.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from pipeline.core.skeleton import JOINTS
from pipeline.files.atomic import write_json
from pipeline.files.readers import check_shape, damaged, read_json

FILE = "manifest.json"
STAGE = "shards"  # the stage that writes it
SCHEMA = {
    "classes": [str],
    "labels": [int],
    "channels": [str],
    "shape": [int],
    "hidden_joints": [str],
    "params": dict,
    "data": {"source": str, "train": str, "test": str},
    "splits": dict,
}
SPLIT = {"clips": int, "views": int, "shards": [str]}  # the entry of each split
LAYOUT = "clips, views, frames, persons, joints, channels"


@dataclasses.dataclass(frozen=True)
class Split:
    clips: int
    views: int  # test-time views stored per clip (1 for train and val)
    shards: list[str]  # file names, in clip order


@dataclasses.dataclass(frozen=True)
class Manifest:
    classes: list[str]  # class names, by target
    labels: list[int]  # the pickle's label of each class
    channels: list[str]
    frames: int
    persons: int
    joints: int
    hidden_joints: list[str]  # joints rarely seen in train, zeroed in every split
    params: dict[str, Any]  # the shards section that built them, as plain values
    source: str  # the pickle
    train_split: str  # its split names
    test_split: str
    splits: dict[str, Split] = dataclasses.field(default_factory=dict)

    @property
    def clip_shape(self) -> tuple[int, int, int, int]:
        """One view of one clip: [frames, persons, joints, channels]."""
        return (self.frames, self.persons, self.joints, len(self.channels))

    def to_json(self) -> dict[str, Any]:
        return {
            "classes": self.classes,
            "labels": self.labels,
            "channels": self.channels,
            "joints": list(JOINTS),
            "shape": list(self.clip_shape),
            "layout": LAYOUT,
            "splits": {name: dataclasses.asdict(split) for name, split in self.splits.items()},
            "data": {"source": self.source, "train": self.train_split, "test": self.test_split},
            "params": self.params,
            "hidden_joints": self.hidden_joints,
        }

    def write(self, folder: str | Path) -> None:
        write_json(Path(folder) / FILE, self.to_json())

    def split(self, name: str, folder: str | Path) -> Split:
        """One split's entry; a shards folder without it is damaged."""
        if name not in self.splits:
            raise damaged(Path(folder) / FILE, STAGE, f"splits: no {name!r} entry")
        return self.splits[name]

    @classmethod
    def read(cls, folder: str | Path) -> Manifest:
        path = Path(folder) / FILE
        raw = read_json(path, STAGE, SCHEMA)
        shape = raw["shape"]
        if len(shape) != 4 or min(shape) < 1:
            raise damaged(
                path,
                STAGE,
                f"shape: expected [frames, persons, joints, channels] of positive sizes, "
                f"found {shape}",
            )
        if shape[3] != len(raw["channels"]):
            raise damaged(
                path, STAGE, f"shape: {shape[3]} channels, but channels lists {raw['channels']}"
            )
        check_shape(path, STAGE, raw["splits"], {name: SPLIT for name in raw["splits"]}, "splits")
        return cls(
            classes=raw["classes"],
            labels=raw["labels"],
            channels=raw["channels"],
            frames=shape[0],
            persons=shape[1],
            joints=shape[2],
            hidden_joints=raw["hidden_joints"],
            params=raw["params"],
            source=raw["data"]["source"],
            train_split=raw["data"]["train"],
            test_split=raw["data"]["test"],
            splits={name: Split(**entry) for name, entry in raw["splits"].items()},
        )
