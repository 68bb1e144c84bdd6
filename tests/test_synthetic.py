"""The synthetic GTSRB: deterministic bytes, the official archive layout, sane images and ROIs."""

from __future__ import annotations

import csv
import hashlib
import io
import re
import subprocess
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trafficsigns.core.errors import PipelineError
from trafficsigns.data.archives import TEST_GT_ZIP, TEST_ZIP, TRAIN_ZIP
from trafficsigns.data.classes import MIRROR_PAIRS, NUM_GTSRB_CLASSES
from trafficsigns.data.synthetic import REAL_TRAIN_COUNTS, draw_pictogram, track_counts, write_synthetic_gtsrb

TINY = dict(train_tracks_per_class=1, test_tracks_per_class=1, frames_per_track=3, min_size=15, max_size=48)
HEADER = ["Filename", "Width", "Height", "Roi.X1", "Roi.Y1", "Roi.X2", "Roi.Y2"]
TRAIN_DIR = "GTSRB/Final_Training/Images/"
TEST_DIR = "GTSRB/Final_Test/Images/"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny set rendered in-process, and the same arguments again on two worker processes."""
    one, two = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("two")
    in_process = write_synthetic_gtsrb(one, seed=0, workers=1, **TINY)
    return one, in_process, write_synthetic_gtsrb(two, seed=0, workers=2, **TINY)


def _rows(zf: zipfile.ZipFile, name: str) -> list[list[str]]:
    return list(csv.reader(io.TextIOWrapper(zf.open(name), "ascii"), delimiter=";"))


def _check_image_row(zf: zipfile.ZipFile, path: str, row: list[str]) -> None:
    """The PPM decodes to the CSV's size; the ROI lies inside it with a margin; the size is in range."""
    width, height, x1, y1, x2, y2 = map(int, row[1:7])
    data = zf.read(path)
    assert data.startswith(b"P6")
    with Image.open(io.BytesIO(data)) as im:
        assert (im.format, im.mode, im.size) == ("PPM", "RGB", (width, height))
    assert 1 <= x1 < x2 <= width - 2 and 1 <= y1 < y2 <= height - 2
    border = 2 * (max(5, round(0.1 * TINY["max_size"])) + 1)
    assert TINY["min_size"] <= min(width, height) and max(width, height) <= TINY["max_size"] + border
    assert max(x2 - x1, y2 - y1) + 1 <= TINY["max_size"]


def test_same_arguments_give_identical_bytes_whatever_the_worker_count(tiny):
    _, in_process, two_workers = tiny
    assert in_process == two_workers
    assert set(in_process) == {TRAIN_ZIP, TEST_ZIP, TEST_GT_ZIP}


def test_another_seed_gives_other_archives(tiny, tmp_path):
    _, md5s, _ = tiny
    other = write_synthetic_gtsrb(tmp_path, seed=1, workers=1, **TINY)
    assert all(other[name] != md5s[name] for name in md5s)


def test_returned_md5s_are_those_of_the_files(tiny):
    out, md5s, _ = tiny
    assert sorted(p.name for p in out.iterdir()) == sorted(md5s)  # no temporaries left behind
    for name, digest in md5s.items():
        assert hashlib.md5((out / name).read_bytes()).hexdigest() == digest


def test_zip_members_are_sorted_with_fixed_metadata(tiny):
    out, _, _ = tiny
    for name in (TRAIN_ZIP, TEST_ZIP, TEST_GT_ZIP):
        with zipfile.ZipFile(out / name) as zf:
            infos = zf.infolist()
            assert [i.filename for i in infos] == sorted(i.filename for i in infos)
            assert {(i.date_time, i.compress_type, i.external_attr >> 16) for i in infos} == {
                ((2011, 1, 1, 0, 0, 0), zipfile.ZIP_DEFLATED, 0o644)
            }


def test_training_archive_layout_and_csvs(tiny):
    out, _, _ = tiny
    expected_tracks = track_counts(TINY["train_tracks_per_class"], 2)
    with zipfile.ZipFile(out / TRAIN_ZIP) as zf:
        names = set(zf.namelist())
        by_class = defaultdict(set)
        for name in names:
            match = re.fullmatch(TRAIN_DIR + r"(\d{5})/(\d{5}_\d{5}\.ppm|GT-\d{5}\.csv)", name)
            assert match, name
            by_class[int(match[1])].add(match[2])
        assert sorted(by_class) == list(range(NUM_GTSRB_CLASSES))
        for cid in range(NUM_GTSRB_CLASSES):
            folder = f"{TRAIN_DIR}{cid:05d}/"
            header, *rows = _rows(zf, f"{folder}GT-{cid:05d}.csv")
            assert header == HEADER + ["ClassId"]
            expected = {
                f"{t:05d}_{f:05d}.ppm" for t in range(expected_tracks[cid]) for f in range(TINY["frames_per_track"])
            }
            assert [row[0] for row in rows] == sorted(expected)
            assert by_class[cid] == expected | {f"GT-{cid:05d}.csv"}
            for row in rows:
                assert row[7] == str(cid)
                _check_image_row(zf, folder + row[0], row)


def test_test_archives_layout_and_labels(tiny):
    out, _, _ = tiny
    with zipfile.ZipFile(out / TEST_ZIP) as zf, zipfile.ZipFile(out / TEST_GT_ZIP) as gt:
        header, *rows = _rows(zf, TEST_DIR + "GT-final_test.test.csv")
        gt_header, *gt_rows = _rows(gt, "GT-final_test.csv")
        assert header == HEADER and gt_header == HEADER + ["ClassId"]
        assert gt.namelist() == ["GT-final_test.csv"]
        n = sum(track_counts(TINY["test_tracks_per_class"], 1)) * TINY["frames_per_track"]
        assert [row[0] for row in rows] == [f"{i:05d}.ppm" for i in range(n)]
        assert set(zf.namelist()) == {TEST_DIR + row[0] for row in rows} | {TEST_DIR + "GT-final_test.test.csv"}
        assert [row[:7] for row in gt_rows] == rows
        labels = [int(row[7]) for row in gt_rows]
        assert set(labels) == set(range(NUM_GTSRB_CLASSES))
        assert labels != sorted(labels)  # shuffled across classes
        for row in rows:
            _check_image_row(zf, TEST_DIR + row[0], row)


@pytest.mark.parametrize("a, b", MIRROR_PAIRS)
@pytest.mark.parametrize("size", [24, 128])
def test_mirror_pairs_are_horizontal_mirrors(a, b, size):
    flipped = np.asarray(draw_pictogram(a, size).transpose(Image.Transpose.FLIP_LEFT_RIGHT), dtype=int)
    other, same = np.asarray(draw_pictogram(b, size), dtype=int), np.asarray(draw_pictogram(a, size), dtype=int)
    assert np.abs(flipped - other).max() <= 2
    assert np.abs(same - other).mean() > 5  # the pair really differs: the check above means something


def test_every_pictogram_is_a_distinct_opaque_sign():
    pics = [np.asarray(draw_pictogram(cid, 32), dtype=np.int16) for cid in range(NUM_GTSRB_CLASSES)]
    for cid, pic in enumerate(pics):
        assert pic.shape == (32, 32, 4) and pic[16, 16, 3] == 255 and pic[0, 0, 3] == 0, cid
    for i in range(NUM_GTSRB_CLASSES):
        for j in range(i):
            assert np.abs(pics[i] - pics[j]).mean() > 1, (i, j)
    with pytest.raises(ValueError):
        draw_pictogram(NUM_GTSRB_CLASSES)


def test_track_counts_follow_the_real_class_frequencies():
    mean = sum(REAL_TRAIN_COUNTS) / len(REAL_TRAIN_COUNTS)
    counts = track_counts(6, 2)
    assert counts == [max(2, round(6 * c / mean)) for c in REAL_TRAIN_COUNTS]
    assert counts[0] == 2 and counts[2] == 15 and 7500 <= 30 * sum(counts) <= 8500
    assert min(track_counts(0.1, 1)) == 1


@pytest.mark.parametrize(
    "bad",
    [
        dict(seed=-1),
        dict(train_tracks_per_class=0),
        dict(frames_per_track=0),
        dict(min_size=50, max_size=40),
        dict(min_size=2),
        dict(workers=0),
    ],
)
def test_bad_arguments_raise_a_pipeline_error(tmp_path, bad):
    with pytest.raises(PipelineError):
        write_synthetic_gtsrb(tmp_path, **{"seed": 0, **TINY, **bad})
    assert list(tmp_path.iterdir()) == []


def test_import_stays_light():
    code = "import sys, trafficsigns.data.synthetic; sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[1]).returncode == 0
