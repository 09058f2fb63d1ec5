"""Benchmark: the restricted reader (`pklio.load_pickle`) against C's `pickle.load`, legitimate
and hostile files of 20 MB to 1 GB.

Target, for a file of S bytes: loaded or refused within 2x the time C's `pickle.load` takes on
a legitimate PYSKL file of the same size, + 1 s; peak RSS <= 1.5 S + 300 MB. The legitimate
reference is written here (clips of about 70 KB of float16, as UCF101's) and timed in the same
run; the hostile files scale up the attacks of issue 24 (tiny instructions, memo chains, one
string encoded again and again, a huge tuple used as the key of many dicts, keys sharing one
hash, many cheap calls). C's `pickle.load` is never run on a hostile file: some take minutes.
Each measurement runs in a fresh child (see `bench.measure`).
"""

from __future__ import annotations

import pickle
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from bench.context import Context
from bench.measure import BenchError, measure_best
from bench.report import MB, Check, Row

REAL = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "mime5_2d.pkl"
OVERHEAD = 300 * MB  # the RSS target's constant: the interpreter, numpy, the scan's state


# ---- the files (also used, scaled down, by tests/test_pickle_bombs.py) ----------------------


def _repeat(out: BinaryIO, unit: bytes, size: int) -> None:
    """`unit` written again and again, about `size` bytes in all (in 1 MB chunks)."""
    count = max(1, size // len(unit))
    chunk = unit * max(1, MB // len(unit))
    full, rest = divmod(count, MB // len(unit) or 1)
    for _ in range(full):
        out.write(chunk)
    out.write(unit * rest)


def write_legit(out: BinaryIO, size: int, frames: int = 350) -> None:
    """A PYSKL file of about `size` bytes: 1-person clips of `frames` frames (about 70 KB each at
    350, as UCF101's), float16, protocol 4 as PYSKL writes them."""
    rng = np.random.default_rng(0)
    per_clip = frames * 17 * 3 * 2 + 300
    clips = max(1, size // per_clip)
    keypoint = rng.standard_normal((1, frames, 17, 2)).astype(np.float16)
    score = rng.random((1, frames, 17)).astype(np.float16)
    annotations = [
        {
            "frame_dir": f"v_Bench_g{i // 7:02d}_c{i % 7:02d}",
            "label": i % 101,
            "img_shape": (240, 320),
            "original_shape": (240, 320),
            "total_frames": frames,
            "keypoint": keypoint.copy(),
            "keypoint_score": score.copy(),
        }
        for i in range(clips)
    ]
    names = [a["frame_dir"] for a in annotations]
    data = {"split": {"train1": names[1:], "test1": names[:1]}, "annotations": annotations}
    pickle.dump(data, out, protocol=4)


def write_small_arrays(out: BinaryIO, size: int) -> None:
    """A legitimate shape with many instructions per byte: clips of 2 frames."""
    write_legit(out, size, frames=2)


def write_tiny_ops(out: BinaryIO, size: int) -> None:
    """NONE, POP, NONE, POP ...: two instructions per two bytes."""
    out.write(b"\x80\x02N")
    _repeat(out, b"0N", size)
    out.write(b".")


def write_memo_gets(out: BinaryIO, size: int) -> None:
    """A memo GET then a POP, again and again (a chain of GETs)."""
    out.write(b"\x80\x04N\x94")
    _repeat(out, b"h\x000", size)
    out.write(b".")


def write_memoize(out: BinaryIO, size: int) -> None:
    """MEMOIZE again and again: each one a new memo entry."""
    out.write(b"\x80\x04N")
    _repeat(out, b"\x94", size)
    out.write(b".")


def _calls(size: int, ops_per_call: int) -> int:
    """How many repeats of an attack fit well inside the reader's instruction budget for a
    file of `size` bytes (an attack "inside the limits"; the rest of the file is padding)."""
    from pipeline.files import unpickler

    return int(0.8 * (unpickler.OPS_BASE + size // unpickler.OPS_BYTES)) // ops_per_call


def _pad(out: BinaryIO, size: int) -> None:
    """A byte string pushed and popped, to make the file `size` bytes (costs the scan nothing)."""
    rest = max(0, size - out.tell() - 11)
    out.write(b"\x8e" + struct.pack("<Q", rest))
    while rest > 0:
        out.write(bytes(min(rest, MB)))
        rest -= MB
    out.write(b"0")


def write_encode_reuse(out: BinaryIO, size: int) -> None:
    """_codecs.encode(text, 'latin1') called again and again on one memoized text of size/4
    bytes, each result kept in a list: each call copies the text."""
    text = size // 4
    out.write(b"\x80\x02]q\x00c_codecs\nencode\nq\x010")
    out.write(b"X" + struct.pack("<I", text) + b"x" * text + b"q\x020")
    out.write(b"X\x06\x00\x00\x00latin1q\x030")
    out.write(b"h\x01h\x02h\x03\x86Ra" * 100)
    _pad(out, size)
    out.write(b".")


def write_tuple_key(out: BinaryIO, size: int) -> None:
    """A tuple of many items, then 20,000 dicts with that tuple as their key, in a list."""
    items = _calls(size, 1) - 100_000
    out.write(b"\x80\x02](")
    out.write(b"K\x01" * items)
    out.write(b"tq\x000")
    out.write(b"}h\x00Nsa" * 20_000)
    _pad(out, size)
    out.write(b".")


def write_same_hash(out: BinaryIO, size: int, keys: int | None = None) -> None:
    """One dict whose integer keys all share one hash (multiples of 2**61 - 1)."""
    prime = 2**61 - 1
    out.write(b"\x80\x02}(")
    for unit in range(1, 1 + (keys or _calls(size, 2))):
        out.write(b"\x8a\x10" + (unit * prime).to_bytes(16, "little", signed=True) + b"N")
    out.write(b"u")
    _pad(out, size)
    out.write(b".")


def write_many_calls(out: BinaryIO, size: int, calls: int | None = None) -> None:
    """bytes() called again and again (an allowed call, each a Python function call)."""
    out.write(b"\x80\x02c__builtin__\nbytes\nq\x000]")
    out.write(b"h\x00)Ra" * (calls or _calls(size, 4)))
    _pad(out, size)
    out.write(b".")


def write_shared_blob(out: BinaryIO, size: int) -> None:
    """A byte string of size/2 bytes, then a list holding it again and again (memo GETs)."""
    blob = size // 2 // 4096 * 4096  # whole 4 KB units, as _repeat writes them
    out.write(b"\x80\x04]\x8e" + struct.pack("<Q", blob))
    _repeat(out, b"x" * 4096, blob)
    out.write(b"\x940(" + b"h\x00" * _calls(size, 1) + b"e")
    _pad(out, size)
    out.write(b".")


HOSTILE: dict[str, Callable[[BinaryIO, int], None]] = {
    "tiny instructions": write_tiny_ops,
    "memo GET chain": write_memo_gets,
    "MEMOIZE": write_memoize,
    "_codecs.encode of one memoized text": write_encode_reuse,
    "a huge tuple as the key of many dicts": write_tuple_key,
    "dict keys sharing one hash": write_same_hash,
    "many allowed calls": write_many_calls,
    "one large byte string referenced again and again": write_shared_blob,
    "many small arrays (legitimate shape)": write_small_arrays,
}


def write(path: Path, maker: Callable[[BinaryIO, int], None], size: int) -> Path:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_suffix(".tmp"), "wb") as out:
            maker(out, size)
        path.with_suffix(".tmp").rename(path)
    return path


# ---- the children ------------------------------------------------------------------------------


def peak_rss() -> int:
    """This process's own peak RSS in bytes: VmHWM, which (unlike ru_maxrss) does not count
    the parent's pages that a forked child held before it exec'd Python."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child_c_load(pkl: str) -> dict[str, Any]:
    start = time.perf_counter()
    with open(pkl, "rb") as handle:
        pickle.load(handle, encoding="latin1")  # noqa: S301 - the reference, on a legit file
    return {"seconds": time.perf_counter() - start, "rss": peak_rss()}


def child_restricted(pkl: str) -> dict[str, Any]:
    from pipeline.core.errors import PipelineError
    from pipeline.files import pklio

    start = time.perf_counter()
    try:
        pklio.load_pickle(pkl)
        outcome = "loaded"
    except PipelineError as exc:
        outcome = "refused: " + str(exc).split(": ", 2)[-1]
    return {"seconds": time.perf_counter() - start, "outcome": outcome, "rss": peak_rss()}


# ---- the rows ----------------------------------------------------------------------------------


def _row(ctx: Context, name: str, pkl: Path, ref_s: float, ref_note: str) -> Row:
    size = pkl.stat().st_size
    got = measure_best(ctx, "bench.unpickle:child_restricted", {"pkl": str(pkl)})
    seconds, rss = got.result["seconds"], got.result["rss"]
    limit_s = 2 * ref_s + 1
    limit_rss = 1.5 * size + OVERHEAD
    outcome = got.result["outcome"]
    return Row(
        name=f"unpickle, {name}",
        wall_s=seconds,
        rss_bytes=rss,
        throughput=size / seconds / MB,
        unit="MiB/s",
        reference=ref_note,
        ratio=seconds / ref_s,
        checks=[
            Check("time", seconds, limit_s, unit=" s"),
            Check("RSS", rss / MB, limit_rss / MB, unit=" MiB"),
        ],
        note=f"{size / MB:,.0f} MiB; {outcome[:160]}",
    )


def run(ctx: Context) -> list[Row]:
    size = 4 * MB if ctx.quick else 200 * MB
    folder = ctx.results / "unpickle"
    rows = []
    try:
        mirror = ctx.mirror()
    except (BenchError, OSError) as exc:  # the other rows do not need it
        rows.append(Row(name="unpickle, UCF101 mirror", skipped=f"no mirror: {exc}"[:200]))
        mirror = None
    for name, pkl in (("UCF101 mirror", mirror), ("mime5 (real)", REAL)):
        if pkl is not None and pkl.exists():
            ref = measure_best(ctx, "bench.unpickle:child_c_load", {"pkl": str(pkl)})
            ref_s = ref.result["seconds"]
            note = f"pickle.load {ref_s:.2f} s, {ref.result['rss'] / MB:,.0f} MiB"
            rows.append(_row(ctx, name, pkl, ref_s, note))
    legit = write(folder / f"legit-{size // MB}.pkl", write_legit, size)
    ref = measure_best(ctx, "bench.unpickle:child_c_load", {"pkl": str(legit)})
    ref_s = ref.result["seconds"]
    note = f"pickle.load of a legit {legit.stat().st_size / MB:,.0f} MiB file {ref_s:.2f} s"
    rows.append(_row(ctx, "legit PYSKL", legit, ref_s, note))
    for number, (name, maker) in enumerate(HOSTILE.items()):
        pkl = write(folder / f"hostile-{number}-{size // MB}.pkl", maker, size)
        rows.append(_row(ctx, name, pkl, ref_s, note))
    return rows
