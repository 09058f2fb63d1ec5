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

import errno
import hashlib
import http.client
import os
import re
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import IO
from urllib.parse import urljoin, urlsplit

from tqdm import tqdm

from pipeline.errors import PipelineError, fail

CHUNK = 1 << 20  # bytes per network read and per hash update: flat memory whatever the file size
SCHEMES = ("http", "https")
USER_AGENT = "skeleton-action-pipeline/0.1 (python-urllib)"
HASH_DIGITS = {"md5": 32, "sha256": 64}

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)", re.IGNORECASE)
_HTML_STARTS = (b"<!doctype", b"<html")
# These 4xx mean "the server is fine, come back later", so unlike every other 4xx they retry.
_RETRY_4XX = (408, 429)
_OFFLINE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}


class _Retry(Exception):
    """An attempt failed in a way a later attempt may fix; the message says what happened."""

    def __init__(self, message: str, *, offline: bool = False) -> None:
        super().__init__(message)
        self.offline = offline  # no server was reached at all (DNS, refused, unreachable)


class _PartialKept(PipelineError):
    """The final failure of a dropped transfer: its .part is kept so the next run resumes."""


@dataclass
class _Job:
    url: str
    dest: Path
    part: Path
    timeout: float
    show: bool
    # ETag or Last-Modified of the bytes already in .part; sent as If-Range so a file that
    # changed on the server between attempts comes back whole (200) instead of spliced.
    validator: str | None = None


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
    expected = _expected_hashes(url, {"md5": md5, "sha256": sha256})
    target, part = _check_dest(dest, root)
    if progress is None:
        progress = _is_terminal(sys.stderr)
    job = _Job(url=url, dest=target, part=part, timeout=timeout, show=progress)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(
            str(target.parent), f"cannot create the download folder: {_describe(exc)}"
        ) from None

    opener = _opener()
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
            f"cannot move the finished download {job.part} into place: {_describe(exc)}; "
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


def _expected_hashes(url: str, given: dict[str, str | None]) -> dict[str, str]:
    expected = {}
    for name, value in given.items():
        if value is None:
            continue
        text = str(value).strip().lower()
        if not re.fullmatch(rf"[0-9a-f]{{{HASH_DIGITS[name]}}}", text):
            raise fail(
                url, f"expected {name} must be {HASH_DIGITS[name]} hex digits, got {value!r}"
            )
        expected[name] = text
    return expected


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


# --- the network side -----------------------------------------------------------------------


class _HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follow redirects to http(s) only; urllib's default also follows ftp:// (and says 302
    for file://), which would let a redirect reach a non-HTTP handler or hide the reason."""

    def http_error_302(self, req, fp, code, msg, headers):  # type: ignore[no-untyped-def]
        location = headers.get("location") or headers.get("uri")
        if location:
            target = urljoin(req.full_url, location)
            scheme = urlsplit(target).scheme.lower()
            if scheme not in SCHEMES:
                fp.close()
                raise fail(
                    req.full_url,
                    f"HTTP {code} redirect to {target!r} refused: only http:// and https:// "
                    f"redirects are followed, not {scheme or 'that'}://",
                )
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


def _opener() -> urllib.request.OpenerDirector:
    # Built by hand rather than build_opener() so that no file:, ftp: or data: handler exists.
    opener = urllib.request.OpenerDirector()
    for handler in (
        urllib.request.ProxyHandler(),
        urllib.request.UnknownHandler(),
        urllib.request.HTTPHandler(),
        urllib.request.HTTPSHandler(),
        urllib.request.HTTPDefaultErrorHandler(),
        _HttpOnlyRedirects(),
        urllib.request.HTTPErrorProcessor(),
    ):
        opener.add_handler(handler)
    return opener


def _fetch(opener: urllib.request.OpenerDirector, job: _Job, retries: int, backoff: float) -> None:
    """Run attempts until the .part is complete; give up after `retries` retries."""
    failures: list[_Retry] = []
    for attempt in range(retries + 1):
        if attempt:
            delay = backoff * 2 ** (attempt - 1)
            _notice(
                f"download of {job.url}: {failures[-1]}; retry {attempt}/{retries} in {delay:g}s"
            )
            time.sleep(delay)
        try:
            _attempt(opener, job)
            return
        except _Retry as exc:
            failures.append(exc)
    raise _give_up(job, failures)


def _attempt(opener: urllib.request.OpenerDirector, job: _Job) -> None:
    offset = _size(job.part)
    request = urllib.request.Request(job.url, headers=_headers(job, offset))
    try:
        response = opener.open(request, timeout=job.timeout)
    except urllib.error.HTTPError as exc:
        exc.close()  # the error page body is of no use, and would hold the socket open
        if exc.code == 416 and offset:
            _unsatisfiable_range(opener, job, exc.headers, offset)
            return
        raise _http_failure(job, exc.code, exc.reason) from None
    except urllib.error.URLError as exc:
        raise _network_failure(job, exc.reason) from None
    except http.client.InvalidURL as exc:
        raise fail(job.url, f"invalid URL: {exc}") from None
    except (OSError, http.client.HTTPException) as exc:
        # The connection was made but no usable status line came back (closed, timed out).
        raise _Retry(f"no response from the server ({_describe(exc)})") from None
    with response:
        _receive(job, response, offset)


def _headers(job: _Job, offset: int) -> dict[str, str]:
    # identity: a compressed body would make byte offsets and Content-Length meaningless here.
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if job.validator:
            headers["If-Range"] = job.validator
    return headers


def _unsatisfiable_range(
    opener: urllib.request.OpenerDirector, job: _Job, headers: Message, offset: int
) -> None:
    """HTTP 416 to `Range: bytes=offset-`: the .part is complete, or stale and restarted."""
    found = _UNSATISFIED_RANGE.match(headers.get("Content-Range", "") or "")
    if found and int(found[1]) == offset:
        return  # a previous run got every byte; the checks in _verify decide whether it is good
    # Larger than the file, or of unknown size: it is not a prefix we can trust.
    job.part.unlink(missing_ok=True)
    job.validator = None
    _attempt(opener, job)  # no Range now, so a second 416 cannot recurse


def _http_failure(job: _Job, code: int, reason: object) -> Exception:
    text = f"HTTP {code} {_one_line(str(reason))}".strip()
    if code >= 500 or code in _RETRY_4XX:
        return _Retry(text)
    if 300 <= code < 400:
        # urllib ends a redirect chain this way when it loops or runs past ten hops.
        return fail(job.url, f"HTTP {code}: looping or unusable redirect; expected HTTP 200")
    hint = "check the URL" if code == 404 else "check the URL and access rights"
    return fail(
        job.url,
        f"{text}; expected HTTP 200 with the file ({hint}, or place the file "
        f"at {job.dest} by hand)",
    )


def _network_failure(job: _Job, reason: object) -> Exception:
    if isinstance(reason, ssl.SSLCertVerificationError):
        # A bad certificate stays bad however often we ask.
        return fail(
            job.url,
            f"TLS certificate check failed ({_describe(reason)}); expected a "
            "valid certificate for the host",
        )
    offline = isinstance(reason, (socket.gaierror, ConnectionRefusedError, TimeoutError)) or (
        isinstance(reason, OSError) and reason.errno in _OFFLINE_ERRNOS
    )
    return _Retry(f"cannot connect ({_describe(reason)})", offline=offline)


def _receive(job: _Job, response: http.client.HTTPResponse, offset: int) -> None:
    """Stream one 2xx response into the .part; raise _Retry if it ends early."""
    headers = response.headers
    if headers.get_content_type() == "text/html":
        raise fail(
            job.url,
            "the server sent an HTML page (Content-Type text/html) instead of the "
            "file; the link may have moved or need a login - check the URL",
        )
    if response.status == 206:
        start, total = _content_range(job, headers)
        if start != offset:
            job.part.unlink(missing_ok=True)
            job.validator = None
            raise _Retry(f"the server resumed at byte {start} instead of {offset}; restarting")
        mode = "ab"
    else:
        # A full body: either we asked for it, or the server ignored Range, so start over.
        offset, total, mode = 0, _int_header(headers, "Content-Length"), "wb"
    job.validator = _validator(headers)

    try:
        with open(job.part, mode) as handle, _bar(job, total, offset) as bar:
            _stream(response, handle, bar, offset, total)
    except OSError as exc:  # disk full, no permission: the network errors are _Retry by now
        raise fail(str(job.part), f"cannot write the download: {_describe(exc)}") from None


def _stream(
    response: http.client.HTTPResponse, handle: IO[bytes], bar: tqdm, done: int, total: int | None
) -> None:
    while True:
        try:
            chunk = response.read1(CHUNK)
        except (OSError, http.client.HTTPException) as exc:
            raise _Retry(_dropped(done, total, exc)) from None
        if not chunk:
            break
        handle.write(chunk)
        done += len(chunk)
        bar.update(len(chunk))
    # http.client returns a short body without complaint when the peer closes early.
    if total is not None and done != total:
        raise _Retry(_dropped(done, total))
    # On disk before the rename, so a crash cannot leave a renamed but empty file for DVC.
    handle.flush()
    os.fsync(handle.fileno())


def _content_range(job: _Job, headers: Message) -> tuple[int, int | None]:
    found = _CONTENT_RANGE.match(headers.get("Content-Range", "") or "")
    if not found:
        # Without it the body's place in the file is unknown: drop the prefix, ask for it all.
        job.part.unlink(missing_ok=True)
        raise _Retry("HTTP 206 without a usable Content-Range; restarting from zero")
    start, end, total = int(found[1]), int(found[2]), found[3]
    return start, (end + 1 if total == "*" else int(total))


def _int_header(headers: Message, name: str) -> int | None:
    value = headers.get(name)
    try:
        return int(value) if value is not None and int(value) >= 0 else None
    except ValueError:
        return None


def _validator(headers: Message) -> str | None:
    etag = headers.get("ETag")
    if etag and not etag.startswith("W/"):  # If-Range accepts strong validators only
        return etag
    return headers.get("Last-Modified")


def _bar(job: _Job, total: int | None, offset: int) -> tqdm:
    return tqdm(
        total=total,
        initial=offset,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=job.dest.name,
        disable=not job.show,
        file=sys.stderr,
        dynamic_ncols=True,
    )


def _dropped(done: int, total: int | None, exc: BaseException | None = None) -> str:
    of = f" of {total}" if total is not None else ""
    why = f" ({_describe(exc)})" if exc is not None else ""
    return f"connection dropped after {done}{of} bytes{why}"


def _give_up(job: _Job, failures: list[_Retry]) -> PipelineError:
    attempts = f"{len(failures)} attempt{'s' if len(failures) != 1 else ''}"
    if all(f.offline for f in failures):
        return fail(
            job.url,
            f"cannot reach the server on {attempts}, last: {failures[-1]}; the file is needed at "
            f"{job.dest}. Offline, run `make demo` for the synthetic demo, or download the file "
            f"elsewhere and place it at {job.dest} by hand",
        )
    kept = _size(job.part)
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


def _verify(job: _Job, expected: dict[str, str], validate: Callable[[Path], None] | None) -> None:
    if _looks_like_html(job.part):
        raise fail(
            job.url,
            "the server sent an HTML page instead of the file (body starts with "
            "<!DOCTYPE or <html); the link may have moved or need a login - check the URL",
        )
    if expected:
        actual = file_hashes(job.part, tuple(expected))
        wrong = [
            f"{name} mismatch: expected {expected[name]}, got {actual[name]}"
            for name in expected
            if actual[name] != expected[name]
        ]
        if wrong:
            raise fail(job.url, "; ".join(wrong) + " - the downloaded file was deleted")
    if validate is not None:
        validate(job.part)


def _looks_like_html(path: Path) -> bool:
    with open(path, "rb") as handle:
        head = handle.read(4096)
    head = head.removeprefix(b"\xef\xbb\xbf").lstrip().lower()
    return head.startswith(_HTML_STARTS)


def file_hashes(path: Path, names: tuple[str, ...] = ("md5", "sha256")) -> dict[str, str]:
    """Hex digests of `path` for each hashlib name, reading it once in CHUNK-sized pieces."""
    digests = {name: hashlib.new(name, usedforsecurity=False) for name in names}
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            for digest in digests.values():
                digest.update(chunk)
    return {name: digest.hexdigest() for name, digest in digests.items()}


# --- small text helpers ---------------------------------------------------------------------


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _describe(exc: object) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return _one_line(exc.strerror)
    return _one_line(str(exc)) or type(exc).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _notice(text: str) -> None:
    # tqdm.write keeps a live progress bar intact; retries are worth seeing even without one.
    tqdm.write(_one_line(text), file=sys.stderr)
