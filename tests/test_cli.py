"""The command line a user meets: `--help` of every stage and tool (without TensorFlow), the `trafficsigns`
console script in a real wheel, TensorFlow's start-up log held to its level, a stage's console output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from tests.helpers import ROOT, TINY_PARAMS, make_project, run_stages, tiny_params

STAGES = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
TOOLS = ["predict", "demystify", "grid", "compare"]


def python(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's code, wherever it runs
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL
    )


def imported(importtime_log: str) -> set[str]:
    """The top-level packages a `python -X importtime` run imported (its stderr)."""
    return {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in importtime_log.splitlines() if "|" in line}


@pytest.mark.parametrize("stage", STAGES)
def test_stage_help_says_what_it_does_without_tensorflow(stage):
    module = f"trafficsigns.stages.{stage}"
    result = python("-X", "importtime", "-m", module, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m {module} [-h] [--params PARAMS]")
    first_line = __import__(module, fromlist=["main"]).__doc__.splitlines()[0]
    assert first_line in result.stdout
    assert not {"tensorflow", "keras"} & imported(result.stderr)


@pytest.mark.parametrize("tool", [None, *TOOLS])
def test_tool_help_without_tensorflow(tool):
    result = python("-X", "importtime", "-m", "trafficsigns", *([tool] if tool else []), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: python -m trafficsigns {tool or ''}".rstrip())
    assert not {"tensorflow", "keras"} & imported(result.stderr)


@pytest.mark.slow
def test_wheel_holds_one_package_and_a_working_console_script(tmp_path):
    """`pip wheel --no-deps .` (a copy of the sources, so the checkout gets no build/ folder): only
    `trafficsigns` at the top level; installed, `trafficsigns` runs the tools as `python -m trafficsigns` does."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "trafficsigns", source / "trafficsigns", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "wheel"), str(source)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "wheel").glob("trafficsigns-*.whl")
    version = wheel.name.split("-")[1]
    assert version == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    with zipfile.ZipFile(wheel) as zf:
        assert {name.split("/")[0] for name in zf.namelist()} == {"trafficsigns", f"trafficsigns-{version}.dist-info"}

    target = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)])
    script = target / "bin" / "trafficsigns"
    env = {"PYTHONPATH": str(target), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    out = subprocess.run([script, "--version"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.stdout.strip() == f"trafficsigns {version}", out.stderr
    out = subprocess.run([script, "predict", "--help"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.stdout.startswith("usage: trafficsigns predict"), out.stderr
    out = subprocess.run([script, "predict", "nothing.png"], cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode == 1 and out.stderr.startswith("error: "), out.stderr  # the tool ran, one line


def test_tensorflow_start_up_is_quiet_and_its_errors_are_not():
    """On this host TensorFlow loads and lists its devices without a log line; a real
    TensorFlow error still reaches the user whole."""
    quiet = python("-c", "import trafficsigns, tensorflow as tf; tf.config.list_physical_devices(); print('ok')")
    assert quiet.returncode == 0 and quiet.stdout == "ok\n"
    assert quiet.stderr == "", quiet.stderr
    error = python("-c", "import trafficsigns, tensorflow as tf; tf.reshape(tf.range(3), (2, 2))")
    assert error.returncode == 1
    assert "InvalidArgumentError" in error.stderr and "Input to reshape is a tensor with 3 values" in error.stderr


def test_start_up_log_keeps_what_the_level_allows():
    from trafficsigns.core.tflog import ABSL_BANNER, below_level

    info = "I0000 00:00:1796235682.687004    5413 port.cc:153] oneDNN custom operations are on.\n"
    error = "E0000 00:00:1796235687.767538    5413 cuda_platform.cc:52] failed call to cuInit\n"
    assert below_level(info, 2) and below_level(ABSL_BANNER, 2) and not below_level(error, 2)
    assert below_level(error, 3) and not below_level(info, 0) and not below_level(ABSL_BANNER, 0)
    assert not below_level("Traceback (most recent call last):\n", 3)


def test_train_stage_prints_one_model_line_one_line_per_epoch_and_what_it_wrote(tmp_path, tiny_dataset):
    project = make_project(tmp_path / "p", prepared=tiny_dataset, params=TINY_PARAMS)
    shutil.copy2(ROOT / "dvc.yaml", project / "dvc.yaml")
    run_stages(project, tiny_params(), "augment")
    result = python("-m", "trafficsigns.stages.train", cwd=project)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert not result.stdout and len(lines) <= 6, result.stderr  # devices, model, 2 epochs, best, done
    assert sum("model mnist_cnn" in line and "weights, input (24, 24, 1)" in line for line in lines) == 1
    for k in (1, 2):
        assert any(f"epoch {k}/2: loss " in line and ", lr 0.001, " in line for line in lines), result.stderr
    assert "train: done in " in lines[-1] and "wrote models/best.keras, models/last.keras" in lines[-1]


def test_progress_bar_on_a_terminal(capsys, caplog):
    """With a terminal (forced here) a bar counts the run's batches (2 epochs of 4) with its ETA; the epoch
    lines are logged as without one."""
    import keras
    import numpy as np

    from trafficsigns.modeling.progress import Progress

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x, y = np.random.default_rng(0).random((40, 4), dtype=np.float32), np.arange(40) % 3
    with caplog.at_level("INFO"):
        progress = Progress(epochs=2, steps_per_epoch=4, bar=True)
        model.fit(x, y, batch_size=10, epochs=2, validation_data=(x, y), verbose=0, callbacks=[progress])
    bar = capsys.readouterr().err
    assert "epoch 2/2:" in bar and "/8 [" in bar and "<" in bar and "batch/s" in bar  # elapsed<remaining, rate
    assert [m.split(":")[0] for m in caplog.messages if m.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]


@pytest.mark.slow
def test_queued_experiment_keeps_its_tensorboard_run(tiny_pipeline_repo, tmp_path, monkeypatch):
    """`dvc queue start` runs the experiment in a temporary copy that DVC deletes: its TensorBoard run lands in
    the repo's logs/tensorboard/<experiment>/ all the same."""
    from trafficsigns.experiments import grid

    repo = tmp_path / "repo"
    shutil.copytree(tiny_pipeline_repo, repo, symlinks=True)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    monkeypatch.chdir(repo)
    grid.dvc("exp", "run", "--queue", "-n", "queued-tb", "-S", "train.tensorboard=true", "-S", "train.epochs=1")
    grid.dvc("queue", "start", "-j", "1", log_file=tmp_path / "queue.log")  # piped, it can hang
    assert grid.wait_for_queue(poll_seconds=2).get("success") == 1, (tmp_path / "queue.log").read_text()
    assert list((repo / "logs" / "tensorboard" / "queued-tb" / "train").glob("events.out.tfevents.*"))
    assert not list((repo / ".dvc" / "tmp" / "exps" / "tmp").glob("*")), "the temporary workspace is still there"
