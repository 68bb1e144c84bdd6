"""What every zip the project reads goes through (GTSRB archives, mnist.npz, `.keras` model files): members
vetted from the central directory before a byte is decompressed, and read errors turned into one line.

Python's zipfile never returns more than a member's declared size, so bounding the declared sizes bounds
what reading can allocate.
"""

from __future__ import annotations

import lzma
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from trafficsigns.core.errors import PipelineError

# What Python's zipfile decompresses: anything else (deflate64 = 9, PPMd = 98...) fails mid-read.
READABLE_METHODS = {
    zipfile.ZIP_STORED: "stored",
    zipfile.ZIP_DEFLATED: "deflate",
    zipfile.ZIP_BZIP2: "bzip2",
    zipfile.ZIP_LZMA: "lzma",
}
# What reading a member raises when its bytes are corrupt: a bad CRC or header (BadZipFile), a truncated
# stream (EOFError), bad compressed data (zlib.error, LZMAError, OSError from bz2), or, for a member that
# `check_zip` did not see, encryption (RuntimeError) or an unknown method (NotImplementedError).
READ_ERRORS = (zipfile.BadZipFile, OSError, EOFError, zlib.error, lzma.LZMAError, RuntimeError, NotImplementedError)


@dataclass(frozen=True)
class ZipLimits:
    members: int
    total: int  # bytes unpacked, all members together
    member: int  # bytes unpacked, one member
    ratio: float  # unpacked / compressed, for members over 1 MiB


def check_zip(zf: zipfile.ZipFile, path: str | Path, limits: ZipLimits) -> None:
    """Refuse, naming the member, a zip that cannot be read honestly: too many or too big members (declared
    sizes, before decompressing), a member listed twice (which one would be read?), an encrypted member or
    one compressed with a method zipfile cannot decompress."""
    infos = zf.infolist()
    if len(infos) > limits.members:
        raise PipelineError(f"{path}: {len(infos)} members, over the limit of {limits.members} (a zip bomb?)")
    total = sum(info.file_size for info in infos)
    if total > limits.total:
        raise PipelineError(
            f"{path}: declares {total / 2**30:.1f} GiB unpacked, over the limit of "
            f"{limits.total / 2**30:.0f} GiB (a zip bomb?)"
        )
    seen: set[str] = set()
    for info in infos:
        name = info.filename
        if name in seen:
            raise PipelineError(f"{path}: member {name!r} is in the archive twice (which one is meant?); refused")
        seen.add(name)
        if info.flag_bits & 0x1:
            raise PipelineError(f"{path}: member {name!r} is encrypted; refused")
        if info.compress_type not in READABLE_METHODS:
            raise PipelineError(
                f"{path}: member {name!r} is compressed with method {info.compress_type}, which cannot be read "
                f"(readable: {', '.join(READABLE_METHODS.values())}); re-pack the archive with deflate"
            )
        if info.file_size > limits.member or (
            info.file_size > 1 << 20 and info.file_size > limits.ratio * max(info.compress_size, 1)
        ):
            raise PipelineError(
                f"{path}: member {name!r} declares {info.file_size} bytes from "
                f"{info.compress_size} compressed, over the limits (a zip bomb?)"
            )


def read_member(zf: zipfile.ZipFile, member: str) -> bytes:
    """A member's bytes; a corrupt one (bad CRC, truncated, undecodable) is one PipelineError naming it.
    A missing member raises KeyError, for the caller to name what it expected."""
    try:
        return zf.read(member)
    except READ_ERRORS as exc:
        raise PipelineError(f"{zf.filename}:{member}: cannot read ({exc}); the archive is corrupt") from None
