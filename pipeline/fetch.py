"""Get the raw skeleton pickle to data.pkl, validated, and track it with DVC (`make data`).

This is not a pipeline stage, on purpose: the raw pickle is data, tracked by a `.dvc` file,
the way DVC tracks any dataset. A stage's output is DVC's to check out and delete (an
experiment run on a workspace with no committed lock removes such a file), so a pickle you put
in place must never be one; as tracked data it is left alone by `dvc repro`, `dvc exp run`
and `dvc checkout`, and queued experiments find it in the DVC cache.

- A file already at data.pkl is validated (and checked against data.md5 / data.sha256) and
  kept as it is: it is never replaced or rewritten.
- Otherwise, `data.source: ucf101` downloads data.url (progress bar, resume, checksums), but
  only to a path whose file name is the URL's: a missing pickle of your own cannot be
  downloaded, and a pickle of another name is never filled with UCF101.
- Otherwise, `data.source: synthetic` writes the offline stand-in, in the same format.
- A data.pkl under data/poses/ is a pose stage's pickle of your videos (pose.videos): `dvc
  repro` makes it, so there is nothing to get or track here.

A file this command wrote is then tracked with `dvc add` when run in a DVC repository (commit
the `.dvc` file it prints); a file of yours is never added for you: `dvc add` it yourself.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

from pipeline.core import params
from pipeline.core.errors import cli, fail
from pipeline.core.params import DataParams, FetchParams, SyntheticParams
from pipeline.core.paths import POSES_DIR, RAW_DIR
from pipeline.dataset import synthetic
from pipeline.files import checksums, pklio
from pipeline.files.atomic import prepare_outputs
from pipeline.files.download import download


def validate(path: Path) -> None:
    """A usable PYSKL pickle: loads through the restricted unpickler and has splits + clips."""
    splits, annotations = pklio.check_dataset(pklio.load_pickle(path), str(path))
    if not annotations:
        raise fail(str(path), "the pickle holds no annotations")


def verify_hashes(path: Path, data_cfg: DataParams) -> None:
    """A present file must match data.md5 / data.sha256 when they are set."""
    given = {"md5": data_cfg.md5, "sha256": data_cfg.sha256}
    wrong = checksums.mismatches(path, checksums.expected(given, params.PARAMS_FILE))
    if wrong:
        raise fail(str(path), "; ".join(wrong))


def url_file_name(url: str) -> str:
    return PurePosixPath(unquote(urlsplit(url).path)).name


def track_hint(target: Path) -> str:
    return f"dvc add {target} && git add {target}.dvc && git commit"


def obtain(data_cfg: DataParams, fetch_cfg: FetchParams, synth: SyntheticParams) -> str:
    """Put a valid pickle at data.pkl unless one is there; return what was done, or "" if the
    file was there already."""
    target = Path(data_cfg.pkl)
    if target.exists():
        verify_hashes(target, data_cfg)
        validate(target)
        return ""
    prepare_outputs(files=[target])
    if data_cfg.source == "synthetic":
        synthetic.write(
            target,
            clips_per_group=tuple(synth.clips_per_group),
            frames=tuple(synth.frames),
            seed=synth.seed,
            mirror=synth.mirror,
        )
        return f"wrote the synthetic stand-in to {target}"
    if target.name != url_file_name(data_cfg.url):
        raise fail(
            str(target),
            f"no such file, and it is not the file data.url names "
            f"({url_file_name(data_cfg.url)}), so it is not downloaded: put your pickle there "
            f"and track it with "
            f"`{track_hint(target)}`",
        )
    download(
        data_cfg.url,
        target,
        root=RAW_DIR,
        retries=fetch_cfg.retries,
        backoff=fetch_cfg.backoff,
        timeout=fetch_cfg.timeout,
        md5=data_cfg.md5,
        sha256=data_cfg.sha256,
        validate=validate,
    )
    return f"downloaded {data_cfg.url} to {target}"


def track(target: Path) -> None:
    """`dvc add` a file this command wrote, when the working directory is a DVC repository."""
    if not Path(".dvc").is_dir():
        return
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "add", "--quiet", str(target)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise fail(str(target), f"written, but `dvc add` failed: {reason}")


@cli
def main() -> None:
    loaded = params.load("data", "fetch", "synthetic")
    target = Path(loaded["data"].pkl)
    if target.parent == POSES_DIR:
        print(
            f"fetch: nothing to get: {target} is a pose stage's pickle of your videos (dvc repro)"
        )
        return
    done = obtain(loaded["data"], loaded["fetch"], loaded["synthetic"])
    if not done:
        tracked = Path(f"{target}.dvc").exists()
        hint = "" if tracked else f"; to version it with DVC: `{track_hint(target)}`"
        print(f"fetch: kept the valid file already at {target}{hint}")
        return
    track(target)
    print(f"fetch: {done}" + (f"; tracked by {target}.dvc" if Path(".dvc").is_dir() else ""))


if __name__ == "__main__":
    main()
