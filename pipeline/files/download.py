"""Download one large file over HTTP(S) into the data folder, resuming dropped connections.

The raw UCF101 pickle is about 1 GB on a public CDN, so a dropped connection must not cost the
whole transfer: bytes land in `<dest>.part` beside the target and each retry asks for the rest
with an HTTP Range request. The target itself is only ever replaced, by os.replace, with a
complete .part that passed every check (size, not an HTML page, hashes, the caller's validator),
so DVC never caches a truncated or wrong file. Every failure is one PipelineError line naming the
URL, what happened and what was expected.

The .part survives a failed run only when it holds genuine bytes of a dropped transfer, so the
next run resumes it; bad content (an HTML page, a hash mismatch, a 4xx answer) is deleted.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.core.errors import PipelineError, fail
from pipeline.files import checksums, transfer
from pipeline.files.transfer import SCHEMES, Job, Retry, describe, notice, size_of

_HTML_STARTS = (b"<!doctype", b"<html")


class _PartialKept(PipelineError):
    """The final failure of a dropped transfer: its .part is kept so the next run resumes."""


def download(
    url: str,
    dest: Path,
    *,
    root: Path,
    retries: int,
    backoff: float,
    timeout: float,
    md5: str | None = None,
    sha256: str | None = None,
    validate: Callable[[Path], None] | None = None,
    progress: bool | None = None,
) -> Path:
    """Fetch `url` to `dest` (inside `root`) and return the resolved destination path.

    Up to `retries` retries follow the first attempt, retry n after `backoff * 2**(n-1)`
    seconds; `timeout` is the seconds without data before a connection counts as dropped.
    `md5`/`sha256` (hex) and `validate(part_path)` (raises PipelineError on bad content) must
    all pass before `dest` is replaced. `progress=None` shows a bar only on a terminal.
    """
    _check_url(url)
    _check_settings(retries, backoff, timeout)
    expected = checksums.expected({"md5": md5, "sha256": sha256}, url)
    target, part = _check_dest(dest, root)
    if progress is None:
        progress = _is_terminal(sys.stderr)
    job = Job(url=url, dest=target, part=part, timeout=timeout, show=progress)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(
            str(target.parent), f"cannot create the download folder: {describe(exc)}"
        ) from None

    opener = transfer.opener()
    try:
        _fetch(opener, job, retries, backoff)
        _verify(job, expected, validate)
    except _PartialKept:
        raise
    except PipelineError:
        job.part.unlink(missing_ok=True)  # bad content or a refused request: nothing to resume
        raise
    try:
        os.replace(job.part, target)
    except OSError as exc:
        raise fail(
            str(target),
            f"cannot move the finished download {job.part} into place: {describe(exc)}; "
            "it is kept and the next run checks it again",
        ) from None
    return target


# --- checks made before any request ---------------------------------------------------------


def _check_url(url: str) -> None:
    try:
        parts = urlsplit(str(url))
        _ = parts.port  # raises ValueError on an out-of-range port
    except ValueError as exc:
        raise fail(str(url), f"not a valid URL ({exc}); expected http(s)://host/path") from None
    if parts.scheme.lower() not in SCHEMES:
        raise fail(
            str(url),
            f"unsupported URL (scheme {parts.scheme or 'missing'!r}); only http:// and https:// "
            "URLs are downloaded",
        )
    if not parts.hostname:
        raise fail(str(url), "the URL has no host; expected http(s)://host/path")
    if any(ch.isspace() or ord(ch) < 32 for ch in str(url)):
        raise fail(repr(url), "URL contains whitespace or control characters")


def _check_settings(retries: int, backoff: float, timeout: float) -> None:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise fail("download", f"retries must be an integer >= 0, got {retries!r}")
    if not isinstance(backoff, int | float) or not 0 <= backoff < float("inf"):
        raise fail("download", f"backoff must be a number >= 0 (seconds), got {backoff!r}")
    if not isinstance(timeout, int | float) or not 0 < timeout < float("inf"):
        raise fail("download", f"timeout must be a number > 0 (seconds), got {timeout!r}")


def _check_dest(dest: Path, root: Path) -> tuple[Path, Path]:
    """Resolve the target and its .part; both must lie strictly inside `root` (links followed)."""
    base = Path(root).resolve()
    target = Path(dest).resolve()
    if target == base or not target.is_relative_to(base):
        raise fail(
            str(dest),
            f"download target resolves to {target}, outside {base}; expected a file inside it",
        )
    if target.is_dir():
        raise fail(str(dest), "download target is a folder; expected a file path")
    part = target.with_name(target.name + ".part")
    # A .part that is a link could point anywhere; writing through it would escape `root`.
    if part.is_symlink() or not part.resolve().is_relative_to(base):
        raise fail(str(part), f"partial download path is a link; expected a plain file in {base}")
    return target, part


def _is_terminal(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # a closed or odd stream is no terminal
        return False


def _fetch(opener: urllib.request.OpenerDirector, job: Job, retries: int, backoff: float) -> None:
    """Run attempts until the .part is complete; give up after `retries` retries."""
    failures: list[Retry] = []
    for attempt in range(retries + 1):
        if attempt:
            delay = backoff * 2 ** (attempt - 1)
            notice(
                f"download of {job.url}: {failures[-1]}; retry {attempt}/{retries} in {delay:g}s"
            )
            time.sleep(delay)
        try:
            transfer.attempt(opener, job)
            return
        except Retry as exc:
            failures.append(exc)
    raise _give_up(job, failures)


def _give_up(job: Job, failures: list[Retry]) -> PipelineError:
    attempts = f"{len(failures)} attempt{'s' if len(failures) != 1 else ''}"
    if all(f.offline for f in failures):
        return fail(
            job.url,
            f"cannot reach the server on {attempts}, last: {failures[-1]}; the file is needed at "
            f"{job.dest}. Offline, run `make demo` for the synthetic demo, or download the file "
            f"elsewhere and place it at {job.dest} by hand",
        )
    kept = size_of(job.part)
    if kept:
        return _PartialKept(
            f"{job.url}: download failed after {attempts}, last: {failures[-1]}; the partial "
            f"download ({kept} bytes) is kept at {job.part} and the next run resumes from it"
        )
    job.part.unlink(missing_ok=True)
    return fail(
        job.url,
        f"download failed after {attempts}, last: {failures[-1]}; expected "
        "HTTP 200 with the whole file (try again later)",
    )


# --- checks on the finished .part -----------------------------------------------------------


def _verify(job: Job, expected: dict[str, str], validate: Callable[[Path], None] | None) -> None:
    if _looks_like_html(job.part):
        raise fail(
            job.url,
            "the server sent an HTML page instead of the file (body starts with "
            "<!DOCTYPE or <html); the link may have moved or need a login - check the URL",
        )
    wrong = checksums.mismatches(job.part, expected)
    if wrong:
        raise fail(job.url, "; ".join(wrong) + " - the downloaded file was deleted")
    if validate is not None:
        validate(job.part)


def _looks_like_html(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(4096)
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    return head.startswith(_HTML_STARTS)
