"""Hostile inputs and interrupted runs: nothing lost, nothing let in (README, "Reliability")."""

import contextlib
import errno
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import zipfile

import h5py
import keras
import numpy as np
import pytest
from PIL import Image

from tests.conftest import rewrite_member
from tests.helpers import ROOT, TINY_PARAMS, make_project, merge, run_stages, tiny_params, write_params
from trafficsigns.core.errors import PipelineError
from trafficsigns.data import archives
from trafficsigns.data.archives import TRAIN_DIR, TRAIN_ZIP, read_train_split
from trafficsigns.data.h5store import read_dataset, write_dataset
from trafficsigns.data.images import prepare_image
from trafficsigns.modeling.models import load_model, read_model_metadata

CSV_0 = f"{TRAIN_DIR}/00000/GT-00000.csv"


def add_member(archive, info: zipfile.ZipInfo | str, data: bytes = b"x") -> None:
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(info, data)


# --- archives -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["../../evil.ppm", "/etc/evil.ppm", f"{TRAIN_DIR}/../../../evil.ppm", "C:\\evil.ppm", "..\\evil.ppm"]
)
def test_zip_slip_member_is_refused(tiny_raw, name):
    add_member(tiny_raw / TRAIN_ZIP, name)
    with pytest.raises(PipelineError, match="escapes the archive's folder"):
        read_train_split(tiny_raw)


def test_symlink_member_is_refused(tiny_raw):
    info = zipfile.ZipInfo(f"{TRAIN_DIR}/00000/link.ppm")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    add_member(tiny_raw / TRAIN_ZIP, info, b"/etc/passwd")
    with pytest.raises(PipelineError, match="is a symbolic link"):
        read_train_split(tiny_raw)


def test_zip_bomb_member_is_refused_before_reading(tiny_raw):
    with zipfile.ZipFile(tiny_raw / TRAIN_ZIP, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{TRAIN_DIR}/bomb.bin", bytes(80 << 20))  # 80 MiB of zeros, ~80 KB compressed
    with pytest.raises(PipelineError, match="bomb.bin' declares 83886080 bytes .* zip bomb"):
        read_train_split(tiny_raw)


def test_too_many_members_or_bytes_is_refused(tiny_raw, monkeypatch):
    monkeypatch.setattr(archives, "MAX_MEMBERS", 10)
    with pytest.raises(PipelineError, match="members, over the limit of 10"):
        read_train_split(tiny_raw)
    monkeypatch.setattr(archives, "MAX_MEMBERS", 10**6)
    monkeypatch.setattr(archives, "MAX_UNPACKED_BYTES", 1000)
    with pytest.raises(PipelineError, match="GiB unpacked, over the limit"):
        read_train_split(tiny_raw)


# --- CSV rows ---------------------------------------------------------------------------------------


def _replace_line(line_no: int, new):
    def edit(data: bytes) -> bytes:
        lines = data.decode().splitlines()
        lines[line_no - 1] = new(lines[line_no - 1].split(";"))
        return ("\n".join(lines) + "\n").encode()

    return edit


@pytest.mark.parametrize(
    "new_line, message",
    [
        (lambda f: ";".join(f[:5] + ["9999"] + f[6:]), r"line 3: ROI .* is not inside the"),
        (lambda f: ";".join(f[:3] + ["-1"] + f[4:]), r"line 3: ROI .* is not inside the"),
        (lambda f: ";".join(["../../x.ppm"] + f[1:]), r"line 3: Filename '../../x.ppm' is not a plain file name"),
    ],
)
def test_bad_csv_row_names_file_and_line(tiny_raw, new_line, message):
    rewrite_member(tiny_raw / TRAIN_ZIP, CSV_0, _replace_line(3, new_line))
    with pytest.raises(PipelineError, match=f"GT-00000.csv {message}"):
        read_train_split(tiny_raw)


def test_duplicate_filename_is_named(tiny_raw):
    def duplicate(data: bytes) -> bytes:
        lines = data.decode().splitlines()
        return ("\n".join(lines + [lines[1]]) + "\n").encode()

    rewrite_member(tiny_raw / TRAIN_ZIP, CSV_0, duplicate)
    with pytest.raises(PipelineError, match=r"GT-00000.csv line \d+: Filename .* is listed twice"):
        read_train_split(tiny_raw)


# --- images -------------------------------------------------------------------------------------------


def ppm(width: int, height: int, pixels: bytes | None = None) -> bytes:
    return f"P6\n{width} {height}\n255\n".encode() + (pixels if pixels is not None else bytes(width * height * 3))


@pytest.mark.parametrize(
    "data, message",
    [
        (ppm(30, 30)[:-500], "does not decode"),  # truncated
        (b"P9" + ppm(30, 30)[2:], "does not decode"),  # wrong magic
        (ppm(0, 0), "does not decode|zero size"),
        (ppm(5000, 5000, b""), "declares 5000x5000 pixels, over the limit"),  # memory bomb
        (ppm(100_000, 100_000, b""), "decompression bomb"),  # Pillow's own guard answers first
    ],
)
def test_hostile_image_is_a_clear_error(data, message):
    with pytest.raises(PipelineError, match=f"a.zip:b.ppm: .*({message})"):
        prepare_image(data, "a.zip:b.ppm", size=24, mode="L")


def _break_one_image(tiny_raw, cid: int) -> str:
    with zipfile.ZipFile(tiny_raw / TRAIN_ZIP) as zf:
        victim = next(n for n in zf.namelist() if n.startswith(f"{TRAIN_DIR}/{cid:05d}/") and n.endswith(".ppm"))
    rewrite_member(tiny_raw / TRAIN_ZIP, victim, lambda data: data[:30])
    return victim


def test_on_bad_image_skip_drops_and_counts(tiny_raw):

    victim = _break_one_image(tiny_raw, 7)
    project = tiny_raw.parent.parent
    run_stages(project, tiny_params({"prepare": {"on_bad_image": "skip"}}), "prepare")
    ds = read_dataset(project / "data" / "prepared" / "dataset.h5")
    assert len(ds.meta["skipped_images"]) == 1 and victim in ds.meta["skipped_images"][0]
    total = read_train_split(tiny_raw)
    assert len(ds.y["train"]) + len(ds.y["val"]) == len(total) - 1


# --- params, HDF5, models ---------------------------------------------------------------------


def test_stale_dataset_is_refused_by_train(tiny_dataset, tmp_path):
    from trafficsigns.stages import train

    make_project(tmp_path, prepared=tiny_dataset)
    params = tiny_params({"prepare": {"image_size": 32, "mode": "RGB"}})
    with (
        contextlib.chdir(tmp_path),
        pytest.raises(
            PipelineError,
            match=r"dataset.h5 is stale \(size: file has 24, "
            r"params say 32, mode: file has 'L'",
        ),
    ):
        train.main(params)


def test_dataset_with_wrong_schema_is_refused(tiny_dataset, tmp_path):
    from trafficsigns.data.h5store import check_dataset

    broken = tmp_path / "dataset.h5"
    shutil.copy(tiny_dataset, broken)
    with h5py.File(broken, "a") as f:
        del f["y_val"]
        f["y_val"] = np.zeros(3, dtype=np.int16)
    ds = read_dataset(broken, splits=("train", "val"))
    with pytest.raises(PipelineError, match="x_val/y_val have shapes"):
        check_dataset(ds, broken, {"size": 24})
    with h5py.File(broken, "a") as f:
        del f["x_test"]
    with pytest.raises(PipelineError, match=r"not a dataset written by `prepare` \(missing x_test\)"):
        read_dataset(broken)
    with pytest.raises(PipelineError, match="nope.h5: dataset not found"):
        read_dataset(tmp_path / "nope.h5")


def test_model_with_lambda_layer_is_refused(tmp_path):
    inputs = keras.Input((4,))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    path = tmp_path / "evil.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(PipelineError, match="evil.keras: cannot load model"):
        load_model(path)


# --- interruptions ---------------------------------------------------------------------------------


def _stage(stage: str, project, params: dict) -> subprocess.Popen:
    write_params(project, params)
    # Its own process group, killed whole below, as a terminal or a CI timeout kills a job with its workers.
    # stderr to a file (a pipe nobody reads could fill and block the stage); _finished shows it.
    with open(project / f"{stage}.stderr", "w") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", f"trafficsigns.stages.{stage}"],
            cwd=project,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            start_new_session=True,
        )


def _finished(proc: subprocess.Popen, project) -> None:
    """Wait for a stage; fail with the end of its stderr if it failed."""
    if proc.wait() != 0:
        pytest.fail(
            f"{proc.args[-1]} exited {proc.returncode}:\n"
            + "\n".join((project / f"{proc.args[-1][7:]}.stderr").read_text().splitlines()[-30:])
        )


def _children(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    return [int(c) for c in open(path).read().split()] if os.path.exists(path) else []


def _alive(pid: int) -> bool:
    """Running, not merely a zombie waiting for a reaper."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _wait_for(predicate, timeout=120.0, stage: tuple[subprocess.Popen, object] | None = None):
    """Poll `predicate`; with `stage` (process, project), fail early with its stderr if it exits first."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        if stage and stage[0].poll() is not None:
            _finished(*stage)
            pytest.fail(f"{stage[0].args[-1]} finished before the awaited moment")
        time.sleep(0.01)


@pytest.mark.parametrize("delay", [0.5, 1.5, 2.5])
def test_prepare_killed_leaves_no_half_written_dataset(tiny_raw, delay):
    """SIGKILL at several moments: the output is absent or whole, never partial; a re-run succeeds."""
    project = tiny_raw.parent.parent
    output = project / "data" / "prepared" / "dataset.h5"
    proc = _stage("prepare", project, TINY_PARAMS)
    time.sleep(delay)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)  # the stage process only, as `kill -9 PID` does
    proc.wait()
    _wait_for(lambda: not any(_alive(pid) for pid in workers), timeout=10)  # its pool workers die with it
    if output.exists():
        assert len(read_dataset(output).y["test"]) > 0  # a complete file
    _finished(_stage("prepare", project, TINY_PARAMS), project)
    assert len(read_dataset(output).y["train"]) > 0
    assert [p.name for p in output.parent.iterdir()] == ["dataset.h5"], "temp files left behind"


def test_prepare_killed_takes_its_pool_workers_along(tiny_raw):
    """`kill -9` of the stage must not leave its worker processes sleeping forever."""
    proc = _stage("prepare", tiny_raw.parent.parent, TINY_PARAMS)
    _wait_for(lambda: len(_children(proc.pid)) >= 2, timeout=60)
    workers = _children(proc.pid)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _wait_for(lambda: not any(_alive(pid) for pid in workers), timeout=10)


def test_train_killed_mid_run_resumes_with_same_step_numbering(tiny_dataset, tmp_path):
    project = make_project(tmp_path, prepared=tiny_dataset)
    params = merge(TINY_PARAMS, {"train": {"epochs": 40}})
    checkpoints = project / "data" / "checkpoints"
    last, best = checkpoints / "last.keras", checkpoints / "best.keras"
    _finished(_stage("augment", project, params), project)
    proc = _stage("train", project, params)
    _wait_for(lambda: last.exists(), stage=(proc, project))
    time.sleep(0.3)  # well inside a later epoch
    _kill(proc)
    for path in (last, best):
        assert load_model(path).predict(np.zeros((1, 24, 24, 1), np.float32), verbose=0).shape == (1, 43)

    done = read_model_metadata(last)["epoch"]
    assert 1 <= done < 40
    # The outputs are published only once training ends, and DVC deletes them before a run anyway:
    # the resume state must not be among them.
    assert not (project / "models").exists() and not (project / "metrics").exists()

    resumed = merge(params, {"train": {"epochs": done + 2, "resume": True}})
    _finished(_stage("train", project, resumed), project)
    assert read_model_metadata(project / "models" / "last.keras")["epoch"] == done + 2
    steps = [
        int(r.split("\t")[0])
        for r in (project / "metrics/train/plots/metrics/val/accuracy.tsv").read_text().splitlines()[1:]
    ]
    assert steps[-2:] == [done, done + 1], steps
    assert json.loads((project / "metrics/train/metrics.json").read_text())["step"] == done + 1


def test_resume_repairs_logs_a_kill_cut_short(tiny_dataset, tmp_path):
    """dvclive rewrites metrics.json in place and appends step lines: a kill can leave either cut."""
    from trafficsigns.stages import augment, train

    make_project(tmp_path, prepared=tiny_dataset)
    live = tmp_path / "data" / "checkpoints" / "live"  # dvclive's own log, beside the checkpoints
    published = tmp_path / "metrics" / "train"
    with contextlib.chdir(tmp_path):
        augment.main(tiny_params())
        train.main(tiny_params())
        (live / "metrics.json").write_text("")
        with open(live / "plots/metrics/val/accuracy.tsv", "a") as tsv:
            tsv.write("2\t0.12")  # a step past the checkpoint, its line cut short
        (live / "plots/metrics/extra.tsv").write_text("st")  # a header cut short
        train.main(tiny_params({"train": {"epochs": 3, "resume": True}}))
    for folder in (live, published):
        rows = (folder / "plots/metrics/val/accuracy.tsv").read_text().splitlines()
        assert [row.split("\t")[0] for row in rows] == ["step", "0", "1", "2"]
        assert not (folder / "plots/metrics/extra.tsv").exists()
        assert json.loads((folder / "metrics.json").read_text())["step"] == 2
    assert len(json.loads((tmp_path / "metrics" / "timings.json").read_text())["per_epoch"]["epoch_seconds"]) == 3


def test_resume_refuses_a_checkpoint_from_other_settings(tiny_dataset, tmp_path):
    from trafficsigns.stages import augment, train

    make_project(tmp_path, prepared=tiny_dataset)
    with contextlib.chdir(tmp_path):
        augment.main(tiny_params())
        train.main(tiny_params({"train": {"epochs": 1}}))
        other = tiny_params(
            {"model": {"name": "mnist_cnn", "mnist_cnn": {"filters": 4}}, "train": {"epochs": 2, "resume": True}}
        )
        with pytest.raises(PipelineError, match="train.resume: .*last.keras was trained with other settings"):
            train.main(other)
        # Another model's widths are no part of this model: resuming with them changed is no other setting.
        train.main(tiny_params({"model": {"v1": {"filters": 48}}, "train": {"epochs": 2, "resume": True}}))
    assert read_model_metadata(tmp_path / "models" / "last.keras")["epoch"] == 2


def test_disk_full_while_writing_dataset(tmp_path, monkeypatch, tiny_dataset):
    ds = read_dataset(tiny_dataset)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(h5py.Group, "create_dataset", no_space)
    with pytest.raises(PipelineError, match="no space left on device while writing .*dataset.h5"):
        write_dataset(tmp_path / "out" / "dataset.h5", ds)
    assert list((tmp_path / "out").iterdir()) == []


def test_interrupted_image_write_leaves_no_png(tmp_path):
    from trafficsigns.core.fsutil import atomic_path

    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "fig.png") as tmp:
        Image.new("RGB", (4, 4)).save(tmp, format="PNG")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
