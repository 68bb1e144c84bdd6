"""Read the official GTSRB archives in place (no extraction): CSV annotations and image members.

Layout (official, and what `synthetic` writes; the archive names are in trafficsigns/data/sources.py):
  TRAIN_ZIP    GTSRB/Final_Training/Images/000CC/TTTTT_FFFFF.ppm + GT-000CC.csv
  TEST_ZIP     GTSRB/Final_Test/Images/NNNNN.ppm + GT-final_test.test.csv
  TEST_GT_ZIP  GT-final_test.csv (with ClassId)
"""

from __future__ import annotations

import csv
import io
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trafficsigns.core.errors import PipelineError
from trafficsigns.core.fsutil import check_regular_file
from trafficsigns.core.zipcheck import ZipLimits, check_zip, read_member
from trafficsigns.data.classes import NUM_GTSRB_CLASSES
from trafficsigns.data.sources import TEST_GT_ZIP, TEST_ZIP, TRAIN_ZIP

TRAIN_DIR = "GTSRB/Final_Training/Images"
TEST_DIR = "GTSRB/Final_Test/Images"
TEST_GT_CSV = "GT-final_test.csv"
CSV_COLUMNS = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2")
# Hostile-archive limits, far above the official archives (39,209 images, well under 1 GB unpacked, each under 1 MB).
MAX_MEMBERS = 200_000
MAX_UNPACKED_BYTES = 8 << 30
MAX_MEMBER_BYTES = 64 << 20
MAX_RATIO = 200  # uncompressed / compressed, for members over 1 MiB
# A track id packs (class, track number) into one int so that the val split can group by it.
TRACK_BASE = 100_000


@dataclass(frozen=True)
class Split:
    """One split's annotations: which member of which archive, its ROI and label."""

    archive: Path
    members: list[str]
    sizes: np.ndarray  # (n, 2) width, height as annotated
    rois: np.ndarray  # (n, 4) x1, y1, x2, y2, inclusive
    labels: np.ndarray  # (n,) ClassId
    tracks: np.ndarray  # (n,) class * TRACK_BASE + track number; -1 where unknown (test)

    def __len__(self) -> int:
        return len(self.members)


def open_zip(path: Path) -> zipfile.ZipFile:
    """Open an archive and refuse it whole if any member is hostile (see `check_members`)."""
    try:
        check_regular_file(path, "a zip archive")
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        raise PipelineError(f"{path}: archive not found (run the download stage first)") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise PipelineError(f"{path}: not a readable zip archive ({exc}); delete it and download again") from None
    try:
        check_members(zf, path)
    except PipelineError:
        zf.close()
        raise
    return zf


def check_members(zf: zipfile.ZipFile, path: Path) -> None:
    """Refuse zip slip (members escaping the folder, symlinks), zip bombs and members that cannot be read
    honestly (`check_zip`: duplicate, encrypted, unknown compression), before reading anything.

    Nothing is ever extracted to disk, but an archive with such members is not an honest GTSRB
    archive, and declared sizes are all a reader has to go by before decompressing.
    """
    check_zip(zf, path, ZipLimits(MAX_MEMBERS, MAX_UNPACKED_BYTES, MAX_MEMBER_BYTES, MAX_RATIO))
    for info in zf.infolist():
        name = info.filename
        if name.startswith(("/", "\\")) or "\\" in name or ".." in name.split("/") or name[1:2] == ":":
            raise PipelineError(f"{path}: member {name!r} escapes the archive's folder (zip slip); refused")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise PipelineError(f"{path}: member {name!r} is a symbolic link; refused")


def _read_csv(zf: zipfile.ZipFile, member: str, with_class: bool) -> list[dict[str, str]]:
    where = f"{zf.filename}:{member}"
    try:
        data = read_member(zf, member)
    except KeyError:
        raise PipelineError(f"{where}: annotation CSV missing from the archive") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PipelineError(
            f"{where}: not UTF-8 or ASCII text (byte {data[exc.start]:#x} at offset {exc.start}); "
            "the official CSVs are ASCII"
        ) from None
    reader = csv.DictReader(io.StringIO(text), delimiter=";")
    try:
        needed = CSV_COLUMNS + (("ClassId",) if with_class else ())
        missing = [c for c in needed if c not in (reader.fieldnames or [])]
        if missing:
            raise PipelineError(f"{where}: missing column(s) {', '.join(missing)}; found {reader.fieldnames}")
        return list(reader)
    except csv.Error as exc:  # e.g. a field over csv's 128 KiB limit
        raise PipelineError(f"{where} line {reader.line_num}: not a readable CSV ({exc})") from None


def _parse_rows(rows: list[dict[str, str]], where: str, with_class: bool):
    """Turn CSV rows into integer arrays, naming the line of the first bad row."""
    numeric = CSV_COLUMNS[1:] + (("ClassId",) if with_class else ())
    values = np.zeros((len(rows), len(numeric)), dtype=np.int64)
    seen: set[str] = set()
    for i, row in enumerate(rows):
        at = f"{where} line {i + 2}"  # header is line 1
        name = row["Filename"] or ""
        if not name or "/" in name or "\\" in name or name in (".", ".."):
            raise PipelineError(f"{at}: Filename {name!r} is not a plain file name")
        if name in seen:
            raise PipelineError(f"{at}: Filename {name} is listed twice")
        seen.add(name)
        try:
            values[i] = [int(row[c]) for c in numeric]
        except (TypeError, ValueError):
            raise PipelineError(f"{at}: non-numeric value in {row}") from None
        width, height, x1, y1, x2, y2 = values[i, :6]
        if not (width > 0 and height > 0 and 0 <= x1 < x2 < width and 0 <= y1 < y2 < height):
            raise PipelineError(f"{at}: ROI ({x1},{y1})-({x2},{y2}) is not inside the {width}x{height} image")
        if with_class and not 0 <= values[i, -1] < NUM_GTSRB_CLASSES:
            raise PipelineError(f"{at}: ClassId {values[i, -1]} is outside 0..{NUM_GTSRB_CLASSES - 1}")
    return values[:, 0:2], values[:, 2:6], (values[:, 6] if with_class else None)


def read_train_split(raw_dir: Path) -> Split:
    path = Path(raw_dir) / TRAIN_ZIP
    with open_zip(path) as zf:
        names = set(zf.namelist())
        members, sizes, rois, labels, tracks = [], [], [], [], []
        for cid in range(NUM_GTSRB_CLASSES):
            folder = f"{TRAIN_DIR}/{cid:05d}"
            csv_member = f"{folder}/GT-{cid:05d}.csv"
            rows = _read_csv(zf, csv_member, with_class=True)
            s, r, y = _parse_rows(rows, f"{path}:{csv_member}", with_class=True)
            for row, label in zip(rows, y):
                if label != cid:
                    raise PipelineError(f"{path}:{csv_member}: {row['Filename']} has ClassId {label}, not {cid}")
            files = [f"{folder}/{row['Filename']}" for row in rows]
            _check_members(files, names, path)
            members += files
            sizes.append(s), rois.append(r), labels.append(y)
            tracks += [cid * TRACK_BASE + _track_number(f, path) for f in files]
    return Split(
        path,
        members,
        np.concatenate(sizes),
        np.concatenate(rois),
        np.concatenate(labels),
        np.asarray(tracks, dtype=np.int64),
    )


def read_test_split(raw_dir: Path) -> Split:
    path = Path(raw_dir) / TEST_ZIP
    gt_path = Path(raw_dir) / TEST_GT_ZIP
    with open_zip(gt_path) as gz:
        rows = _read_csv(gz, TEST_GT_CSV, with_class=True)
    sizes, rois, labels = _parse_rows(rows, f"{gt_path}:{TEST_GT_CSV}", with_class=True)
    with open_zip(path) as zf:
        files = [f"{TEST_DIR}/{row['Filename']}" for row in rows]
        _check_members(files, set(zf.namelist()), path)
    return Split(path, files, sizes, rois, labels, np.full(len(files), -1, dtype=np.int64))


def _check_members(files: list[str], names: set[str], path: Path) -> None:
    absent = [f for f in files if f not in names]
    if absent:
        raise PipelineError(
            f"{path}: {len(absent)} image(s) listed in the CSV are not in the archive, e.g. {absent[0]}"
        )


def _track_number(member: str, path: Path) -> int:
    """The TTTTT of TTTTT_FFFFF.ppm: ASCII digits under TRACK_BASE, so that class * TRACK_BASE + track ids of
    two classes cannot collide (class 0's track 100000 would be class 1's track 0)."""
    stem = member.rsplit("/", 1)[-1].split("_", 1)[0]
    if not (stem.isascii() and stem.isdigit()):
        raise PipelineError(f"{path}:{member}: expected a TTTTT_FFFFF.ppm file name carrying the track number")
    if int(stem) >= TRACK_BASE:
        raise PipelineError(
            f"{path}:{member}: track number {int(stem)} is over {TRACK_BASE - 1} (TTTTT has five digits); "
            "it would share its track id with another class's track"
        )
    return int(stem)
