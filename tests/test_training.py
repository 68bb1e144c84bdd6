"""The real training loop on tiny data: every model trains, runs are deterministic, outputs are complete."""

import json
import typing

import keras
import numpy as np
import pytest

from tests.helpers import NO_AUGMENT, TINY_PARAMS, make_params, make_project, native_bf16, run_stages, tiny_params
from trafficsigns.core.config import ModelParams, TrainParams
from trafficsigns.core.paths import step_logs
from trafficsigns.modeling.models import ARCHITECTURES, build_model


def model_params(name: str, **widths) -> ModelParams:
    """The committed model section with `name` chosen and its own widths overridden by `widths`."""
    return make_params({"model": {"name": name, name: widths}}).model


def train_params(**train) -> TrainParams:
    """The tiny tests' training (TINY_PARAMS on the committed params) with `train` overridden."""
    return tiny_params({"train": train}).train


def test_every_model_name_has_a_builder_and_a_params_section():
    """The names `model.name` accepts, the zoo's builders and params.yaml's sections are the same set."""
    accepted = set(typing.get_args(ModelParams.model_fields["name"].annotation))
    sections = set(make_params().model.model_dump()) - {"name", "conv_dropout"}
    assert accepted == set(ARCHITECTURES) == sections


@pytest.mark.parametrize("name", list(ARCHITECTURES))
@pytest.mark.parametrize("shape", [(24, 24, 1), (28, 28, 1), (32, 32, 3), (48, 48, 3)])
def test_every_model_builds_and_trains_a_step(name, shape):
    own = make_params().model.model_dump()[name]
    narrow = {"filters": 4, "dense": 16}
    model = build_model(model_params(name, **{k: v for k, v in narrow.items() if k in own}), shape, 43)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((8, *shape), dtype=np.float32)
    loss = model.train_on_batch(x, np.arange(8))
    assert np.isfinite(loss)
    assert model.output_shape == (None, 43)


def test_a_model_that_cannot_take_the_input_size_says_so():
    from trafficsigns.core.errors import PipelineError

    with pytest.raises(PipelineError, match="model v2 cannot take .*12, 12, 1.*prepare.image_size"):
        build_model(model_params("v2"), (12, 12, 1), 43)


def conv_widths(model):
    return [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def test_zoo_follows_the_course_definitions():
    v2 = build_model(model_params("v2"), (48, 48, 3), 43)
    assert conv_widths(v2) == [64, 64, 128, 128, 256, 256]
    v3 = build_model(model_params("v3"), (24, 24, 1), 43)
    assert conv_widths(v3) == [32, 64, 128]
    assert [layer.kernel_size for layer in v3.layers if isinstance(layer, keras.layers.Conv2D)] == [(5, 5)] * 3
    assert sum(isinstance(layer, keras.layers.BatchNormalization) for layer in v3.layers) == 4
    assert v3.layers[-2].rate == 0.4, "v3's own dropout, from params.yaml's model.v3"
    ours = build_model(model_params("resnet", filters=8, dropout=0.1), (32, 32, 3), 43)
    assert conv_widths(ours) == [8] * 3 + [16] * 3 + [32] * 3
    assert sum(isinstance(layer, keras.layers.Add) for layer in ours.layers) == 3
    assert ours.layers[-2].rate == 0.1


def test_filters_and_dense_scale_the_model():
    v1 = build_model(model_params("v1"), (24, 24, 1), 43)
    assert [layer.filters for layer in v1.layers if hasattr(layer, "filters")] == [96, 192]
    narrow = build_model(model_params("v1", filters=32, dense=100), (24, 24, 1), 43)
    assert [layer.filters for layer in narrow.layers if hasattr(layer, "filters")] == [32, 64]
    assert narrow.layers[-3].units == 100
    small = build_model(model_params("mnist_cnn"), (28, 28, 1), 10)
    assert [layer.filters for layer in small.layers if hasattr(layer, "filters")] == [8, 16]


def run_train_and_evaluate(project, dataset, params):
    run_stages(make_project(project, prepared=dataset), params, "augment", "train", "evaluate")
    return json.loads((project / "metrics" / "evaluate.json").read_text())["test"]


def test_train_and_evaluate_are_deterministic_and_complete(tiny_dataset, tmp_path):
    params = tiny_params()
    first = run_train_and_evaluate(tmp_path / "a", tiny_dataset, params)
    second = run_train_and_evaluate(tmp_path / "b", tiny_dataset, params)
    assert first == second, "same params + same data must give the same metrics on CPU"
    a, b = (keras.models.load_model(tmp_path / p / "models" / "best.keras") for p in "ab")
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        assert np.array_equal(wa, wb)

    project = tmp_path / "a"
    epochs = TINY_PARAMS["train"]["epochs"]
    live = json.loads((project / "metrics" / "train" / "metrics.json").read_text())
    assert {"train", "val", "best_val_accuracy", "parameters"} <= set(live)
    assert live["step"] == epochs - 1
    curves = project / "metrics" / "train" / "plots" / "metrics"
    for curve in ("train/accuracy", "val/accuracy", "train/loss", "val/loss"):
        assert len((curves / f"{curve}.tsv").read_text().splitlines()) == 1 + epochs
    # Wall-clock figures only in the timings file, so everything else is the same bytes run to run.
    timings = json.loads((project / "metrics" / "timings.json").read_text())
    assert {"train_seconds", "epoch_seconds", "images_per_second"} <= set(timings)
    assert [len(timings["per_epoch"][k]) for k in ("epoch_seconds", "images_per_second")] == [epochs, epochs]
    assert not {"train_seconds", "epoch_seconds", "images_per_second"} & set(live)
    assert sorted(p.relative_to(curves).as_posix() for p in curves.rglob("*.tsv")) == [
        "learning_rate.tsv",
        "train/accuracy.tsv",
        "train/loss.tsv",
        "val/accuracy.tsv",
        "val/loss.tsv",
    ]
    for name in ("models/best.keras", "models/last.keras", "metrics/train/metrics.json", "metrics/evaluate.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert (project / "models" / "last.keras").exists()
    assert set(first) == {"accuracy", "top5_accuracy", "macro_f1", "loss", "images"}
    plots = project / "plots" / "evaluate"
    confusion = (plots / "confusion.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted" and len(confusion) == 1 + first["images"]
    for png in ("per_class_accuracy.png", "confusion_matrix.png", "worst_errors.png"):
        assert (plots / png).read_bytes()[:4] == b"\x89PNG"


def test_different_seed_gives_different_model(tiny_dataset, tmp_path):
    base = tiny_params()
    other = tiny_params({"train": {"seed": 1}})
    assert run_train_and_evaluate(tmp_path / "a", tiny_dataset, base) != run_train_and_evaluate(
        tmp_path / "b", tiny_dataset, other
    )


def train_tiny(tiny_dataset, tmp_path, **train):
    from trafficsigns.data.h5store import read_dataset
    from trafficsigns.modeling.training import train as fit

    ds = read_dataset(tiny_dataset, splits=("train", "val"))
    params = tiny_params({"train": train})
    return fit(
        ds,
        params.model,
        params.train,
        tmp_path / "best.keras",
        tmp_path / "last.keras",
        tmp_path / "live",
        tmp_path / "tb",
        params.augment,
        tmp_path / "checkpoints",
        tmp_path / "timings.json",
    )


@pytest.mark.parametrize(
    "options",
    [
        {"optimizer": "sgd", "lr_schedule": "cosine", "learning_rate": 0.05},
        {"lr_schedule": "plateau"},
        {"label_smoothing": 0.1},
        {"mixed_precision": True},
    ],
    ids=lambda o: ",".join(o),
)
def test_training_options_train(tiny_dataset, tmp_path, options):
    summary = train_tiny(tiny_dataset, tmp_path, **options)
    assert summary["epochs_done"] == TINY_PARAMS["train"]["epochs"]
    assert 0 <= summary["best_val_accuracy"] <= 1
    assert keras.config.dtype_policy().name == "float32", "mixed precision must not leak into later models"
    rows = (step_logs(tmp_path / "live") / "learning_rate.tsv").read_text().splitlines()[1:]
    rates = [float(row.split("\t")[1]) for row in rows]
    rate = tiny_params({"train": options}).train.learning_rate
    # the rate each epoch starts with: cosine is halfway down at the second of two epochs
    assert rates == pytest.approx(
        [rate, rate / 2] if options.get("lr_schedule") == "cosine" else [rate, rate], rel=1e-5
    )


def test_jit_compile_really_compiles(tiny_dataset, tmp_path):
    import tensorflow as tf

    from trafficsigns.data.h5store import read_dataset
    from trafficsigns.modeling.training import _new_model, make_deterministic

    try:
        assert train_tiny(tiny_dataset, tmp_path, jit_compile=True)["epochs_done"] == 2
        make_deterministic(0, jit_compile=True)
        ds = read_dataset(tiny_dataset, splits=("train", "val"))
        assert _new_model(ds, model_params("mnist_cnn"), train_params(jit_compile=True)).jit_compile
    finally:
        tf.config.experimental.enable_op_determinism()  # the rest of the session stays deterministic


def test_online_augmentation_is_seeded_and_changes_training(tiny_dataset, tmp_path):
    online = tiny_params(
        {
            "augment": {"preset": "fidle", "brightness": 0.1, "contrast": 0.2, "noise": 0.02},
            "train": {"online_augment": True},
        }
    )
    first = run_train_and_evaluate(tmp_path / "a", tiny_dataset, online)
    assert first == run_train_and_evaluate(tmp_path / "b", tiny_dataset, online)
    assert first != run_train_and_evaluate(tmp_path / "c", tiny_dataset, tiny_params())


def test_online_augmentation_keeps_images_in_range():
    from trafficsigns.modeling.training import as_batches, online_augmenter

    x = np.random.default_rng(0).random((16, 24, 24, 3), dtype=np.float32)
    ranges = {**NO_AUGMENT, "preset": "fidle", "brightness": 0.5, "contrast": 0.5, "noise": 0.2}
    augmenter = online_augmenter(make_params({"augment": ranges}).augment, seed=0)
    images, labels = next(iter(as_batches(x, np.arange(16), 16, augmenter=augmenter)))
    assert images.dtype == np.float32 and images.shape == x.shape
    assert 0 <= float(np.min(images)) and float(np.max(images)) <= 1
    assert not np.allclose(images, x)
    assert list(labels.numpy()) == list(range(16))


def test_online_augmentation_says_which_ranges_stay_offline(caplog):
    from trafficsigns.modeling.training import online_augmenter

    with caplog.at_level("INFO", logger="trafficsigns.modeling.training"):
        online_augmenter(make_params({}).augment, seed=0)  # the committed params: blur and flips on
    assert "augment.blur and augment.flip apply only to the augment stage's copies" in caplog.text
    caplog.clear()
    with caplog.at_level("INFO", logger="trafficsigns.modeling.training"):
        online_augmenter(make_params({"augment": {**NO_AUGMENT, "preset": "fidle"}}).augment, seed=0)
    assert "augment stage's copies" not in caplog.text


def test_online_augmentation_needs_some_range():
    from trafficsigns.core.errors import PipelineError
    from trafficsigns.modeling.training import online_augmenter

    with pytest.raises(PipelineError, match="online_augment.*preset=fidle"):
        online_augmenter(make_params({"augment": NO_AUGMENT}).augment, seed=0)


def test_early_stopping_watches_val_accuracy(tiny_dataset, tmp_path):
    # A learning rate this small leaves val accuracy flat: patience 1 stops after the second epoch.
    summary = train_tiny(tiny_dataset, tmp_path, epochs=10, early_stopping=1, learning_rate=1e-12)
    assert summary["epochs_done"] == 2


CPUINFO = "processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: fpu sse2 avx2 {flags}\nbogomips\t: 4000\n"


@pytest.mark.parametrize(
    "flags, policy",
    [
        ("avx512f avx512_bf16 avx512_vnni", "mixed_bfloat16"),  # AMD Zen 4, Intel Cooper Lake
        ("avx512f amx_bf16 amx_tile amx_int8", "mixed_bfloat16"),  # Intel Sapphire Rapids
        ("avx512f avx512_vnni", "float32"),  # AVX-512 without bfloat16 (Skylake, Zen 3 has none at all)
        ("", "float32"),
    ],
)
def test_mixed_precision_uses_bfloat16_only_on_cpus_with_it(flags, policy, caplog):
    from trafficsigns.modeling.training import precision_policy

    cpuinfo = CPUINFO.format(vendor="GenuineIntel", flags=flags)
    assert precision_policy(train_params(mixed_precision=True), cpuinfo) == policy
    assert ("no native bfloat16" in caplog.text) == (policy == "float32")
    assert precision_policy(train_params(mixed_precision=False), cpuinfo) == "float32"


def test_cpu_kind_names_the_model_and_the_instruction_sets_kernels_are_picked_by():
    from trafficsigns.core.host import cpu_kind

    zen4 = CPUINFO.format(vendor="AuthenticAMD", flags="avx512f avx512_bf16") + "model name\t: AMD EPYC 9R14\n"
    assert cpu_kind(zen4) == "AMD EPYC 9R14 (avx2 avx512f avx512_bf16)"
    assert cpu_kind("") == "unknown CPU (no x86 vector flags)"  # ARM, or no /proc


def test_mixed_precision_on_this_host_follows_its_cpu_flags(tiny_dataset):
    from trafficsigns.data.h5store import read_dataset
    from trafficsigns.modeling.training import _new_model

    ds = read_dataset(tiny_dataset, splits=("train", "val"))
    model = _new_model(ds, model_params("v3", filters=4), train_params(mixed_precision=True))
    assert model.layers[0].compute_dtype == ("bfloat16" if native_bf16() else "float32")


@pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bfloat16")
def test_mixed_precision_computes_in_bfloat16_on_cpu_with_a_float32_head(tiny_dataset):
    from trafficsigns.data.h5store import read_dataset
    from trafficsigns.modeling.training import _new_model

    ds = read_dataset(tiny_dataset, splits=("train", "val"))
    model = _new_model(ds, model_params("v3", filters=4), train_params(mixed_precision=True))
    assert model.layers[0].compute_dtype == "bfloat16"
    assert model.layers[0].variable_dtype == "float32"
    assert model.layers[-1].compute_dtype == "float32"


def test_one_device_trains_without_mirroring():
    import tensorflow as tf

    from trafficsigns.modeling.training import distribution_strategy

    assert not isinstance(distribution_strategy(make_params().train), tf.distribute.MirroredStrategy)


MIRRORED_RUN = """
import sys
from pathlib import Path
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from trafficsigns.modeling import training
from tests.helpers import tiny_params
from trafficsigns.data.h5store import read_dataset
training.distribution_strategy = lambda params: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
out = Path(sys.argv[2])
params = tiny_params()
summary = training.train(read_dataset(sys.argv[1], ("train", "val")), params.model, params.train,
                         out / "best.keras", out / "last.keras", out / "live", out / "tb", params.augment,
                         out / "checkpoints", out / "timings.json")
print("replicas", training.load_model(out / "best.keras") is not None, summary["epochs_done"])
"""


def test_training_runs_under_a_mirrored_strategy(tiny_dataset, tmp_path):
    """train.distribute's code path: the same loop with a MirroredStrategy, here over two logical CPUs."""
    import os
    import subprocess
    import sys

    from tests.helpers import ROOT

    # oneDNN's CPU convolution rejects the empty shard a replica gets from a last batch of one image
    # (GPU kernels take it), so this CPU stand-in for two GPUs runs with the plain kernels.
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED_RUN, str(tiny_dataset), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("replicas True 2")


def test_tensorboard_writes_one_run_per_experiment(tiny_dataset, tmp_path, monkeypatch):
    """Named as DVC named the experiment, else by the settings' hash; a re-run of the same one replaces it."""
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    train_tiny(tiny_dataset, tmp_path, tensorboard=True, epochs=1)
    (by_hash,) = (tmp_path / "tb").iterdir()
    assert len(by_hash.name) == 8 and list((by_hash / "train").glob("events.out.tfevents.*"))
    train_tiny(tiny_dataset, tmp_path, tensorboard=True, epochs=1)
    assert len(list((by_hash / "train").glob("events.out.tfevents.*"))) == 1, "a re-run adds to the old run"
    monkeypatch.setenv("DVC_EXP_NAME", "wider-lr")
    train_tiny(tiny_dataset, tmp_path, tensorboard=True, epochs=1)
    assert sorted(p.name for p in (tmp_path / "tb").iterdir()) == sorted([by_hash.name, "wider-lr"])


def test_tensorboard_logs_go_to_the_repo_dvc_runs_for(monkeypatch, tmp_path):
    from trafficsigns.core.paths import TENSORBOARD_DIR, tensorboard_root

    monkeypatch.delenv("DVC_ROOT", raising=False)
    assert tensorboard_root() == TENSORBOARD_DIR
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # a queued experiment: the original repo, not the temp copy
    assert tensorboard_root() == tmp_path / TENSORBOARD_DIR
