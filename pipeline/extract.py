"""Stage `extract`: the chosen classes of one split, checked, with a validation carve-out.

Reads `data.pkl` through the restricted loader, keeps `data.classes` from the train and test
splits, holds out validation clips from train (whole groups by default, so an actor or scene is
never on both sides), and writes the compact subset of `pipeline.dataset.subset`.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sklearn.model_selection import (
    GroupKFold,
    GroupShuffleSplit,
    KFold,
    ShuffleSplit,
    StratifiedKFold,
    StratifiedShuffleSplit,
)

from pipeline.core import params
from pipeline.core.errors import cli, fail
from pipeline.core.params import DataParams
from pipeline.core.paths import SUBSET_DIR
from pipeline.dataset import classnames, subset
from pipeline.files import pklio
from pipeline.files.atomic import prepare_outputs

# The single split of `val_fraction` and the k-fold split of each kind of validation: sklearn
# pairs them, so `data.folds` switches between the two without another code path.
# (ShuffleSplit and StratifiedShuffleSplit draw exactly what train_test_split draws with the same
# seed, so the notebook's split is unchanged.)
SPLITTERS = {
    "clip": (ShuffleSplit, KFold),
    "stratified": (StratifiedShuffleSplit, StratifiedKFold),
    "group": (GroupShuffleSplit, GroupKFold),
}


def carve_validation(
    train: list[str], labels: list[int], all_train: list[str], data_cfg: DataParams, source: str
) -> tuple[set[str], str]:
    """The frame_dirs held out for validation, and how they were chosen.

    `clip` reproduces the notebook: a random split of the whole train list (every class), later
    filtered to the chosen classes. `group` holds out whole groups parsed with `group_pattern`,
    or falls back to a class-stratified clip split when no name carries a group. With
    `folds` = k the held-out part is fold `fold` of a k-fold split of the same kind instead of
    a `val_fraction` share, so k runs validate every train clip exactly once.
    """
    suffix = f", fold {data_cfg.fold} of {data_cfg.folds}" if data_cfg.folds else ""
    if data_cfg.val_by == "clip":
        return _held_out("clip", data_cfg, all_train), "clip" + suffix
    regex = re.compile(data_cfg.group_pattern)
    found = [regex.search(name) for name in train]
    if not any(found):
        method = "clip-stratified (no group in the names)"
        return _held_out("stratified", data_cfg, train, labels), method + suffix
    missing = [name for name, m in zip(train, found, strict=True) if not m]
    if missing:
        raise fail(source, f"clip {missing[0]!r} has no group matching data.group_pattern")
    groups = [m.group(1) for m in found]
    if len(set(groups)) < 2:
        raise fail(
            source, f"validation by group needs 2 or more groups in train, found {groups[0]!r}"
        )
    return _held_out("group", data_cfg, train, None, groups), "group" + suffix


def _held_out(kind: str, data_cfg: DataParams, names: list[str], *split_args: Any) -> set[str]:
    """The names `kind`'s splitter holds out: a `val_fraction` share, or fold `fold` of k."""
    single, k_fold = SPLITTERS[kind]
    if data_cfg.folds:
        splitter = k_fold(data_cfg.folds, shuffle=True, random_state=data_cfg.seed)
        which = data_cfg.fold
    else:
        splitter = single(n_splits=1, test_size=data_cfg.val_fraction, random_state=data_cfg.seed)
        which = 0
    _, val_idx = list(splitter.split(names, *split_args))[which]
    return {names[i] for i in val_idx}


def _catalogue(annotations: list[Any], source: str) -> dict[str, int]:
    """frame_dir -> position, with the light checks that selection needs on every clip."""
    where: dict[str, int] = {}
    for i, ann in enumerate(annotations):
        if not isinstance(ann, Mapping) or not isinstance(ann.get("frame_dir"), str):
            raise fail(source, f"annotations[{i}]: expected a dict with a string frame_dir")
        if "label" not in ann:
            raise fail(source, f"clip {ann['frame_dir']!r}: missing key 'label'")
        if ann["frame_dir"] in where:
            raise fail(source, f"clip {ann['frame_dir']!r} appears twice")
        where[ann["frame_dir"]] = i
    return where


def _no_repeats(
    train: list[str], test: list[str], train_name: str, test_name: str, source: str
) -> None:
    """Each clip once per split and never on both sides: a repeat would be written twice."""
    for split, members in ((train_name, train), (test_name, test)):
        seen: set[str] = set()
        for name in members:
            if name in seen:
                raise fail(source, f"split {split!r} lists clip {name!r} twice")
            seen.add(name)
    both = set(train) & set(test)
    if both:
        raise fail(source, f"clip {min(both)!r} is in both split {train_name!r} and {test_name!r}")


def select(
    data_cfg: DataParams, dataset: Any, source: str
) -> tuple[list[dict[str, Any]], list[Mapping[str, Any]], subset.Meta]:
    """The index rows, annotations and meta of the chosen clips of a loaded pickle.

    Only the chosen clips are referenced by the result, so the rest of the pickle is freed
    as soon as the caller drops `dataset`.
    """
    splits, annotations = pklio.check_dataset(dataset, source)
    train_name, test_name = data_cfg.split_names()
    for name in (train_name, test_name):
        if name not in splits:
            raise fail(source, f"split {name!r} not found (the file has {sorted(splits)})")
    where = _catalogue(annotations, source)

    def label_of(name: str, split: str) -> int:
        if name not in where:
            raise fail(source, f"split {split!r} names clip {name!r}, which has no annotation")
        label = pklio.as_int(annotations[where[name]]["label"])
        if label is None or label < 0:
            raise fail(source, f"clip {name!r}: label must be an integer >= 0")
        return label

    train_all = list(splits[train_name])
    _no_repeats(train_all, splits[test_name], train_name, test_name, source)
    train_labels = {n: label_of(n, train_name) for n in train_all}
    test_labels = {n: label_of(n, test_name) for n in splits[test_name]}
    present = sorted(set(train_labels.values()))
    warnings: list[str] = []
    if data_cfg.classes == "all":
        chosen = present
        warnings += _test_only(test_labels, set(present), (train_name, test_name), source)
    else:
        chosen = sorted(data_cfg.classes)
        absent = [c for c in chosen if c not in set(present)]
        if absent:
            there = f"labels there: {present[0]}..{present[-1]}" if present else "it is empty"
            raise fail(
                source,
                f"data.classes: label {absent[0]} has no clip in split {train_name!r} ({there})",
            )
    keep = set(chosen)
    train = [n for n in train_all if train_labels[n] in keep]
    test = [n for n in splits[test_name] if test_labels[n] in keep]
    if not test:
        raise fail(source, f"split {test_name!r} has no clip of the chosen classes")
    try:
        val, val_method = carve_validation(
            train, [train_labels[n] for n in train], train_all, data_cfg, source
        )
    except ValueError as exc:  # sklearn: too few clips, groups or per-class clips to split
        what = f"{data_cfg.folds} data.folds" if data_cfg.folds else "data.val_fraction"
        raise fail(source, f"cannot carve {what} out of {train_name!r}: {exc}") from None
    target = {label: i for i, label in enumerate(chosen)}
    names = classnames.resolve(
        chosen,
        ((n, train_labels[n]) for n in train),
        data_cfg.class_pattern,
        data_cfg.label_map,
        source,
    )
    group_re = re.compile(data_cfg.group_pattern)

    rows: list[dict[str, Any]] = []
    kept: list[Mapping[str, Any]] = []
    skipped: list[str] = []
    unscored: list[str] = []
    labelled = [(n, "val" if n in val else "train") for n in train] + [(n, "test") for n in test]
    for name, split in sorted(labelled, key=lambda item: subset.SPLITS.index(item[1])):
        ann = annotations[where[name]]
        persons = pklio.check_annotation(ann, source, where[name])
        if persons == 0:
            skipped.append(name)
            continue
        if not ann["keypoint_score"].any():
            unscored.append(name)
        label = pklio.as_int(ann["label"])
        group = group_re.search(name)
        h, w = (int(s) for s in ann["img_shape"])
        rows.append(
            {
                "frame_dir": name,
                "label": label,
                "target": target[label],
                "class_name": names[target[label]],
                "group": group.group(1) if group else "",
                "split": split,
                "frames": int(ann["keypoint"].shape[1]),
                "persons": persons,
                "img_h": h,
                "img_w": w,
            }
        )
        kept.append(ann)
    counts = _check_selection(rows, names, skipped, source)
    if unscored:
        warnings.append(
            f"{source}: {len(unscored)} of {len(rows)} chosen clips have every keypoint score 0 "
            f"(first {unscored[0]!r}); the shards stage zeroes joints scored below "
            "shards.min_score, so those clips reach the model without a skeleton"
        )
    meta = subset.Meta(
        source=source,
        train_split=train_name,
        test_split=test_name,
        labels=chosen,
        classes=names,
        validation=val_method,
        counts=counts,
        skipped=skipped,
        warnings=warnings,
    )
    return rows, kept, meta


def _test_only(
    test_labels: Mapping[str, int], in_train: set[int], splits: tuple[str, str], source: str
) -> list[str]:
    """The warning for labels `classes: all` leaves out: present in test only, never trained."""
    left_out = sorted(set(test_labels.values()) - in_train)
    if not left_out:
        return []
    clips = sum(label in set(left_out) for label in test_labels.values())
    which = ", ".join(map(str, left_out[:5])) + (", ..." if len(left_out) > 5 else "")
    several = len(left_out) > 1
    return [
        f"{source}: label{'s' * several} {which} ({clips} clips) appear{'s' * (not several)} "
        f"only in split {splits[1]!r}, not in {splits[0]!r}; data.classes: all takes the labels "
        "of train, so they are left out"
    ]


def _check_selection(
    rows: list[dict[str, Any]], names: list[str], skipped: list[str], source: str
) -> dict[str, int]:
    """Clips per split of a selection that can be trained and tested: every split has clips,
    and train has two classes or more (with one, nothing is learned and the test metrics, log
    loss and per-class scores, are undefined)."""
    counts = {s: sum(r["split"] == s for r in rows) for s in subset.SPLITS}
    for split, count in counts.items():
        if count == 0:
            empty = f"{len(skipped)} clips with no person were skipped; " if skipped else ""
            raise fail(
                source,
                f"the selection leaves no {split} clip ({empty}check data.classes and splits)",
            )
    taught = sorted({r["target"] for r in rows if r["split"] == "train"})
    if len(taught) < 2:
        raise fail(
            source,
            f"the train clips of the selection hold 1 class ({names[taught[0]]!r}); "
            "a classifier needs 2 or more (check data.classes)",
        )
    return counts


def extract(data_cfg: DataParams, pkl: str | Path, out_dir: str | Path) -> subset.Meta:
    """Run the stage; return the meta written to meta.json."""
    prepare_outputs(folders=[out_dir])
    rows, kept, meta = select(data_cfg, pklio.load_pickle(pkl), str(pkl))
    subset.write(out_dir, rows, kept, meta)
    return meta


@cli
def main() -> None:
    data_cfg = params.load("data")["data"]
    meta = extract(data_cfg, data_cfg.pkl, SUBSET_DIR)
    for warning in meta.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    c = meta.counts
    print(
        f"extract: {len(meta.classes)} classes, train {c['train']}, val {c['val']} "
        f"({meta.validation}), test {c['test']} clips; "
        f"skipped {len(meta.skipped)} with no person -> {SUBSET_DIR}"
    )


if __name__ == "__main__":
    main()
