"""Hostile and broken inputs, round two (README, "Reliability"): nothing silently wrong, nothing lost, no
traceback, no hang. Unit-level: each hostile file is made in tmp_path and the library function that reads it
is called directly."""

from __future__ import annotations

import warnings
import zipfile

import pytest

from tests.conftest import rewrite_member
from trafficsigns.core.errors import PipelineError
from trafficsigns.data import images
from trafficsigns.data.archives import TRAIN_DIR, TRAIN_ZIP, read_member, read_train_split

CSV_0 = f"{TRAIN_DIR}/00000/GT-00000.csv"


def _first_image(archive) -> str:
    with zipfile.ZipFile(archive) as zf:
        return next(n for n in zf.namelist() if n.endswith(".ppm"))


def _patch_header(archive, member: str, field: str, value: int) -> None:
    """Set the flags or the compression method of `member` in its local and central headers, which zipfile
    will not write (it clears the encryption flag and cannot compress with deflate64)."""
    local, central = {"flags": (6, 8), "method": (8, 10)}[field]
    data = bytearray(archive.read_bytes())
    name = member.encode()
    at = data.find(name)
    while at != -1:
        if data[at - 30 : at - 26] == b"PK\x03\x04":
            data[at - 30 + local : at - 28 + local] = value.to_bytes(2, "little")
        elif data[at - 46 : at - 42] == b"PK\x01\x02":
            data[at - 46 + central : at - 44 + central] = value.to_bytes(2, "little")
        at = data.find(name, at + 1)
    archive.write_bytes(bytes(data))


# --- archives: duplicate, encrypted, unreadable members; text that is not UTF-8; colliding track ids ----


def _duplicate(archive):
    member = _first_image(archive)
    with warnings.catch_warnings(), zipfile.ZipFile(archive, "a") as zf:
        warnings.simplefilter("ignore")  # zipfile warns "Duplicate name" and writes it anyway
        zf.writestr(member, b"P6\n1 1\n255\n\xff\xff\xff")
    return member, "is in the archive twice"


def _encrypted(archive):
    member = _first_image(archive)
    _patch_header(archive, member, "flags", 0x1)
    return member, "is encrypted"


def _deflate64(archive):
    member = _first_image(archive)
    _patch_header(archive, member, "method", 9)
    return member, "is compressed with method 9, which cannot be read"


@pytest.mark.parametrize("damage", [_duplicate, _encrypted, _deflate64])
def test_duplicate_encrypted_or_unreadable_members_are_refused_by_name(tiny_raw, damage):
    member, message = damage(tiny_raw / TRAIN_ZIP)
    with pytest.raises(PipelineError, match=f"{TRAIN_ZIP}: member '{member}' {message}"):
        read_train_split(tiny_raw)


def test_member_failing_its_crc_is_one_clear_error(tiny_raw):
    """Bytes flipped inside a member: BadZipFile/zlib.error become one line naming archive and member."""
    archive = tiny_raw / TRAIN_ZIP
    member = _first_image(archive)
    rewrite_member(archive, member, lambda data: data)  # deflated, as the official archives are
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(member)
    data = bytearray(archive.read_bytes())
    start = info.header_offset + 30 + len(member.encode()) + len(info.extra)
    data[start + info.compress_size // 2] ^= 0xFF
    archive.write_bytes(bytes(data))
    with zipfile.ZipFile(archive) as zf, pytest.raises(PipelineError, match=f"{member}: cannot read .* corrupt"):
        read_member(zf, member)
    with pytest.raises(PipelineError, match=f"{member}: cannot read"):
        images._prepare_chunk(str(archive), [(member, None)], 24, "L", skip_bad=False)
    images._zip_cache.clear()


def test_csv_that_is_not_utf8_is_named(tiny_raw):
    rewrite_member(tiny_raw / TRAIN_ZIP, CSV_0, lambda data: data.replace(b"Filename", b"Filen\xe4me", 1))
    with pytest.raises(PipelineError, match=r"GT-00000.csv: not UTF-8 or ASCII text \(byte 0xe4"):
        read_train_split(tiny_raw)


@pytest.mark.parametrize("track", ["100000", "١٢٣٤٥"], ids=["6-digit", "arabic-digits"])
def test_track_numbers_that_could_collide_are_refused(tiny_raw, track):
    """class * 100000 + track: class 0's track 100000 would be class 1's track 0, silently merged."""
    archive = tiny_raw / TRAIN_ZIP
    old = _first_image(archive).rsplit("/", 1)[-1]
    new = f"{track}_00000.ppm"
    rewrite_member(archive, CSV_0, lambda data: data.replace(old.encode(), new.encode()))
    with zipfile.ZipFile(archive) as zf:
        image = zf.read(f"{TRAIN_DIR}/00000/{old}")
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(f"{TRAIN_DIR}/00000/{new}", image)
    with pytest.raises(PipelineError, match=f"{new}: (track number 100000 is over 99999|expected a TTTTT_FFFFF)"):
        read_train_split(tiny_raw)
