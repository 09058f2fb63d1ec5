"""One HTTP(S) transfer of a file into its `.part`, resuming what an earlier attempt left.

`attempt` asks for the bytes the .part lacks (an HTTP Range request, with If-Range so a file
changed on the server comes back whole) and streams them in; it raises `Retry` for what a later
attempt may fix (a dropped connection, a 5xx, no server) and a PipelineError for what it cannot
(a 4xx, an HTML page, a bad certificate, a redirect off http(s)). `pipeline.files.download`
decides how often to try and what the finished file must pass.
"""

from __future__ import annotations

import errno
import http.client
import os
import re
import socket
import ssl
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import IO
from urllib.parse import urljoin, urlsplit

from tqdm import tqdm

from pipeline.core.errors import fail

CHUNK = 1 << 20  # bytes per network read: flat memory whatever the file size
SCHEMES = ("http", "https")
USER_AGENT = "skeleton-action-pipeline/0.1 (python-urllib)"

_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)", re.IGNORECASE)
_UNSATISFIED_RANGE = re.compile(r"bytes\s+\*/(\d+)", re.IGNORECASE)
# These 4xx mean "the server is fine, come back later", so unlike every other 4xx they retry.
_RETRY_4XX = (408, 429)
_OFFLINE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN}


class Retry(Exception):
    """An attempt failed in a way a later attempt may fix; the message says what happened."""

    def __init__(self, message: str, *, offline: bool = False) -> None:
        super().__init__(message)
        self.offline = offline  # no server was reached at all (DNS, refused, unreachable)


@dataclass
class Job:
    url: str
    dest: Path
    part: Path
    timeout: float
    show: bool
    # ETag or Last-Modified of the bytes already in .part; sent as If-Range so a file that
    # changed on the server between attempts comes back whole (200) instead of spliced.
    validator: str | None = None


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


def opener() -> urllib.request.OpenerDirector:
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


def attempt(opener: urllib.request.OpenerDirector, job: Job) -> None:
    offset = size_of(job.part)
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
        raise Retry(f"no response from the server ({describe(exc)})") from None
    with response:
        _receive(job, response, offset)


def _headers(job: Job, offset: int) -> dict[str, str]:
    # identity: a compressed body would make byte offsets and Content-Length meaningless here.
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if job.validator:
            headers["If-Range"] = job.validator
    return headers


def _unsatisfiable_range(
    opener: urllib.request.OpenerDirector, job: Job, headers: Message, offset: int
) -> None:
    """HTTP 416 to `Range: bytes=offset-`: the .part is complete, or stale and restarted."""
    found = _UNSATISFIED_RANGE.match(headers.get("Content-Range", "") or "")
    if found and int(found[1]) == offset:
        return  # a previous run got every byte; the checks in _verify decide whether it is good
    # Larger than the file, or of unknown size: it is not a prefix we can trust.
    job.part.unlink(missing_ok=True)
    job.validator = None
    attempt(opener, job)  # no Range now, so a second 416 cannot recurse


def _http_failure(job: Job, code: int, reason: object) -> Exception:
    text = f"HTTP {code} {one_line(str(reason))}".strip()
    if code >= 500 or code in _RETRY_4XX:
        return Retry(text)
    if 300 <= code < 400:
        # urllib ends a redirect chain this way when it loops or runs past ten hops.
        return fail(job.url, f"HTTP {code}: looping or unusable redirect; expected HTTP 200")
    hint = "check the URL" if code == 404 else "check the URL and access rights"
    return fail(
        job.url,
        f"{text}; expected HTTP 200 with the file ({hint}, or place the file "
        f"at {job.dest} by hand)",
    )


def _network_failure(job: Job, reason: object) -> Exception:
    if isinstance(reason, ssl.SSLCertVerificationError):
        # A bad certificate stays bad however often we ask.
        return fail(
            job.url,
            f"TLS certificate check failed ({describe(reason)}); expected a "
            "valid certificate for the host",
        )
    offline = isinstance(reason, (socket.gaierror, ConnectionRefusedError, TimeoutError)) or (
        isinstance(reason, OSError) and reason.errno in _OFFLINE_ERRNOS
    )
    return Retry(f"cannot connect ({describe(reason)})", offline=offline)


def _receive(job: Job, response: http.client.HTTPResponse, offset: int) -> None:
    """Stream one 2xx response into the .part; raise Retry if it ends early."""
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
            raise Retry(f"the server resumed at byte {start} instead of {offset}; restarting")
        mode = "ab"
    else:
        # A full body: either we asked for it, or the server ignored Range, so start over.
        offset, total, mode = 0, _int_header(headers, "Content-Length"), "wb"
    job.validator = _validator(headers)

    try:
        with open(job.part, mode) as handle, _bar(job, total, offset) as bar:
            _stream(response, handle, bar, offset, total)
    except OSError as exc:  # disk full, no permission: the network errors are Retry by now
        raise fail(str(job.part), f"cannot write the download: {describe(exc)}") from None


def _stream(
    response: http.client.HTTPResponse, handle: IO[bytes], bar: tqdm, done: int, total: int | None
) -> None:
    while True:
        try:
            chunk = response.read1(CHUNK)
        except (OSError, http.client.HTTPException) as exc:
            raise Retry(_dropped(done, total, exc)) from None
        if not chunk:
            break
        handle.write(chunk)
        done += len(chunk)
        bar.update(len(chunk))
    # http.client returns a short body without complaint when the peer closes early.
    if total is not None and done != total:
        raise Retry(_dropped(done, total))
    # On disk before the rename, so a crash cannot leave a renamed but empty file for DVC.
    handle.flush()
    os.fsync(handle.fileno())


def _content_range(job: Job, headers: Message) -> tuple[int, int | None]:
    found = _CONTENT_RANGE.match(headers.get("Content-Range", "") or "")
    if not found:
        # Without it the body's place in the file is unknown: drop the prefix, ask for it all.
        job.part.unlink(missing_ok=True)
        raise Retry("HTTP 206 without a usable Content-Range; restarting from zero")
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


def _bar(job: Job, total: int | None, offset: int) -> tqdm:
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
    why = f" ({describe(exc)})" if exc is not None else ""
    return f"connection dropped after {done}{of} bytes{why}"


# --- small text helpers ---------------------------------------------------------------------


def size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def describe(exc: object) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return one_line(exc.strerror)
    return one_line(str(exc)) or type(exc).__name__


def one_line(text: str) -> str:
    return " ".join(text.split())


def notice(text: str) -> None:
    # tqdm.write keeps a live progress bar intact; retries are worth seeing even without one.
    tqdm.write(one_line(text), file=sys.stderr)
