"""pipeline.files.download against a local HTTP server whose behaviour each test scripts.

The server listens on 127.0.0.1 (port 0) and records every request's path and headers, so the
tests can count attempts and check the Range offsets the client asked for. Payloads are a few
KB, backoff is 0.01 s and socket timeouts are short, so the whole file runs in seconds.
"""

from __future__ import annotations

import hashlib
import random
import re
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.errors import PipelineError, fail
from pipeline.files.checksums import file_hashes
from pipeline.files.download import download

PAYLOAD = random.Random(0).randbytes(4096)
CUT = 1000  # bytes served before a scripted drop


@dataclass
class Seen:
    path: str
    headers: Message


Respond = Callable[["Handler", int], None]  # (handler, 1-based request number)


@dataclass
class Site:
    base: str
    respond: Respond = lambda h, n: send(h)  # serve PAYLOAD unless a test says otherwise
    requests: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str = "/data.bin") -> str:
        return self.base + path

    def ranges(self) -> list[str | None]:
        return [seen.headers.get("Range") for seen in self.requests]


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler left stalling must not hold up teardown
    site: Site

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # broken connections are what these tests provoke


class Handler(BaseHTTPRequestHandler):
    server: Server

    def do_GET(self) -> None:
        site = self.server.site
        with site.lock:
            site.requests.append(Seen(self.path, self.headers))
            number = len(site.requests)
        site.respond(self, number)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep pytest output clean


def send(
    h: Handler,
    data: bytes = PAYLOAD,
    *,
    ranges: bool = True,
    cut: int | None = None,
    reset: bool = False,
    stall: bool = False,
    length: int | None = None,
    content_type: str = "application/octet-stream",
    etag: str | None = '"v1"',
) -> None:
    """Serve `data`, honouring `Range: bytes=N-` unless `ranges` is False.

    cut: send only this many body bytes, then close (or reset / stall the connection).
    length: the Content-Length to claim instead of the real one.
    """
    start = 0
    wanted = h.headers.get("Range") if ranges else None
    if wanted:
        start = int(re.fullmatch(r"bytes=(\d+)-", wanted)[1])  # type: ignore[index]
        if start >= len(data):
            h.send_response(416)
            h.send_header("Content-Range", f"bytes */{len(data)}")
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        h.send_response(206)
        h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
    else:
        h.send_response(200)
    body = data[start:]
    h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(len(body) if length is None else length))
    if etag:
        h.send_header("ETag", etag)
    h.end_headers()
    h.wfile.write(body if cut is None else body[:cut])
    if stall:
        h.server.site.stop.wait(5)  # silent until teardown: the client's timeout must fire
    if reset:
        # SO_LINGER 0 turns close() into a TCP reset: the client sees ECONNRESET, not EOF.
        h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        h.connection.close()


def status(h: Handler, code: int, body: bytes = b"error", **headers: str) -> None:
    h.send_response(code)
    for name, value in headers.items():
        h.send_header(name.replace("_", "-"), value)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy from the environment would swallow requests meant for 127.0.0.1.
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture
def site() -> Iterator[Site]:
    server = Server(("127.0.0.1", 0), Handler)
    server.site = Site(base=f"http://127.0.0.1:{server.server_port}")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.site
    finally:
        server.site.stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "data" / "raw"


def fetch(url: str, root: Path, name: str = "file.bin", **options: Any) -> Path:
    settings: dict[str, Any] = {"retries": 2, "backoff": 0.01, "timeout": 2.0, "progress": False}
    settings.update(options)
    return download(url, root / name, root=root, **settings)


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


# --- success paths -----------------------------------------------------------------------------


def test_full_download_matches_bytes(site: Site, root: Path) -> None:
    path = fetch(site.url(), root)
    assert path == (root / "file.bin").resolve()
    assert path.read_bytes() == PAYLOAD
    assert leftovers(root) == ["file.bin"]  # the .part was renamed, not copied
    assert site.ranges() == [None]
    assert site.requests[0].headers.get("Accept-Encoding") == "identity"


def test_progress_bar_shows_size_and_rate(
    site: Site, root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fetch(site.url(), root, progress=True)
    err = capsys.readouterr().err
    assert "file.bin" in err and "4.00k" in err and "/s" in err


def test_dropped_connection_resumes_with_range(site: Site, root: Path) -> None:
    site.respond = lambda h, n: send(h, cut=CUT if n == 1 else None)
    assert fetch(site.url(), root).read_bytes() == PAYLOAD
    assert site.ranges() == [None, f"bytes={CUT}-"]
    # The ETag of the first answer guards the splice against a file changed in between.
    assert site.requests[1].headers.get("If-Range") == '"v1"'


def test_connection_reset_resumes(site: Site, root: Path) -> None:
    site.respond = lambda h, n: send(h, cut=CUT if n == 1 else None, reset=n == 1)
    assert fetch(site.url(), root).read_bytes() == PAYLOAD
    assert len(site.requests) == 2


def test_socket_timeout_resumes(site: Site, root: Path) -> None:
    # Every fresh request stalls after CUT bytes. On a loaded machine the client's short timeout
    # can fire before any byte of an attempt arrives; such an attempt holds nothing to resume,
    # so it is retried as it was: the only offset ever asked for is CUT, and the last ask is it.
    site.respond = lambda h, n: send(h, stall=True, cut=CUT) if not h.headers["Range"] else send(h)
    assert fetch(site.url(), root, timeout=0.3, retries=4).read_bytes() == PAYLOAD
    ranges = site.ranges()
    assert ranges[0] is None and ranges[-1] == f"bytes={CUT}-"
    assert set(ranges) == {None, f"bytes={CUT}-"}


def test_ignored_range_restarts_from_zero(site: Site, root: Path) -> None:
    site.respond = lambda h, n: send(h, cut=CUT if n == 1 else None, ranges=n == 1)
    assert fetch(site.url(), root).read_bytes() == PAYLOAD  # truncated, not appended
    assert site.ranges() == [None, f"bytes={CUT}-"]


def test_leftover_part_from_an_earlier_run_is_resumed(site: Site, root: Path) -> None:
    root.mkdir(parents=True)
    (root / "file.bin.part").write_bytes(PAYLOAD[:1500])
    assert fetch(site.url(), root).read_bytes() == PAYLOAD
    assert site.ranges() == ["bytes=1500-"]


def test_416_on_a_complete_part_installs_it(site: Site, root: Path) -> None:
    root.mkdir(parents=True)
    (root / "file.bin.part").write_bytes(PAYLOAD)
    assert fetch(site.url(), root).read_bytes() == PAYLOAD
    assert site.ranges() == [f"bytes={len(PAYLOAD)}-"]


def test_416_on_a_stale_longer_part_restarts(site: Site, root: Path) -> None:
    root.mkdir(parents=True)
    (root / "file.bin.part").write_bytes(PAYLOAD + b"stale tail")
    assert fetch(site.url(), root, retries=0).read_bytes() == PAYLOAD
    assert site.ranges() == [f"bytes={len(PAYLOAD) + 10}-", None]


@pytest.mark.parametrize("code", [500, 503, 429])
def test_transient_error_then_ok(site: Site, root: Path, code: int) -> None:
    site.respond = lambda h, n: status(h, code) if n == 1 else send(h)
    assert fetch(site.url(), root).read_bytes() == PAYLOAD
    assert len(site.requests) == 2


def test_redirect_to_http_is_followed(site: Site, root: Path) -> None:
    site.respond = lambda h, n: (
        status(h, 302, Location="/data.bin") if h.path == "/old" else send(h)
    )
    assert fetch(site.url("/old"), root).read_bytes() == PAYLOAD
    assert [seen.path for seen in site.requests] == ["/old", "/data.bin"]


def test_matching_hashes_pass(site: Site, root: Path) -> None:
    md5, sha = hashlib.md5(PAYLOAD).hexdigest(), hashlib.sha256(PAYLOAD).hexdigest()
    assert fetch(site.url(), root, md5=md5.upper(), sha256=sha).read_bytes() == PAYLOAD
    assert file_hashes(root / "file.bin") == {"md5": md5, "sha256": sha}


def test_validate_sees_the_complete_part(site: Site, root: Path) -> None:
    seen: list[tuple[str, bytes]] = []
    fetch(site.url(), root, validate=lambda p: seen.append((p.name, p.read_bytes())))
    assert seen == [("file.bin.part", PAYLOAD)]


# --- failures: one line, no file at dest -------------------------------------------------------


def failure(site: Site, root: Path, **options: Any) -> str:
    """Run a download that must fail; return its message after the common checks."""
    with pytest.raises(PipelineError) as info:
        fetch(options.pop("url", site.url()), root, **options)
    message = str(info.value)
    assert "\n" not in message
    assert not (root / "file.bin").exists()
    return message


def test_404_fails_at_once_and_deletes_the_part(site: Site, root: Path) -> None:
    root.mkdir(parents=True)
    (root / "file.bin.part").write_bytes(PAYLOAD[:100])
    site.respond = lambda h, n: status(h, 404)
    message = failure(site, root, retries=3)
    assert "404" in message and site.url() in message and "file.bin" in message
    assert len(site.requests) == 1
    assert leftovers(root) == []


@pytest.mark.parametrize("retries", [0, 3])
def test_persistent_500_retries_exactly_retries_times(site: Site, root: Path, retries: int) -> None:
    site.respond = lambda h, n: status(h, 500)
    message = failure(site, root, retries=retries)
    assert len(site.requests) == 1 + retries
    assert "500" in message and f"{1 + retries} attempt" in message and site.url() in message
    assert leftovers(root) == []


def test_content_length_larger_than_body_fails_after_retries(site: Site, root: Path) -> None:
    site.respond = lambda h, n: send(h, ranges=False, length=len(PAYLOAD) + 500)
    message = failure(site, root, retries=2)
    assert len(site.requests) == 3
    assert f"dropped after {len(PAYLOAD)} of {len(PAYLOAD) + 500} bytes" in message


def test_repeated_drops_keep_a_resumable_part(site: Site, root: Path) -> None:
    site.respond = lambda h, n: send(h, cut=CUT)
    message = failure(site, root, retries=1)
    part = root / "file.bin.part"
    assert "dropped" in message and "kept" in message and str(part) in message
    assert part.read_bytes() == PAYLOAD[: 2 * CUT]  # two attempts, each resumed
    # The next run picks up where this one stopped.
    site.respond = lambda h, n: send(h)
    assert fetch(site.url(), root).read_bytes() == PAYLOAD
    assert site.ranges()[-1] == f"bytes={2 * CUT}-"


def test_html_content_type_is_refused(site: Site, root: Path) -> None:
    site.respond = lambda h, n: send(h, b"<p>sign in</p>", content_type="text/html")
    message = failure(site, root)
    assert "HTML" in message and len(site.requests) == 1
    assert leftovers(root) == []


def test_html_body_is_refused_whatever_the_content_type(site: Site, root: Path) -> None:
    site.respond = lambda h, n: send(h, b" \r\n\t<!DOCTYPE html><html>Moved</html>")
    message = failure(site, root)
    assert "HTML" in message and "<!DOCTYPE" in message
    assert leftovers(root) == []


@pytest.mark.parametrize("target", ["file:///etc/passwd", "ftp://127.0.0.1/data.bin"])
def test_redirect_to_another_scheme_is_refused(site: Site, root: Path, target: str) -> None:
    site.respond = lambda h, n: status(h, 302, Location=target)
    message = failure(site, root)
    assert target in message and "redirect" in message
    assert len(site.requests) == 1
    assert leftovers(root) == []


@pytest.mark.parametrize("name", ["md5", "sha256"])
def test_hash_mismatch_names_both_hashes(site: Site, root: Path, name: str) -> None:
    wrong = "0" * (32 if name == "md5" else 64)
    actual = hashlib.new(name, PAYLOAD).hexdigest()
    message = failure(site, root, **{name: wrong})
    assert f"{name} mismatch" in message and wrong in message and actual in message
    assert leftovers(root) == []


def test_validate_failure_leaves_no_file(site: Site, root: Path) -> None:
    def reject(path: Path) -> None:
        raise fail(str(path), "not a pickle of skeleton clips")

    message = failure(site, root, validate=reject)
    assert "not a pickle" in message
    assert leftovers(root) == []


def test_failure_keeps_the_previous_dest(site: Site, root: Path) -> None:
    root.mkdir(parents=True)
    (root / "file.bin").write_bytes(b"old but good")
    site.respond = lambda h, n: status(h, 500)
    with pytest.raises(PipelineError):
        fetch(site.url(), root, retries=0)
    assert (root / "file.bin").read_bytes() == b"old but good"
    assert leftovers(root) == ["file.bin"]


def test_no_network_suggests_the_demo(root: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/data.bin"
    with pytest.raises(PipelineError) as info:
        fetch(url, root, retries=1)
    message = str(info.value)
    assert url in message and str((root / "file.bin").resolve()) in message
    assert "make demo" in message and "by hand" in message and "2 attempts" in message
    assert leftovers(root) == []


# --- refused before any request ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["../outside.bin", "../raw2/x.bin", "/tmp/abs.bin", "."])
def test_dest_outside_root_is_refused(site: Site, root: Path, name: str) -> None:
    with pytest.raises(PipelineError, match="outside"):
        download(site.url(), root / name, root=root, retries=0, backoff=0, timeout=1)
    assert site.requests == []
    assert not (root.parent / "outside.bin").exists()


def test_symlink_escaping_root_is_refused(site: Site, root: Path, tmp_path: Path) -> None:
    root.mkdir(parents=True)
    (root / "file.bin").symlink_to(tmp_path / "elsewhere.bin")
    with pytest.raises(PipelineError, match="outside"):
        fetch(site.url(), root)
    assert site.requests == [] and not (tmp_path / "elsewhere.bin").exists()


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://127.0.0.1/x", "data:,hello", "127.0.0.1/x", "http://"]
)
def test_non_http_url_is_refused(site: Site, root: Path, url: str) -> None:
    with pytest.raises(PipelineError) as info:
        fetch(url, root)
    assert url in str(info.value)
    assert site.requests == [] and leftovers(root) == []


def test_malformed_expected_hash_is_refused(site: Site, root: Path) -> None:
    with pytest.raises(PipelineError, match="32 hex digits"):
        fetch(site.url(), root, md5="abc")
    assert site.requests == []
