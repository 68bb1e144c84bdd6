"""Fetch the dataset archives: resumable HTTP with retries, or a copy from a local mirror.

Every file is checked against its md5 or sha256 (unless the user opts out) and renamed into place once
complete, so an interrupted or corrupted transfer never leaves a half-written file at the destination.

Over our ~400-line guide because every guard of one transfer sits here: resume by Range, retries with
back-off, the overall deadline and minimum rate, size limits, non-zip answers, and a cache tied to the
URL and size it came from; splitting them would scatter one state machine.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin, urlsplit
from urllib.request import url2pathname

import requests
import urllib3
from tqdm import tqdm

from trafficsigns.core.errors import PipelineError
from trafficsigns.core.fsutil import atomic_path, checksum_algorithm, file_checksum, is_disk_full

log = logging.getLogger(__name__)

_URL_SCHEMES = ("http", "https", "file")
MAX_DOWNLOAD_BYTES = 4 << 30  # the largest raw file (GTSRB's training images) is 276 MB
# Failures worth another attempt, while connecting (requests) or streaming the body (urllib3):
# the next attempt resumes from what the .part already holds.
_TRANSIENT = (
    requests.ConnectionError,
    requests.Timeout,
    urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError,
)


class _Transient(Exception):
    """A server answer worth retrying (5xx, 429, a short body, too slow); the message says what happened."""


Check = Callable[[Path, str], None]  # (file, where it came from): raise PipelineError if it is not what is wanted


def require_zip(path: Path, source: str) -> None:
    """Refuse a file that is not a zip archive (every raw file is one: the GTSRB zips and mnist.npz), e.g. the
    HTML page of a captive portal or a login wall answered with 200, which data.verify: false lets through."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return
    path.unlink(missing_ok=True)
    text = head.lstrip().lower()
    what = (
        "an HTML page (a captive portal, login wall or error page?)"
        if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml"))
        else f"not a zip archive (it starts with {head[:16]!r})"
    )
    raise PipelineError(f"{source}: the server sent {what}; nothing was kept. Check data.mirror and the network.")


def _origin_file(dest: Path) -> Path:
    """Beside a cached download: the URL and size it came from, so a cache hit is the same file, not a namesake."""
    return dest.with_name(dest.name + ".origin")


def _origin(dest: Path) -> dict:
    try:
        origin = json.loads(_origin_file(dest).read_text())
        return origin if isinstance(origin, dict) else {}
    except (OSError, ValueError):
        return {}


def _record_origin(dest: Path, source: str, size: int | None) -> None:
    try:
        _origin_file(dest).write_text(json.dumps({"source": source, "size": size}))
    except OSError as exc:  # e.g. a full disk: without it the next run only fetches the file again
        _origin_file(dest).unlink(missing_ok=True)
        log.warning("cannot record where %s came from (%s); a re-run fetches it again", dest, exc.strerror or exc)


def _local_path(source: str) -> Path | None:
    """The file a local path or file:// URL names; None for http(s)."""
    url = urlsplit(source)
    if url.scheme in ("http", "https"):
        return None
    return Path(url2pathname(url.path) if url.scheme == "file" else source).expanduser()


def _local_size(source: str) -> int | None:
    local = _local_path(source)
    try:
        return None if local is None else local.stat().st_size
    except OSError:
        return None


def fetch(
    source: str,
    dest: Path,
    *,
    checksum: str | None,
    timeout: float = 30.0,
    retries: int = 5,
    backoff: float = 1.0,
    chunk_size: int = 1 << 20,
    min_rate: float = 0.0,
    deadline: float | None = None,
    check: Check | None = None,
) -> Path:
    """Put the file at `source` (http(s) or file:// URL, or a local path) at `dest` and return `dest`.

    `checksum` is the expected md5 or sha256 hex digest (None: not verified). An existing `dest`
    that verifies is kept as is, so re-runs cost nothing; without a checksum, only if it came from the
    same `source` with the same size (a `.origin` file beside it says which). HTTP transfers resume from
    `dest` + ".part" across attempts and runs (the same source's only), each read under `timeout`, the
    transfer at `min_rate` bytes/s or more, the whole file within `deadline` seconds. `check` vets the
    file before it is put at `dest`.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    local = _local_path(source)
    if local is not None and local.exists() and dest.exists() and local.samefile(dest):
        raise PipelineError(f"{source} is the download's own destination {dest}; set data.mirror to another folder")
    origin = _origin(dest)
    same = origin.get("source") == source
    if dest.exists():
        if checksum is not None and _digest(dest, checksum) == checksum:
            log.info("%s already present; skipping download", dest)
            if not same:
                _record_origin(dest, source, dest.stat().st_size)
            return dest
        size = dest.stat().st_size
        if (
            checksum is None
            and same
            and origin.get("size") == size
            and _local_size(source) in (None, size)
            and (check is None or _passes(check, dest, source))
        ):
            log.info("%s already present (from %s); skipping download", dest, source)
            return dest
        # kept until the new file replaces it (renamed onto it), so a failed fetch loses nothing
        log.warning("%s exists but is not the file at %s; fetching it again", dest, source)
    if part.exists() and not same and (origin or checksum is None):
        log.info("%s holds part of %s, not of %s; starting over", part, origin.get("source", "another file"), source)
        part.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    _record_origin(dest, source, None)  # says whose bytes a .part left by this attempt holds
    try:
        if urlsplit(source).scheme in ("http", "https"):
            _download(source, dest, checksum, timeout, retries, backoff, chunk_size, min_rate, deadline, check)
        else:
            _copy(source, dest, checksum, chunk_size, check)
    except BaseException:
        if not part.exists():
            _origin_file(dest).unlink(missing_ok=True)
        raise
    _record_origin(dest, source, dest.stat().st_size)
    return dest


def _passes(check: Check, path: Path, source: str) -> bool:
    try:
        check(path, source)
        return True
    except PipelineError:
        return False


def fetch_all(
    files: dict[str, str | None],
    dest_dir: Path,
    *,
    mirror: str,
    base_url: str,
    verify: bool,
    timeout: float = 30.0,
    retries: int = 5,
    backoff: float = 1.0,
    min_rate: float = 0.0,
    deadline: float | None = None,
    check: Check | None = None,
) -> list[Path]:
    """Fetch every `files` name (-> checksum, None: not verified) from `mirror`, or `base_url` when no mirror
    is set, into `dest_dir`."""
    base = mirror or base_url
    return [
        fetch(
            _join(base, name),
            Path(dest_dir) / name,
            checksum=checksum if verify else None,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
            min_rate=min_rate,
            deadline=deadline,
            check=check,
        )
        for name, checksum in files.items()
    ]


def _join(base: str, name: str) -> str:
    """`base` + `name`, where `base` is a URL or a local folder, with or without a trailing slash."""
    if urlsplit(base).scheme in _URL_SCHEMES:
        return urljoin(base.rstrip("/") + "/", name)
    return str(Path(base).expanduser() / name)


def _progress(out: BinaryIO, name: str, total: int | None, initial: int = 0):
    """Wrap `out` so each write advances a byte progress bar, which stays quiet off a terminal."""
    return tqdm.wrapattr(out, "write", total=total, initial=initial, desc=name, disable=None, leave=False)


def _digest(path: Path, expected: str) -> str:
    return file_checksum(path, checksum_algorithm(expected))


def _verify(path: Path, checksum: str | None, name: str, source: str) -> None:
    """Raise if `path` does not match `checksum`, deleting it first so a re-run starts afresh."""
    if checksum is None:
        return
    got = _digest(path, checksum)
    if got != checksum:
        path.unlink(missing_ok=True)
        raise PipelineError(
            f"Checksum mismatch for {name} from {source}: expected {checksum_algorithm(checksum)} {checksum}, "
            f"got {got}. The file was deleted; if this mirror holds different content on purpose, "
            "set data.verify: false."
        )


def _copy(source: str, dest: Path, checksum: str | None, chunk_size: int, check: Check | None) -> None:
    """Copy a local path or file:// URL through a temporary file beside `dest`."""
    url = urlsplit(source)
    src = Path(url2pathname(url.path) if url.scheme == "file" else source).expanduser()
    if not src.is_file():  # missing, a folder, a FIFO or a device: none is an archive
        what = "is not a regular file" if src.exists() else "not found"
        raise PipelineError(f"Cannot copy {src}: {what}; check data.mirror.")
    log.info("Copying %s to %s", src, dest)
    with atomic_path(dest) as tmp:
        with open(src, "rb") as fin, open(tmp, "wb") as fout, _progress(fout, dest.name, src.stat().st_size) as out:
            shutil.copyfileobj(fin, out, chunk_size)
        _verify(tmp, checksum, dest.name, source)
        if check is not None:
            check(tmp, source)


def _download(
    url: str,
    dest: Path,
    checksum: str | None,
    timeout: float,
    retries: int,
    backoff: float,
    chunk_size: int,
    min_rate: float,
    deadline: float | None,
    check: Check | None,
) -> None:
    """Download `url` into `dest`.part, retrying transient failures, then verify and rename onto `dest`."""
    part = dest.with_name(dest.name + ".part")
    log.info("Downloading %s to %s", url, dest)
    end = None if deadline is None else time.monotonic() + deadline
    pace = _Pace(timeout, min_rate, end, url, deadline)
    with requests.Session() as session:
        for attempt in range(retries + 1):
            try:
                with _alarm_at(end, pace):
                    _transfer(session, url, part, dest.name, timeout, chunk_size, pace)
                break
            except requests.exceptions.SSLError as exc:  # a ConnectionError, but no retry will fix a certificate
                raise PipelineError(
                    f"Cannot download {url}: the TLS handshake failed ({_tls_reason(exc)}); check data.mirror's URL "
                    "(https on a plain-http server?) or the host's certificates"
                ) from None
            except (*_TRANSIENT, _Transient) as exc:
                delay = backoff * 2**attempt
                if end is not None and time.monotonic() + delay >= end:
                    pace.overdue(f" ({_reason(exc)})")
                if attempt == retries:
                    # The .part stays so a later run resumes where this one stopped.
                    raise PipelineError(
                        f"Cannot reach {url} ({_reason(exc)}). Set data.mirror to a reachable URL or a folder "
                        "holding the archives, or use data.source=synthetic to run offline."
                    ) from exc
                log.warning("%s: %s; retrying in %.1f s (%d/%d)", url, _reason(exc), delay, attempt + 1, retries)
                time.sleep(delay)
            except requests.RequestException as exc:  # a malformed URL, too many redirects...
                raise PipelineError(f"Cannot download {url}: {exc}") from exc
            except OSError as exc:
                if not is_disk_full(exc):  # e.g. the .part is a folder, or data/downloads is read-only
                    raise PipelineError(f"Cannot write {part}: {exc.strerror or exc}") from None
                part.unlink(missing_ok=True)
                raise PipelineError(
                    f"no space left on device while downloading {url} to {part}; the partial "
                    "file was removed. Free some space and run again."
                ) from None
    _verify(part, checksum, dest.name, url)
    if check is not None:
        check(part, url)
    os.replace(part, dest)


@contextlib.contextmanager
def _alarm_at(end: float | None, pace: _Pace):
    """Interrupt the block at monotonic time `end` (SIGALRM, main thread only): a server that trickles its
    status line and headers a byte at a time keeps every read under `timeout` and blocks inside requests,
    where `_Pace` never gets a look in."""
    if end is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def overdue(signum, frame):
        pace.overdue(" (the server kept the connection open, sending next to nothing)")

    started = time.monotonic()
    previous = signal.signal(signal.SIGALRM, overdue)
    outer, interval = signal.setitimer(signal.ITIMER_REAL, max(end - started, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:  # someone else's alarm (a test timeout...): put it back, less the time spent here
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - started), 0.001), interval)


class _Pace:
    """The overall deadline and the minimum rate of one file's download, checked after every read.

    A per-read timeout alone lets a server that trickles a byte every few seconds hold a run for ever.
    """

    def __init__(self, window: float, min_rate: float, end: float | None, url: str, deadline: float | None):
        self.window, self.min_rate, self.end, self.url, self.deadline = window, min_rate, end, url, deadline

    def start(self) -> None:
        self.since, self.bytes = time.monotonic(), 0

    def overdue(self, why: str = "") -> None:
        raise PipelineError(
            f"Cannot download {self.url} within data.deadline ({self.deadline:g} s){why}; the partial file is "
            "kept and a re-run resumes it. Raise data.deadline, or set data.mirror to a faster source."
        )

    def read(self, size: int) -> None:
        now = time.monotonic()
        if self.end is not None and now >= self.end:
            self.overdue()
        self.bytes += size
        elapsed = now - self.since
        if elapsed >= self.window:
            rate = self.bytes / elapsed
            if rate < self.min_rate:
                raise _Transient(f"{rate:.0f} bytes/s, under data.min_rate ({self.min_rate:g})")
            self.since, self.bytes = now, 0


def _transfer(
    session: requests.Session, url: str, part: Path, name: str, timeout: float, chunk_size: int, pace: _Pace
) -> None:
    """One attempt: request the bytes `part` lacks and append them (or start over if the server insists)."""
    have = part.stat().st_size if part.exists() else 0
    # Compressed content encodings would make byte offsets meaningless for resuming.
    headers = {"Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    # A single number bounds both the connect and each read; a stalled stream raises, and is retried.
    # A single number bounds both the connect and each read; a stalled stream raises, and is retried.
    with session.get(url, headers=headers, stream=True, timeout=timeout) as resp:
        status = resp.status_code
        if status == 416:  # Range past the end: the .part is already whole, or from a different file.
            if _content_range(resp)[2] == have:
                return
            part.unlink()
            raise _Transient(f"server cannot resume at byte {have}; starting over")
        if status == 429 or status >= 500:
            raise _Transient(f"HTTP {status}")
        if status >= 400:
            raise PipelineError(f"Cannot download {url}: the server answered HTTP {status} {resp.reason}.")
        if status == 206:
            start, _, total = _content_range(resp)
            if start != have:
                part.unlink()
                raise _Transient(f"server resumed at byte {start}, not {have}")
        else:  # 200: the whole file, asked for or not (some servers ignore Range).
            length = resp.headers.get("Content-Length", "")
            have, total = 0, int(length) if length.isascii() and length.isdigit() and int(length) else None
        if total is not None and total > MAX_DOWNLOAD_BYTES:
            raise PipelineError(
                f"Cannot download {url}: the server announces {total} bytes, over the limit of "
                f"{MAX_DOWNLOAD_BYTES} (the largest official file is 276 MB); check data.mirror"
            )
        # Raw bytes, as Range offsets count them. read1 hands over whatever has arrived, so a connection
        # that drops or stalls mid-chunk loses nothing (iter_content would discard the partial chunk).
        pace.start()
        with open(part, "ab" if have else "wb") as f, _progress(f, name, total, have) as out:
            while chunk := resp.raw.read1(chunk_size, decode_content=False):
                out.write(chunk)
                pace.read(len(chunk))
                if f.tell() > MAX_DOWNLOAD_BYTES:  # a server that sends more than it announced, or never stops
                    f.close()
                    part.unlink()
                    raise PipelineError(f"Cannot download {url}: over {MAX_DOWNLOAD_BYTES} bytes; check data.mirror")
    if total is not None and part.stat().st_size != total:
        raise _Transient(f"got {part.stat().st_size} of {total} bytes")


def _content_range(resp: requests.Response) -> tuple[int | None, int | None, int | None]:
    """(first, last, total) from a `Content-Range: bytes first-last/total` (or `bytes */total`) header."""
    m = re.fullmatch(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)", resp.headers.get("Content-Range", "").strip())
    return tuple(int(g) if g and g != "*" else None for g in m.groups()) if m else (None, None, None)


def _reason(exc: BaseException) -> str:
    """A few words on why a transfer failed, dug out of the requests -> urllib3 -> socket exception chain."""
    for e in _chain(exc):
        if isinstance(e, (requests.Timeout, TimeoutError)):
            return "timed out"
        if isinstance(e, urllib3.exceptions.ProtocolError):
            return "connection dropped"
        if isinstance(e, OSError) and e.strerror:  # "Connection refused", "Network is unreachable"...
            return e.strerror.lower()
    return str(exc)


def _tls_reason(exc: BaseException) -> str:
    """The innermost ssl error's words (`[SSL: WRONG_VERSION_NUMBER] wrong version number`...)."""
    inner = [e for e in _chain(exc) if type(e).__module__ == "ssl"]
    return " ".join(str(inner[-1] if inner else exc).split())[:200]


def _chain(exc: BaseException | None):
    """`exc` and the exceptions it was raised from, outermost first."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__
