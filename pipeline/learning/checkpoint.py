"""What a trained model file (models/<name>.pt) holds, written by `train` and read by whatever
uses the model: one schema, `Checkpoint`, for both sides.

A checkpoint carries everything needed to turn a raw clip into the model's input and the
model's output into class names, so the file alone is enough to predict: the shards params that
shaped the input (frames, sampling, normalization, persons, minimum score, the seed of the test
views), the joints zeroed as too rare in training, the input channels and streams, the class
names with the pickle labels they stand for, and the model section that built the network
(with its test-time views and flips, `eval`). It is a dict of plain values and tensors, so it
loads with torch's `weights_only=True` and never runs code.
"""

from __future__ import annotations

import dataclasses
import errno
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.core import params, skeleton
from pipeline.core.errors import PipelineError, fail
from pipeline.core.params import ModelParams, ShardsParams, TrainParams
from pipeline.core.paths import STREAMS_DIR
from pipeline.core.rules import show
from pipeline.dataset import preprocess
from pipeline.dataset.manifest import Manifest
from pipeline.files.atomic import atomic_path
from pipeline.files.inputs import refuse_special, size_text
from pipeline.learning import features
from pipeline.models import build_model

# The memory that predicting one clip may ask for: its stored test views as input, and one
# layer's activations over its views (eval.clips, doubled by eval.flip), frames, persons and
# joints at the larger of the input channels and the hidden size. Every shape is a valid
# param, but together they can ask for gigabytes per clip (100 views of 100000 frames): such
# a checkpoint is refused when loaded, before anything is allocated. The default params ask
# for about 1 MiB.
CLIP_MEMORY = 1 << 30

# Shards params that change what a clip looks like to a model: one trained on other values is
# not the model for these shards. (Views stored, their seed, file size and workers leave it valid.)
INPUT_PARAMS = (
    "frames",
    "sampling",
    "normalize",
    "persons",
    "person_order",
    "min_score",
    "min_joint_visibility",
)


@dataclass(frozen=True)
class Checkpoint:
    """A trained model and all it needs to be used. In the file, `weights` is under "model"."""

    weights: dict[str, torch.Tensor]  # the selected epoch's state_dict
    config: ModelParams  # the model section that built it
    train: TrainParams
    shards: ShardsParams  # the params that built the shards it learned from
    hidden_joints: list[str]  # joints zeroed in every clip (rarely seen in train)
    classes: list[str]  # class names, in the order of the model's outputs
    labels: list[int]  # the pickle's label of each class, in the same order
    channels: list[str]  # per joint as stored in the shards: x, y, score
    in_channels: int  # per joint after the streams: what the network takes
    persons: int
    joints: int
    epochs_run: int
    selected_epoch: int
    val_acc: float
    val_loss: float
    device: str  # where it was trained
    source: str = dataclasses.field(default="", compare=False)  # the file, for messages

    def to_dict(self) -> dict[str, Any]:
        """The file's content: plain values and tensors only."""
        out: dict[str, Any] = {"model": self.weights}
        for key in KEYS[1:]:
            value = getattr(self, key)
            out[key] = params.plain(value) if isinstance(value, params.Section) else value
        return out

    def save(self, path: Path) -> None:
        save_atomic(self.to_dict(), path)

    def check_against(self, manifest: Manifest, manifest_file: Path) -> None:
        """Refuse shards this model was not trained for: other input params, other hidden
        joints, classes, persons or joints than the shards' manifest has."""
        trained_on = params.plain(self.shards)
        for key in INPUT_PARAMS:
            now = manifest.params.get(key)
            if not _same(trained_on[key], now):
                raise fail(
                    self._where,
                    f"it was trained on shards with shards.{key} = "
                    f"{show(trained_on[key])}, {manifest_file} has {show(now)}; "
                    f"{self._redo}",
                )
        shards = {
            "classes": manifest.classes,
            "labels": manifest.labels,
            "persons": manifest.persons,
            "joints": manifest.joints,
            "hidden_joints": manifest.hidden_joints,
        }
        for key, now in shards.items():
            if not _same(getattr(self, key), now):
                raise fail(
                    self._where,
                    f"its {key} is {show(getattr(self, key))}, where "
                    f"{manifest_file} has {show(now)}; {self._redo}",
                )

    def build_model(self) -> nn.Module:
        """The network with its weights, once they are exactly what its config builds."""
        model = build_model(
            self.config, self.in_channels, self.persons, len(self.classes), self.joints
        )
        _check_weights(self.weights, model.state_dict(), self.config, self._where, self._redo)
        model.load_state_dict(self.weights)
        return model

    @property
    def hidden_joint_indices(self) -> list[int]:
        return [skeleton.J[name] for name in self.hidden_joints]

    @property
    def _where(self) -> str:
        return self.source or "checkpoint"

    @property
    def _redo(self) -> str:
        return retrain(self.source)


# The file's keys: the fields but `source`, with the weights under "model".
KEYS = ("model", *(f.name for f in dataclasses.fields(Checkpoint)[1:] if f.name != "source"))
SECTIONS = {"config": None, "train": "train", "shards": "shards"}  # None: the model's section
# The other keys' kinds; a float may be stored as an int.
PLAIN = {
    "hidden_joints": list,
    "classes": list,
    "labels": list,
    "channels": list,
    "in_channels": int,
    "persons": int,
    "joints": int,
    "epochs_run": int,
    "selected_epoch": int,
    "val_acc": float,
    "val_loss": float,
    "device": str,
}
ITEMS = {"hidden_joints": str, "classes": str, "labels": int, "channels": str}  # the lists' items
assert set(KEYS) == {"model", *SECTIONS, *PLAIN}
# Params added after model files were first written, with what the older files meant.
ADDED = {"train": {"nproc": 1}}
# Model keys that moved into the backbones' own settings (`model.<arch>`), with the backbones
# that read each: older files hold them at the section's top level.
MOVED = {"pool": ("lstm",), "frame_pool": ("tcn", "stgcn")}


def _moved(config: dict[str, Any]) -> dict[str, Any]:
    """A model section written before a key moved, as it reads now."""
    config = dict(config)
    for key, nets in MOVED.items():
        if key in config:
            value = config.pop(key)
            for net in nets:
                config.setdefault(net, {key: value})
    return config


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to a temporary name, then renamed into place."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def retrain(path: Any) -> str:
    """What to run for a model file that cannot be used."""
    path = Path(path)
    if path.parent.parts[-2:] == STREAMS_DIR.parts:  # models/streams/<stream>.pt: stream@<stream>
        return f"retrain it with `dvc repro stream@{path.stem}`"
    return f"retrain it with `dvc repro train@{path.stem}`"


def load(path: Any, section: str = "model") -> Checkpoint:
    """A checkpoint written by the train stage, every field checked; `section` names the
    params section its config is checked as, in messages. Anything needing more than tensors
    and plain values is refused unread."""
    where, redo = str(path), retrain(path)
    try:
        refuse_special(path)  # a FIFO would block torch.load forever
        with warnings.catch_warnings():  # torch warns about pickle protocols on stderr
            warnings.simplefilter("ignore")
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except PipelineError:
        raise
    except FileNotFoundError:
        raise fail(where, "model not found: run the train stage first (dvc repro)") from None
    except Exception as exc:
        raise fail(where, f"refused to load the checkpoint ({_load_error(exc)}); {redo}") from None
    missing = [key for key in KEYS if not isinstance(raw, dict) or key not in raw]
    if missing:
        raise fail(where, f"not a checkpoint of the train stage (no {missing[0]!r}); {redo}")
    values: dict[str, Any] = {"weights": raw["model"], "source": where}
    for key, name in SECTIONS.items():
        name = name or section
        try:
            section_values = raw[key]
            if isinstance(section_values, dict) and key in ADDED:
                section_values = {**ADDED[key], **section_values}
            if isinstance(section_values, dict) and key == "config":
                section_values = _moved(section_values)
            values[key] = params.parse(name, section_values, source=where)
        except PipelineError as exc:
            problem = str(exc).removeprefix(f"{where}: ")
            what = "config is" if key == "config" else f"{key} params are"
            raise fail(
                where, f"its {what} not a valid {name} section ({problem}); {redo}"
            ) from None
    for key, kind in PLAIN.items():
        kinds = (int, float) if kind is float else kind
        if not isinstance(raw[key], kinds) or isinstance(raw[key], bool):
            raise fail(where, f"its {key} is {show(raw[key])}, not a {kind.__name__}; {redo}")
        items = ITEMS.get(key)
        if items and not all(type(item) is items for item in raw[key]):
            raise fail(
                where, f"its {key} is {show(raw[key])}, not a list of {items.__name__}; {redo}"
            )
        values[key] = raw[key]
    unknown = [j for j in raw["hidden_joints"] if j not in skeleton.JOINTS]
    if unknown:
        raise fail(
            where, f"its hidden_joints names {show(unknown[0])}, not a COCO-17 joint; {redo}"
        )
    if len(raw["labels"]) != len(raw["classes"]):
        raise fail(
            where, f"it has {len(raw['classes'])} classes but {len(raw['labels'])} labels; {redo}"
        )
    channels = features.in_channels(values["config"].streams, values["config"].score)
    if raw["in_channels"] != channels:
        raise fail(
            where,
            f"its in_channels is {show(raw['in_channels'])}, where its config's "
            f"streams and score has {channels}; {redo}",
        )
    ckpt = Checkpoint(**values)
    _check_memory(ckpt)
    return ckpt


def clip_memory(ckpt: Checkpoint) -> int:
    """Bytes that predicting one clip of this model asks for (see CLIP_MEMORY)."""
    shards, cfg = ckpt.shards, ckpt.config
    frame = shards.frames * ckpt.persons * ckpt.joints
    stored = preprocess.views_for("test", shards) * frame * len(ckpt.channels)
    views = cfg.eval.clips * (2 if cfg.eval.flip else 1)
    return 4 * (stored + views * frame * max(ckpt.in_channels, cfg.hidden))


def _check_memory(ckpt: Checkpoint) -> None:
    need = clip_memory(ckpt)
    if need > CLIP_MEMORY:
        shards, cfg = ckpt.shards, ckpt.config
        raise fail(
            ckpt.source,
            f"its params ask for {size_text(need)} of memory per clip (shards.frames "
            f"{shards.frames}, shards.test_views {shards.test_views}, eval.clips "
            f"{cfg.eval.clips}, hidden {cfg.hidden}); the limit is {size_text(CLIP_MEMORY)}; "
            f"{retrain(ckpt.source)} with smaller ones",
        )


def model_for(cfg: ModelParams, manifest: Manifest) -> nn.Module:
    """A fresh network of `cfg` for the shards `manifest` describes: their persons, joints and
    classes, and the input channels of the model's own streams (train and the benchmarks)."""
    in_channels = features.in_channels(cfg.streams, cfg.score)
    return build_model(cfg, in_channels, manifest.persons, len(manifest.classes), manifest.joints)


def _load_error(exc: Exception) -> str:
    """torch.load's own cause (which global was refused, an unknown opcode, a damaged zip), not
    its advice to retry with weights_only=False that surrounds it."""
    text = str(exc).split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    refused = [line for line in lines if "GLOBAL" in line]
    if refused:  # "Unsupported global: GLOBAL x.y was not an allowed global by default. ..."
        return refused[0].split(". ")[0].rstrip(".")
    skip = ("Weights only load failed", "Check the documentation", "Please file an issue", "(")
    useful = [line for line in lines if not line.startswith(skip)]
    if isinstance(exc, EOFError) or (isinstance(exc, OSError) and exc.errno == errno.EINVAL):
        return "the file is damaged or truncated"  # EINVAL: torch's zip reader found no archive
    return useful[0].split(". ")[0].rstrip(".") if useful else type(exc).__name__


def _same(found: Any, wanted: Any) -> bool:
    """Equal, and of one kind (numbers count as one kind): a tensor or other odd value that a
    checkpoint may hold in place of a plain one is never equal, and never compared elementwise.
    """
    numbers = (int, float)
    if isinstance(found, numbers) and isinstance(wanted, numbers):
        return found == wanted and isinstance(found, bool) == isinstance(wanted, bool)
    return type(found) is type(wanted) and found == wanted


def _check_weights(
    weights: Any, wanted: Mapping[str, torch.Tensor], cfg: ModelParams, where: str, redo: str
) -> None:
    """Weights of exactly the names and shapes the config's model has, and finite."""
    config = f"its config (arch {cfg.arch}, hidden {cfg.hidden}, layers {cfg.layers})"
    if not isinstance(weights, Mapping):
        raise fail(where, f"its 'model' is not a mapping of weights; {redo}")
    for key, tensor in wanted.items():
        found = weights.get(key)
        if not isinstance(found, torch.Tensor):
            raise fail(where, f"weight {key!r} is missing, though {config} needs it; {redo}")
        if found.shape != tensor.shape:
            raise fail(
                where,
                f"weight {key!r} is {list(found.shape)}, {config} gives "
                f"{list(tensor.shape)}; {redo}",
            )
        if not torch.isfinite(found).all():
            raise fail(
                where,
                f"weight {key!r} holds NaN or infinite values (its training "
                f"diverged); {redo} after lowering its lr",
            )
    extra = sorted(set(weights) - set(wanted), key=str)
    if extra:
        raise fail(where, f"weight {show(extra[0])} has no place in {config}; {redo}")
