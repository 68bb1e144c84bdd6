"""Real parsing of real-format archives, and a clear error for each way they can be broken."""

import numpy as np
import pytest

from tests.conftest import rewrite_member
from trafficsigns.core.errors import PipelineError
from trafficsigns.data.archives import TEST_GT_CSV, TEST_GT_ZIP, TRAIN_DIR, TRAIN_ZIP, read_test_split, read_train_split

CSV_0 = f"{TRAIN_DIR}/00000/GT-00000.csv"


def test_reads_every_class_with_tracks_and_rois(tiny_raw):
    train, test = read_train_split(tiny_raw), read_test_split(tiny_raw)
    assert set(train.labels) == set(range(43)) and set(test.labels) == set(range(43))
    assert len(train) == len(train.rois) == len(train.tracks)
    assert (train.tracks // 100_000 == train.labels).all()  # a track belongs to one class
    x1, y1, x2, y2 = train.rois.T
    assert ((0 <= x1) & (x1 < x2) & (x2 < train.sizes[:, 0]) & (0 <= y1) & (y1 < y2) & (y2 < train.sizes[:, 1])).all()
    assert (test.tracks == -1).all()


def _edit_csv(tiny_raw, member, archive, edit):
    rewrite_member(tiny_raw / archive, member, lambda data: edit(data.decode()).encode())


def _set_last_field(text: str, value: str, line: int = 2) -> str:
    """Replace the last field (ClassId) of one line (1-based, header = 1)."""
    lines = text.splitlines()
    lines[line - 1] = lines[line - 1].rsplit(";", 1)[0] + ";" + value
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace("Roi.X1;", ""), r"GT-00000.csv: missing column\(s\) Roi.X1"),
        (lambda t: _set_last_field(t, "57"), r"GT-00000.csv line 2: ClassId 57 is outside 0..42"),
        (lambda t: _set_last_field(t, "x"), r"GT-00000.csv line 2: non-numeric"),
        (lambda t: _set_last_field(t, "1"), r"has ClassId 1, not 0"),
        (lambda t: t.rstrip() + "\n99999_99999.ppm;30;30;3;3;26;26;0\n", r"not in the archive, e.g. .*99999_99999.ppm"),
    ],
)
def test_broken_train_csv_is_named(tiny_raw, edit, message):
    _edit_csv(tiny_raw, CSV_0, TRAIN_ZIP, edit)
    with pytest.raises(PipelineError, match=message):
        read_train_split(tiny_raw)


def test_missing_class_csv_is_named(tiny_raw):
    rewrite_member(tiny_raw / TRAIN_ZIP, CSV_0, lambda data: None)
    with pytest.raises(PipelineError, match="GT-00000.csv: annotation CSV missing"):
        read_train_split(tiny_raw)


def test_test_ground_truth_with_unknown_class(tiny_raw):
    _edit_csv(tiny_raw, TEST_GT_CSV, TEST_GT_ZIP, lambda t: _set_last_field(t, "43"))
    with pytest.raises(PipelineError, match="ClassId 43 is outside"):
        read_test_split(tiny_raw)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "missing"])
def test_corrupt_or_missing_archive(tiny_raw, damage):
    path = tiny_raw / TRAIN_ZIP
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"<html>404 not found</html>")
    else:
        path.unlink()
    with pytest.raises(PipelineError, match=TRAIN_ZIP):
        read_train_split(tiny_raw)


def test_rois_are_integers(tiny_raw):
    assert read_train_split(tiny_raw).rois.dtype == np.int64
