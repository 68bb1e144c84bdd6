"""File-system helpers: every output is written under a temporary name and renamed into place."""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from trafficsigns.core.errors import PipelineError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `target`; rename it onto `target` only if the block succeeds.

    The temporary lives in the same folder so the final rename is atomic; on any error (including
    KeyboardInterrupt) it is removed, so a half-written file never appears at `target`.
    `suffix` keeps an extension some writers insist on (Keras wants `.keras`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp{suffix}"):
        _remove(stale)  # left by a run that was killed (SIGKILL skips every cleanup)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.is_dir():
            shutil.rmtree(target, ignore_errors=True)
        else:
            tmp_path.chmod(0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp_path, target)
    except BaseException as exc:
        _remove(tmp_path)
        if is_disk_full(exc):
            raise PipelineError(
                f"no space left on device while writing {target}; the partial file was "
                "removed. Free some space and run again."
            ) from None
        raise


def is_disk_full(exc: BaseException) -> bool:
    """True for a write that failed because the disk is full (ENOSPC)."""
    # h5py and Keras re-raise the C library's failure as a plain OSError whose text carries errno 28.
    return isinstance(exc, OSError) and (exc.errno == errno.ENOSPC or "No space left on device" in str(exc))


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def check_regular_file(path: str | os.PathLike, what: str) -> None:
    """Raise a PipelineError unless `path` is a regular file (following symlinks): opening a FIFO blocks for
    ever, a device never ends, a folder is no file. A missing path raises FileNotFoundError, for the caller
    to say what to run; stat itself never blocks."""
    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise PipelineError(f"{path}: is a folder, not {what}")
    if not stat.S_ISREG(mode):
        raise PipelineError(f"{path}: not a regular file (a FIFO, socket or device?), not {what}")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def md5sum(path: str | os.PathLike) -> str:
    """Hex md5 of a file, read in chunks (md5 is used as a checksum only, so FIPS builds allow it)."""
    return file_checksum(path, "md5")


def file_checksum(path: str | os.PathLike, algorithm: str) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.new(algorithm, usedforsecurity=False)).hexdigest()


def checksum_algorithm(expected: str) -> str:
    """md5 or sha256, told apart by the length of the expected hex digest (32 or 64)."""
    try:
        return {32: "md5", 64: "sha256"}[len(expected)]
    except KeyError:
        raise ValueError(f"{expected!r} is neither an md5 nor a sha256 hex digest") from None
