"""Read the official GTSRB archives in place (no extraction): CSV annotations and image members.

Layout (official, and what `synthetic` writes):
  GTSRB_Final_Training_Images.zip  GTSRB/Final_Training/Images/000CC/TTTTT_FFFFF.ppm + GT-000CC.csv
  GTSRB_Final_Test_Images.zip      GTSRB/Final_Test/Images/NNNNN.ppm + GT-final_test.test.csv
  GTSRB_Final_Test_GT.zip          GT-final_test.csv (with ClassId)
"""
from __future__ import annotations

import csv
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trafficsigns.classes import NUM_GTSRB_CLASSES
from trafficsigns.errors import PipelineError

TRAIN_ZIP = "GTSRB_Final_Training_Images.zip"
TEST_ZIP = "GTSRB_Final_Test_Images.zip"
TEST_GT_ZIP = "GTSRB_Final_Test_GT.zip"
TRAIN_DIR = "GTSRB/Final_Training/Images"
TEST_DIR = "GTSRB/Final_Test/Images"
TEST_GT_CSV = "GT-final_test.csv"
CSV_COLUMNS = ("Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2")
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
    try:
        return zipfile.ZipFile(path)
    except FileNotFoundError:
        raise PipelineError(f"{path}: archive not found (run the download stage first)") from None
    except (zipfile.BadZipFile, OSError) as exc:
        raise PipelineError(f"{path}: not a readable zip archive ({exc}); delete it and download again") from None


def _read_csv(zf: zipfile.ZipFile, member: str, with_class: bool) -> list[dict[str, str]]:
    where = f"{zf.filename}:{member}"
    try:
        text = zf.read(member).decode("utf-8-sig")
    except KeyError:
        raise PipelineError(f"{where}: annotation CSV missing from the archive") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise PipelineError(f"{where}: cannot read ({exc}); the archive is corrupt or truncated") from None
    reader = csv.DictReader(io.StringIO(text), delimiter=";")
    needed = CSV_COLUMNS + (("ClassId",) if with_class else ())
    missing = [c for c in needed if c not in (reader.fieldnames or [])]
    if missing:
        raise PipelineError(f"{where}: missing column(s) {', '.join(missing)}; found {reader.fieldnames}")
    return list(reader)


def _parse_rows(rows: list[dict[str, str]], where: str, with_class: bool):
    """Turn CSV rows into integer arrays, naming the line of the first bad value."""
    numeric = CSV_COLUMNS[1:] + (("ClassId",) if with_class else ())
    values = np.zeros((len(rows), len(numeric)), dtype=np.int64)
    for i, row in enumerate(rows):
        line = i + 2  # header is line 1
        try:
            values[i] = [int(row[c]) for c in numeric]
        except (TypeError, ValueError):
            raise PipelineError(f"{where} line {line}: non-numeric value in {row}") from None
        if with_class and not 0 <= values[i, -1] < NUM_GTSRB_CLASSES:
            raise PipelineError(
                f"{where} line {line}: ClassId {values[i, -1]} is outside 0..{NUM_GTSRB_CLASSES - 1}"
            )
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
    return Split(path, members, np.concatenate(sizes), np.concatenate(rois), np.concatenate(labels),
                 np.asarray(tracks, dtype=np.int64))


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
        raise PipelineError(f"{path}: {len(absent)} image(s) listed in the CSV are not in the archive, e.g. {absent[0]}")


def _track_number(member: str, path: Path) -> int:
    stem = member.rsplit("/", 1)[-1].split("_", 1)[0]
    if not stem.isdigit():
        raise PipelineError(f"{path}:{member}: expected a TTTTT_FFFFF.ppm file name carrying the track number")
    return int(stem)
