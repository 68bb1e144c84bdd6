"""download.py against a real HTTP server on 127.0.0.1 that can drop, fail, stall or ignore ranges on demand."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers import ROOT
from trafficsigns.core.errors import PipelineError
from trafficsigns.core.fsutil import md5sum
from trafficsigns.data.download import fetch, fetch_all, require_zip

pytestmark = pytest.mark.timeout(30)

_rng = random.Random(0)
FILES = {f"archive{i}.zip": _rng.randbytes(size) for i, size in enumerate((100_000, 5_000, 1))}
MD5 = {name: hashlib.md5(data).hexdigest() for name, data in FILES.items()}
BIG = "archive0.zip"
K = 12_345  # bytes served before a dropped connection
FAST = dict(retries=3, backoff=0.01, timeout=2.0)  # retries must stay cheap


@dataclass
class Server:
    """What the handler serves, the faults it injects (each list is consumed one request at a time) and what it saw."""

    url: str
    files: dict[str, bytes] = field(default_factory=lambda: dict(FILES))
    drops: list[int] = field(default_factory=list)  # body bytes to send before hanging up
    statuses: list[int] = field(default_factory=list)  # error statuses to answer instead of the file
    stalls: list[float] = field(default_factory=list)  # seconds to wait before answering
    pauses: list[float] = field(default_factory=list)  # seconds to wait after the (partial) body
    ignore_range: bool = False
    trickles: list[float] = field(default_factory=list)  # seconds between 4 KiB pieces of the body
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)  # body bytes written per served request

    def ranges(self) -> list[str | None]:
        return [headers.get("Range") for _, headers in self.requests]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        st: Server = self.server.state
        name = self.path.lstrip("/")
        st.requests.append((name, dict(self.headers)))
        if st.stalls:
            time.sleep(st.stalls.pop(0))
        if st.statuses:
            return self._empty(st.statuses.pop(0))
        if name not in st.files:
            return self._empty(404)
        body = st.files[name]
        start = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if start and not st.ignore_range:
            start = int(start[1])
            if start >= len(body):
                return self._empty(416, {"Content-Range": f"bytes */{len(body)}"})
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            body = body[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))  # the full length, even when dropping early
        self.end_headers()
        if st.drops:
            body = body[: st.drops.pop(0)]
            self.close_connection = True
        st.sent.append(len(body))  # before writing: the client may finish reading before we return
        try:
            if st.trickles:
                delay = st.trickles.pop(0)
                for i in range(0, len(body), 4096):
                    self.wfile.write(body[i : i + 4096])
                    self.wfile.flush()
                    time.sleep(delay)
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up or was killed, as tests intend
            return
        if st.pauses:
            time.sleep(st.pauses.pop(0))

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture(autouse=True)
def _direct(monkeypatch):
    """Reach 127.0.0.1 directly even where the environment configures an HTTP proxy."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.state = Server(url=f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield httpd.state
    httpd.shutdown()
    httpd.server_close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part") or ".tmp" in p.name)


@pytest.mark.parametrize("slash", ["", "/"])
def test_fetch_all_downloads_and_verifies(server, tmp_path, slash):
    paths = fetch_all(MD5, tmp_path, mirror="", base_url=server.url + slash, verify=True, **FAST)
    assert paths == [tmp_path / name for name in FILES]
    assert {p.name: p.read_bytes() for p in paths} == FILES
    assert _leftovers(tmp_path) == []
    assert [name for name, _ in server.requests] == list(FILES)


def test_checksum_mismatch_names_file_and_sums(server, tmp_path):
    server.files[BIG] = b"not the archive"
    with pytest.raises(PipelineError) as err:
        fetch(f"{server.url}/{BIG}", tmp_path / BIG, checksum=MD5[BIG], **FAST)
    message = str(err.value)
    for part in (BIG, MD5[BIG], hashlib.md5(b"not the archive").hexdigest(), "data.verify: false"):
        assert part in message
    assert list(tmp_path.iterdir()) == []


def test_dropped_connection_resumes_with_range(server, tmp_path):
    server.drops = [K]
    fetch(f"{server.url}/{BIG}", tmp_path / BIG, checksum=MD5[BIG], **FAST)
    assert server.ranges() == [None, f"bytes={K}-"]
    assert md5sum(tmp_path / BIG) == MD5[BIG]
    assert _leftovers(tmp_path) == []


def test_part_from_earlier_run_is_resumed(server, tmp_path):
    (tmp_path / f"{BIG}.part").write_bytes(FILES[BIG][:K])
    fetch(f"{server.url}/{BIG}", tmp_path / BIG, checksum=MD5[BIG], **FAST)
    assert server.ranges() == [f"bytes={K}-"]
    assert server.sent == [len(FILES[BIG]) - K]
    assert (tmp_path / BIG).read_bytes() == FILES[BIG]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    server.ignore_range = True
    stale = b"stale bytes from another file"
    (tmp_path / f"{BIG}.part").write_bytes(stale)
    fetch(f"{server.url}/{BIG}", tmp_path / BIG, checksum=MD5[BIG], **FAST)
    assert server.ranges() == [f"bytes={len(stale)}-"]
    assert (tmp_path / BIG).read_bytes() == FILES[BIG]


@pytest.mark.parametrize("part", [FILES[BIG], FILES[BIG] + b"longer than the file"], ids=["whole", "too-long"])
def test_range_not_satisfiable(server, tmp_path, part):
    """A whole .part (the previous run died before the rename) is kept; a too-long one is restarted."""
    (tmp_path / f"{BIG}.part").write_bytes(part)
    fetch(f"{server.url}/{BIG}", tmp_path / BIG, checksum=MD5[BIG], **FAST)
    assert (tmp_path / BIG).read_bytes() == FILES[BIG]
    assert server.sent == ([] if part == FILES[BIG] else [len(FILES[BIG])])


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_status_is_retried(server, tmp_path, status):
    server.statuses = [status]
    fetch(f"{server.url}/{BIG}", tmp_path / BIG, checksum=MD5[BIG], **FAST)
    assert len(server.requests) == 2
    assert (tmp_path / BIG).read_bytes() == FILES[BIG]


def test_stalled_server_times_out_and_is_retried(server, tmp_path):
    server.stalls = [1.0]
    fetch(f"{server.url}/{BIG}", tmp_path / BIG, checksum=MD5[BIG], retries=3, backoff=0.01, timeout=0.2)
    assert len(server.requests) == 2
    assert (tmp_path / BIG).read_bytes() == FILES[BIG]


def test_stall_mid_body_times_out_and_resumes(server, tmp_path):
    server.drops, server.pauses = [K], [1.0]
    fetch(f"{server.url}/{BIG}", tmp_path / BIG, checksum=MD5[BIG], retries=3, backoff=0.01, timeout=0.2)
    assert server.ranges() == [None, f"bytes={K}-"]
    assert (tmp_path / BIG).read_bytes() == FILES[BIG]


def test_server_down_says_how_to_work_offline(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/{BIG}"
    with pytest.raises(PipelineError) as err:
        fetch(url, tmp_path / BIG, checksum=MD5[BIG], **FAST)
    message = str(err.value)
    assert url in message and "connection refused" in message
    assert "data.mirror" in message and "data.source=synthetic" in message
    assert list(tmp_path.iterdir()) == []


def test_giving_up_mid_transfer_keeps_part_for_next_run(server, tmp_path):
    server.drops = [K] * 4
    with pytest.raises(PipelineError, match="connection dropped.*data.mirror"):
        fetch(f"{server.url}/{BIG}", tmp_path / BIG, checksum=MD5[BIG], **FAST)
    assert not (tmp_path / BIG).exists()
    assert (tmp_path / f"{BIG}.part").read_bytes() == FILES[BIG][: 4 * K]
    fetch(f"{server.url}/{BIG}", tmp_path / BIG, checksum=MD5[BIG], **FAST)
    assert server.ranges()[-1] == f"bytes={4 * K}-"
    assert (tmp_path / BIG).read_bytes() == FILES[BIG]


def test_persistent_server_error_gives_up(server, tmp_path):
    server.statuses = [500] * 4
    with pytest.raises(PipelineError, match=r"HTTP 500.*data\.mirror.*data\.source=synthetic"):
        fetch(f"{server.url}/{BIG}", tmp_path / BIG, checksum=MD5[BIG], **FAST)
    assert len(server.requests) == 4
    assert not (tmp_path / BIG).exists()


def test_not_found_is_not_retried(server, tmp_path):
    url = f"{server.url}/missing.zip"
    with pytest.raises(PipelineError) as err:
        fetch(url, tmp_path / "missing.zip", checksum=None, **FAST)
    assert url in str(err.value) and "404" in str(err.value)
    assert len(server.requests) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("as_uri", [False, True], ids=["folder", "file-url"])
def test_local_mirror(tmp_path, as_uri):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for name, data in FILES.items():
        (mirror / name).write_bytes(data)
    out = tmp_path / "out"
    fetch_all(MD5, out, mirror=mirror.as_uri() if as_uri else str(mirror), base_url="http://127.0.0.1:9/", verify=True)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.suffix != ".origin"} == FILES

    with pytest.raises(PipelineError, match="absent.zip"):
        fetch_all(
            {"absent.zip": "0" * 32}, out, mirror=mirror.as_uri() if as_uri else str(mirror), base_url="", verify=True
        )
    assert not (out / "absent.zip").exists()


def test_local_mirror_checksum_mismatch_leaves_nothing(tmp_path):
    (tmp_path / BIG).write_bytes(b"other content")
    out = tmp_path / "out"
    with pytest.raises(PipelineError, match=MD5[BIG]):
        fetch(str(tmp_path / BIG), out / BIG, checksum=MD5[BIG])
    assert list(out.iterdir()) == []


def test_existing_verified_file_is_not_fetched_again(server, tmp_path, caplog):
    (tmp_path / BIG).write_bytes(FILES[BIG])
    with caplog.at_level(logging.INFO, logger="trafficsigns.data.download"):
        fetch(f"{server.url}/{BIG}", tmp_path / BIG, checksum=MD5[BIG], **FAST)
    assert server.requests == []
    assert "already present" in caplog.text


def test_existing_corrupt_file_is_replaced(server, tmp_path):
    (tmp_path / BIG).write_bytes(b"corrupt")
    fetch(f"{server.url}/{BIG}", tmp_path / BIG, checksum=MD5[BIG], **FAST)
    assert (tmp_path / BIG).read_bytes() == FILES[BIG]


def test_verify_false_accepts_other_content(server, tmp_path):
    server.files[BIG] = b"a mirror's own build of the archive"
    [path] = fetch_all({BIG: MD5[BIG]}, tmp_path, mirror="", base_url=server.url, verify=False, **FAST)
    assert path.read_bytes() == b"a mirror's own build of the archive"


def test_download_killed_by_a_signal_resumes_on_rerun(server, tmp_path):
    """SIGKILL mid-transfer (no cleanup runs at all), then run again: it resumes and verifies."""
    server.trickles = [0.02]  # the first transfer takes ~0.5 s: time to kill it halfway
    dest = tmp_path / BIG
    part = tmp_path / (BIG + ".part")
    url = server.url + "/" + BIG
    code = f"from trafficsigns.data.download import fetch; fetch({url!r}, {str(dest)!r}, checksum={MD5[BIG]!r})"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 20
    while not (part.exists() and part.stat().st_size >= 8192) and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    have = part.stat().st_size
    assert 0 < have < len(FILES[BIG]) and not dest.exists()

    fetch(f"{server.url}/{BIG}", dest, checksum=MD5[BIG], **FAST)
    assert server.ranges()[-1] == f"bytes={have}-"
    assert md5sum(dest) == MD5[BIG] and not part.exists()


def test_disk_full_mid_download_is_one_clear_error(server, tmp_path, monkeypatch):
    """ENOSPC while writing the .part: a clear error and no partial file left behind."""
    import builtins

    real_open = builtins.open

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fake_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return FullDisk(f) if str(path).endswith(".part") else f

    monkeypatch.setattr(builtins, "open", fake_open)
    with pytest.raises(PipelineError, match="no space left on device while downloading"):
        fetch(f"{server.url}/{BIG}", tmp_path / BIG, checksum=MD5[BIG], **FAST)
    assert _leftovers(tmp_path) == [] and not (tmp_path / BIG).exists()


# --- hostile servers and stale caches (README, Reliability) ------------------------------------------

ZIP = b"PK\x03\x04" + bytes(200)
PORTAL = b"<!DOCTYPE html><html><body>Please log in to the hotel wifi</body></html>"


def test_trickling_server_is_cut_by_min_rate_then_deadline(server, tmp_path, caplog):
    """8 KiB/s where 10 KiB/s is the floor, never silent long enough for the read timeout: each attempt is
    cut after one window and resumed, and the file gives up at the deadline, .part kept for a later run."""
    server.trickles = [0.5] * 20  # 4 KiB every 0.5 s
    started = time.monotonic()
    # deadline 4 s: room for at least two 1 s windows even when a loaded CI machine serves the first bytes late
    with pytest.raises(PipelineError, match=r"within data\.deadline \(4 s\)"):
        fetch(
            f"{server.url}/{BIG}", tmp_path / BIG, checksum=MD5[BIG], retries=10, backoff=0.01, timeout=1.0,
            min_rate=10_000, deadline=4.0,
        )  # fmt: skip
    assert time.monotonic() - started < 8
    assert "under data.min_rate" in caplog.text
    assert len(server.requests) >= 2 and server.ranges()[1].startswith("bytes=")
    assert (tmp_path / (BIG + ".part")).exists()


@pytest.mark.parametrize("body", [PORTAL, b"\x00garbage"], ids=["html", "garbage"])
def test_what_is_not_a_zip_is_refused_and_not_cached(server, tmp_path, body):
    server.files[BIG] = body
    with pytest.raises(PipelineError, match="HTML page" if body == PORTAL else "not a zip archive"):
        fetch_all({BIG: MD5[BIG]}, tmp_path, mirror="", base_url=server.url, verify=False, check=require_zip, **FAST)
    assert _leftovers(tmp_path) == [] and not (tmp_path / BIG).exists()
    server.files[BIG] = ZIP  # the portal is gone: the real file comes
    fetch_all({BIG: MD5[BIG]}, tmp_path, mirror="", base_url=server.url, verify=False, check=require_zip, **FAST)
    assert (tmp_path / BIG).read_bytes() == ZIP


def test_unverified_cache_is_tied_to_its_source_and_size(server, tmp_path):
    """verify: false: a cached file is reused only for the same URL and size; another mirror fetches anew."""
    cache, mirror = tmp_path / "cache", tmp_path / "mirror"
    mirror.mkdir()
    server.files[BIG] = ZIP
    fetch_all({BIG: None}, cache, mirror="", base_url=server.url, verify=False, check=require_zip, **FAST)
    fetch_all({BIG: None}, cache, mirror="", base_url=server.url, verify=False, check=require_zip, **FAST)
    assert len(server.requests) == 1  # the same URL: cached
    (mirror / BIG).write_bytes(ZIP + b"other build")
    fetch_all({BIG: None}, cache, mirror=str(mirror), base_url=server.url, verify=False, check=require_zip)
    assert (cache / BIG).read_bytes() == ZIP + b"other build"  # the mirror switch fetched the mirror's file
    (mirror / BIG).write_bytes(ZIP + b"rebuilt, longer")
    fetch_all({BIG: None}, cache, mirror=str(mirror), base_url=server.url, verify=False, check=require_zip)
    assert (cache / BIG).read_bytes() == ZIP + b"rebuilt, longer"  # same mirror, new size: copied again


def test_part_from_another_source_is_not_resumed(server, tmp_path):
    (tmp_path / (BIG + ".part")).write_bytes(b"x" * K)
    (tmp_path / (BIG + ".origin")).write_text(json.dumps({"source": "http://elsewhere/" + BIG, "size": None}))
    fetch(f"{server.url}/{BIG}", tmp_path / BIG, checksum=MD5[BIG], **FAST)
    assert server.ranges() == [None] and (tmp_path / BIG).read_bytes() == FILES[BIG]


@pytest.mark.parametrize("kind", ["folder", "fifo"])
def test_local_mirror_file_that_is_not_a_regular_file(tmp_path, kind):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / BIG).mkdir() if kind == "folder" else os.mkfifo(mirror / BIG)
    with pytest.raises(PipelineError, match="is not a regular file"):
        fetch(str(mirror / BIG), tmp_path / BIG, checksum=None)


@contextlib.contextmanager
def raw_server(answer: bytes, delay: float = 0.0):
    """A one-connection server on 127.0.0.1 that sends `answer` as it is, `delay` s between its bytes."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        conn, _ = listener.accept()
        with conn, contextlib.suppress(OSError):
            if not delay:
                return conn.sendall(answer)
            for byte in answer:
                if stop.wait(delay):
                    return
                conn.sendall(bytes([byte]))

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/{BIG}"
    finally:
        stop.set()
        listener.close()


def test_server_trickling_its_headers_is_cut_at_the_deadline(tmp_path):
    """Each header byte comes before the read timeout, so only the overall deadline can end it."""
    started = time.monotonic()
    with raw_server(b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 1000, delay=0.1) as url:
        with pytest.raises(PipelineError, match=r"within data\.deadline \(1\.5 s\)"):
            fetch(url, tmp_path / BIG, checksum=None, retries=0, backoff=0.01, timeout=1.0, deadline=1.5)
    assert time.monotonic() - started < 4


@pytest.mark.parametrize("announced", [True, False])
def test_download_over_the_size_limit_is_refused(tmp_path, monkeypatch, announced):
    """Announced by Content-Length, or sent without one: refused past the limit, nothing left behind."""
    from trafficsigns.data import download

    monkeypatch.setattr(download, "MAX_DOWNLOAD_BYTES", 50_000)
    header = b"Content-Length: 60000\r\n" if announced else b""
    with raw_server(b"HTTP/1.1 200 OK\r\nConnection: close\r\n" + header + b"\r\n" + bytes(60_000)) as url:
        with pytest.raises(PipelineError, match="announces 60000 bytes, over the limit" if announced else "over 50000"):
            fetch(url, tmp_path / BIG, checksum=None, **FAST)
    assert _leftovers(tmp_path) == [] and not (tmp_path / BIG).exists()


def test_tls_failure_is_not_retried(server, tmp_path):
    """https:// on a plain-http server: no retry fixes a handshake, so one clear line at once."""
    url = server.url.replace("http://", "https://") + "/" + BIG
    with pytest.raises(PipelineError, match=r"the TLS handshake failed \(.*\); check data\.mirror"):
        fetch(url, tmp_path / BIG, checksum=MD5[BIG], **FAST)
    assert len(server.requests) == 0 and _leftovers(tmp_path) == []
