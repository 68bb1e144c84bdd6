"""The synthetic tracks written as the three official GTSRB archives (byte-identical for the same arguments)."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from itertools import groupby, islice
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from trafficsigns.core.errors import PipelineError
from trafficsigns.core.fsutil import atomic_path
from trafficsigns.data.archives import CSV_COLUMNS, TEST_DIR, TEST_GT_CSV, TRAIN_DIR
from trafficsigns.data.classes import NUM_GTSRB_CLASSES  # class b of a pair is drawn as the mirror of a
from trafficsigns.data.sources import GTSRB_FILES, TEST_GT_ZIP, TEST_ZIP, TRAIN_ZIP
from trafficsigns.data.synthetic.scenes import Frame, Job, render_track

# Images per class in the real GTSRB training set (ClassId 0..42): sets the class frequencies.
REAL_TRAIN_COUNTS = (
    210,
    2220,
    2250,
    1410,
    1980,
    1860,
    420,
    1440,
    1410,
    1470,
    2010,
    1320,
    2100,
    2160,
    780,
    630,
    420,
    1110,
    1200,
    210,
    360,
    330,
    390,
    510,
    270,
    1500,
    600,
    240,
    540,
    270,
    450,
    780,
    240,
    689,
    420,
    1200,
    390,
    210,
    2070,
    300,
    360,
    240,
    240,
)

_HEADER = list(CSV_COLUMNS)
_ZIP_DATE = (2011, 1, 1, 0, 0, 0)
_TEST_SHUFFLE_KEY = 1000  # [seed, 1000] can't collide with the per-track keys [seed, cid<43, track]


def track_counts(tracks_per_class: float, minimum: int) -> list[int]:
    """Tracks per class: max(minimum, round(tracks_per_class * real_count / mean real_count))."""
    mean = sum(REAL_TRAIN_COUNTS) / len(REAL_TRAIN_COUNTS)
    return [max(minimum, round(tracks_per_class * c / mean)) for c in REAL_TRAIN_COUNTS]


def _add(zf: zipfile.ZipFile, name: str, data: bytes) -> None:
    # fixed timestamp, OS and permissions: the archive bytes depend only on the content
    info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.create_system = 3
    info.external_attr = 0o644 << 16
    zf.writestr(info, data)


def _csv(header: list[str], rows: Iterable[list]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=";", lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("ascii")


def _zip(path: Path) -> zipfile.ZipFile:
    return zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=6)


def _write_train(path: Path, results: Iterator[tuple[Job, list[Frame]]]) -> None:
    """Stream the training tracks (ordered by class, then track) into the archive."""
    with atomic_path(path) as tmp, _zip(tmp) as zf:
        for cid, group in groupby(results, key=lambda r: r[0].cid):
            folder, rows = f"{TRAIN_DIR}/{cid:05d}/", []
            for job, frames in group:
                for i, frame in enumerate(frames):
                    name = f"{job.track:05d}_{i:05d}.ppm"
                    _add(zf, folder + name, frame.ppm)
                    rows.append([name, *frame.fields, cid])
            _add(zf, f"{folder}GT-{cid:05d}.csv", _csv(_HEADER + ["ClassId"], rows))


def _write_test(out: Path, frames: list[tuple[int, Frame]]) -> None:
    """Test images numbered in their (shuffled) order; the labels go into the separate GT archive."""
    rows = [[f"{i:05d}.ppm", *frame.fields] for i, (_, frame) in enumerate(frames)]
    with atomic_path(out / TEST_ZIP) as tmp, _zip(tmp) as zf:
        for row, (_, frame) in zip(rows, frames):
            _add(zf, f"{TEST_DIR}/{row[0]}", frame.ppm)
        _add(zf, f"{TEST_DIR}/GT-final_test.test.csv", _csv(_HEADER, rows))
    with atomic_path(out / TEST_GT_ZIP) as tmp, _zip(tmp) as zf:
        _add(zf, TEST_GT_CSV, _csv(_HEADER + ["ClassId"], [row + [cid] for row, (cid, _) in zip(rows, frames)]))


@contextmanager
def _track_renderer(workers: int) -> Iterator[Callable[[list[Job]], Iterator[list[Frame]]]]:
    """Map jobs to frames in order, in-process or on `workers` spawned processes."""
    if workers <= 1:
        yield lambda jobs: map(render_track, jobs)
        return
    # spawn, not fork: the caller may hold threads (TensorFlow) that a fork would copy half-locked
    pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
    try:
        yield lambda jobs: pool.map(render_track, jobs)
    finally:
        pool.shutdown(cancel_futures=True)


def _check_args(
    seed: int, train: float, test: float, frames: int, min_size: int, max_size: int, workers: int | None
) -> None:
    problems = []
    if not (isinstance(seed, int) and seed >= 0):
        problems.append(f"seed must be a non-negative integer, got {seed!r}")
    if not (train > 0 and test > 0):
        problems.append(f"tracks per class must be > 0, got train={train!r}, test={test!r}")
    if frames < 1:
        problems.append(f"frames_per_track must be >= 1, got {frames!r}")
    if not 5 <= min_size <= max_size:
        problems.append(f"need 5 <= min_size <= max_size, got min_size={min_size!r}, max_size={max_size!r}")
    if workers is not None and workers < 1:
        problems.append(f"workers must be >= 1 or None, got {workers!r}")
    if problems:
        raise PipelineError("synthetic GTSRB: " + "; ".join(problems))


def write_synthetic_gtsrb(
    out_dir: str | os.PathLike,
    *,
    seed: int,
    train_tracks_per_class: float,
    test_tracks_per_class: float,
    frames_per_track: int,
    min_size: int = 15,
    max_size: int = 120,
    workers: int | None = None,
) -> dict[str, str]:
    """Write the three GTSRB archives into out_dir; return {file name: md5 hex} of what was written.

    Class c gets max(2, round(train_tracks_per_class * n_c / mean(n))) training tracks and
    max(1, round(test_tracks_per_class * n_c / mean(n))) test tracks, n = REAL_TRAIN_COUNTS, so the
    class frequencies follow the real GTSRB. A track is `frames_per_track` frames of one physical
    sign whose size (the larger ROI side) grows within [min_size, max_size] px; each image adds a
    ~10 % (>= 5 px) border of scene. Test frames are whole held-out tracks, shuffled across classes.
    Identical arguments give byte-identical archives, whatever `workers` (default: all CPUs).
    """
    _check_args(seed, train_tracks_per_class, test_tracks_per_class, frames_per_track, min_size, max_size, workers)
    out = Path(out_dir)
    n_train = track_counts(train_tracks_per_class, 2)
    n_test = track_counts(test_tracks_per_class, 1)
    shape = (frames_per_track, min_size, max_size)
    # test tracks are numbered after the class's training tracks, so every track has its own RNG key
    train_jobs = [Job(seed, c, t, *shape) for c in range(NUM_GTSRB_CLASSES) for t in range(n_train[c])]
    test_jobs = [Job(seed, c, n_train[c] + t, *shape) for c in range(NUM_GTSRB_CLASSES) for t in range(n_test[c])]
    jobs = train_jobs + test_jobs

    with _track_renderer(min(workers or os.cpu_count() or 1, len(jobs))) as render:
        results = zip(jobs, tqdm(render(jobs), total=len(jobs), desc="synthetic GTSRB", unit="track", disable=None))
        _write_train(out / TRAIN_ZIP, islice(results, len(train_jobs)))
        test = [(j.cid, frame) for j, frames in results for frame in frames]
    order = np.random.default_rng([seed, _TEST_SHUFFLE_KEY]).permutation(len(test))
    _write_test(out, [test[i] for i in order])

    digests = {}
    for name in GTSRB_FILES:
        with open(out / name, "rb") as f:
            digests[name] = hashlib.file_digest(f, "md5").hexdigest()
    return digests
