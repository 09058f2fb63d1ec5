"""Stage `shards`: every split of the subset as padded float32 tensors in memory-mappable shards.

Writes `data/shards/<split>-NNNNN.npy` ([clips, views, frames, persons, 17, 3]), one
`<split>.csv` per split (frame_dir, label, target, class_name, length, in stored order) and
`manifest.json` (counts, shapes, class names and the params that built them). Shards are built
in parallel processes, each reading its own clips from the subset.
"""

from __future__ import annotations

import math
import os
import signal
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core import params, skeleton
from pipeline.core.errors import STOP_SIGNALS, StopFlag, cli, fail, interruption
from pipeline.core.params import ShardsParams
from pipeline.core.paths import SHARDS_DIR, SUBSET_DIR
from pipeline.dataset import preprocess
from pipeline.dataset.manifest import Manifest, Split
from pipeline.dataset.subset import SPLITS, Subset, write_npy
from pipeline.files.atomic import atomic_dir, prepare_outputs


def build_shard(
    subset: Subset,
    rows: np.ndarray,
    shards_cfg: ShardsParams,
    views: int,
    out: str,
    hidden_joints: list[int] | None = None,
) -> np.ndarray:
    """Build and save one shard of subset rows; return their sampled lengths.

    The file is what np.save writes, streamed behind its header: built a batch of clips at a
    time (large enough that whole-batch numpy work costs little per clip, small enough that a
    worker never holds the shard: 1024 test clips of 10 views are 267 MB), gathered and
    written a piece at a time (small enough to be written while still in the CPU's cache)."""
    clip_shape = (views, shards_cfg.frames, shards_cfg.persons, skeleton.NUM_JOINTS, 3)
    clip_bytes = 4 * math.prod(clip_shape)
    per_batch = max(1, _BATCH_BYTES // clip_bytes)
    per_piece = max(1, _PIECE_BYTES // clip_bytes)
    lengths = np.empty(len(rows), np.int64)

    def pieces() -> Iterator[np.ndarray]:
        # one buffer for every piece: each is written before the next is gathered
        buffer = np.empty((min(per_piece, len(rows)), *clip_shape), np.float32)
        for first in range(0, len(rows), per_batch):
            clips = subset.clips(rows[first : first + per_batch], reuse=True)
            table, slots, lengths[first : first + len(clips)] = preprocess.build_table(
                clips, shards_cfg, views, hidden_joints
            )
            for start in range(0, len(clips), per_piece):
                piece = buffer[: len(slots[start : start + per_piece])]
                np.take(table, slots[start : start + len(piece)], axis=0, out=piece, mode="clip")
                yield piece

    write_npy(Path(out), "<f4", (len(rows), *clip_shape), pieces())
    return lengths


_BATCH_BYTES = 16 << 20  # output built per step of build_shard: 64 clips of 10 test views
_PIECE_BYTES = 2 << 20  # output gathered and written per step: 8 clips of 10 test views


_worker_subset: Subset | None = None  # a pool worker's own view of the subset


def _start_worker(folder: str) -> None:
    """Open the subset once per pool worker. Ctrl-C reaches every process of the terminal's
    group: the workers ignore it, so the user sees one line from the parent, not a traceback
    from each worker."""
    global _worker_subset
    for sig in STOP_SIGNALS:  # SIGTERM too: sent to the group, the parent alone reports it
        signal.signal(sig, signal.SIG_IGN)
    _worker_subset = Subset(folder)


def _build_in_worker(*args: Any) -> np.ndarray:
    assert _worker_subset is not None, "run by a pool started with _start_worker"
    return build_shard(_worker_subset, *args)


def train_visibility(subset: Subset, threshold: float) -> tuple[np.ndarray, int]:
    """Per joint, in how many person-frames of the train split it was detected; and of how many.

    Reads the scores in large runs of rows rather than clip by clip: train clips lie back to
    back in the subset, so this is a few big reads instead of thousands of small ones."""
    visible = np.zeros(skeleton.NUM_JOINTS, np.int64)
    seen = 0
    rows = subset.rows("train")
    starts = subset.index["offset"].to_numpy()[rows]
    stops = starts + (subset.index["persons"].to_numpy() * subset.index["frames"].to_numpy())[rows]
    # score > threshold compares in float16; for finite float16 values (extract lets no other
    # in) and a threshold >= 0, their bits as int16 compare the same way, and faster
    limit = np.float16(threshold).view(np.int16)
    buffer = np.empty((_CHUNK_ROWS, skeleton.NUM_JOINTS), np.float16)
    for start, stop in _runs(starts, stops):
        for first in range(start, stop, _CHUNK_ROWS):
            score = buffer[: min(stop, first + _CHUNK_ROWS) - first]
            subset.scores.read_into(first, score)
            detected = (score.view(np.int16) > limit).view(np.uint8)
            # column sums of [rows, 17] as sums of [rows / 64, 64 * 17]: numpy's loop then
            # runs over 1,088 values a call rather than 17
            whole = len(detected) - len(detected) % 64
            wide = (
                detected[:whole].reshape(-1, 64 * skeleton.NUM_JOINTS).sum(axis=0, dtype=np.int32)
            )
            visible += wide.reshape(64, -1).sum(axis=0) + detected[whole:].sum(
                axis=0, dtype=np.int64
            )
        seen += stop - start
    return visible, seen


_CHUNK_ROWS = 1 << 18  # person-frames per read in train_visibility: 8.5 MB of float16 scores


def _runs(starts: np.ndarray, stops: np.ndarray) -> list[tuple[int, int]]:
    """Row ranges [start, stop) merged where one ends exactly where the next begins."""
    runs: list[tuple[int, int]] = []
    for start, stop in sorted(zip(starts.tolist(), stops.tolist(), strict=True)):
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], stop)
        elif stop > start:
            runs.append((start, stop))
    return runs


def shards(shards_cfg: ShardsParams, subset_dir: str | Path, out_dir: str | Path) -> Manifest:
    """Run the stage; return the manifest."""
    prepare_outputs(folders=[out_dir])
    if not (Path(subset_dir) / "index.csv").is_file():
        raise fail(str(subset_dir), "no subset found (run `python -m pipeline.extract` first)")
    subset = Subset(subset_dir)
    jobs = []
    for split in SPLITS:
        rows = subset.rows(split)
        for number, start in enumerate(range(0, len(rows), shards_cfg.size)):
            jobs.append((split, number, rows[start : start + shards_cfg.size]))
    workers = min(shards_cfg.workers or os.cpu_count() or 1, len(jobs))
    hidden: list[int] = []
    if shards_cfg.min_joint_visibility > 0:
        visible, seen = train_visibility(subset, shards_cfg.min_score)
        hidden = preprocess.rare_joints(visible, seen, shards_cfg.min_joint_visibility)
    manifest = Manifest(
        classes=subset.classes,
        labels=subset.meta.labels,
        channels=list(preprocess.CHANNELS),
        frames=shards_cfg.frames,
        persons=shards_cfg.persons,
        joints=skeleton.NUM_JOINTS,
        hidden_joints=[skeleton.JOINTS[j] for j in hidden],
        params=params.plain(shards_cfg),
        source=subset.meta.source,
        train_split=subset.meta.train_split,
        test_split=subset.meta.test_split,
    )
    with atomic_dir(out_dir) as tmp:
        names = [f"{split}-{number:05d}.npy" for split, number, _ in jobs]
        args = [
            (rows, shards_cfg, preprocess.views_for(split, shards_cfg), str(tmp / name), hidden)
            for (split, _, rows), name in zip(jobs, names, strict=True)
        ]
        if workers > 1:
            lengths = _build_in_pool(workers, str(subset_dir), args)
        else:
            lengths = [build_shard(subset, *a) for a in args]
        columns = ["frame_dir", "label", "target", "class_name"]
        for split in SPLITS:
            mine = [i for i, (s, _, _) in enumerate(jobs) if s == split]
            table = subset.index.iloc[subset.rows(split)][columns].copy()
            table["length"] = np.concatenate([lengths[i] for i in mine])
            table.to_csv(tmp / f"{split}.csv", index=False)
            manifest.splits[split] = Split(
                clips=len(table),
                views=preprocess.views_for(split, shards_cfg),
                shards=[names[i] for i in mine],
            )
        manifest.write(tmp)
    subset.close()
    return manifest


def _build_in_pool(workers: int, folder: str, args: list[tuple]) -> list[np.ndarray]:
    """build_shard(*a) for each of `args` in a pool of processes; the lengths in that order."""
    # largest shards first (test clips carry many views), so no worker is left with a big one
    # at the end while the others idle
    order = sorted(range(len(args)), key=lambda i: -len(args[i][0]) * args[i][2])
    by_job = {}
    with (
        StopFlag().installed() as stop,
        ProcessPoolExecutor(workers, initializer=_start_worker, initargs=(folder,)) as pool,
    ):
        futures = {pool.submit(_build_in_worker, *args[i]): i for i in order}
        for future in as_completed(futures):
            by_job[futures[future]] = future.result()
            if stop.raised:  # Ctrl-C: drop the shards not started, report it once
                pool.shutdown(cancel_futures=True)
                raise interruption()
    return [by_job[i] for i in range(len(args))]


@cli
def main() -> None:
    shards_cfg = params.load("shards")["shards"]
    manifest = shards(shards_cfg, SUBSET_DIR, SHARDS_DIR)
    counts = ", ".join(f"{s} {v.clips}" for s, v in manifest.splits.items())
    hidden = ", ".join(manifest.hidden_joints) or "none"
    print(
        f"shards: {counts} clips of shape {list(manifest.clip_shape)} -> {SHARDS_DIR}; "
        f"joints rarely seen in train, zeroed: {hidden}"
    )


if __name__ == "__main__":
    main()
