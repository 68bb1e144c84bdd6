"""The benchmark harness runs (at a tiny size; not a timed test), and the speed-ups it drove changed no result."""

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from skimage import exposure

from tests.helpers import ROOT, make_params, native_bf16


def test_as_batches_gives_the_batches_from_tensor_slices_gave():
    """Same order (seeded reshuffle every epoch) and same values: the committed metrics cannot move."""
    import tensorflow as tf

    from trafficsigns.modeling.training import as_batches, make_deterministic

    rng = np.random.default_rng(0)
    x = rng.random((203, 6, 6, 3), dtype=np.float32)
    for y in (rng.integers(0, 43, 203), np.eye(43, dtype=np.float32)[rng.integers(0, 43, 203)]):
        for seed in (0, 7, None):
            make_deterministic(0, jit_compile=False)
            old = tf.data.Dataset.from_tensor_slices((x, y))
            old = (old.shuffle(len(x), seed=seed, reshuffle_each_iteration=True) if seed is not None else old).batch(64)
            make_deterministic(0, jit_compile=False)
            new = as_batches(x, y, 64, shuffle_seed=seed)
            assert new.element_spec == old.element_spec
            for _ in range(2):  # Keras starts a new iterator every epoch
                pairs = list(zip(old, new, strict=True))
                assert all(np.array_equal(a.numpy(), b.numpy()) for pair in pairs for a, b in zip(*pair))


def test_vectorised_clahe_is_skimage_bit_for_bit():
    from trafficsigns.data.images import CLAHE_BLOCK, clahe

    rng = np.random.default_rng(1)
    for shape in ((CLAHE_BLOCK + 5, 24, 24), (3, 48, 48), (4, 37, 30), (2, 8, 8), (2, 9, 17)):
        smooth = np.cumsum(rng.random(shape), axis=1)
        for grey in (rng.random(shape) ** 3, smooth / smooth.max(), np.full(shape, 0.4)):
            grey = grey.astype(np.float32)
            expected = np.stack([exposure.equalize_adapthist(g) for g in grey])
            out = clahe(grey)
            assert out.dtype == expected.dtype and np.array_equal(out, expected), shape


def test_prepare_chunk_equals_one_image_at_a_time(tiny_raw_master):
    from trafficsigns.data.archives import read_train_split
    from trafficsigns.data.colour_modes import CHANNELS
    from trafficsigns.data.images import _prepare_chunk, prepare_image

    split = read_train_split(tiny_raw_master)
    items = [(m, tuple(int(v) for v in r)) for m, r in zip(split.members[:40], split.rois[:40])]
    with zipfile.ZipFile(split.archive) as zf:
        data = [zf.read(member) for member, _ in items]
    for mode in CHANNELS:
        chunk, bad = _prepare_chunk(str(split.archive), items, 24, mode, skip_bad=False)
        one = np.stack([prepare_image(d, member, 24, mode, roi) for d, (member, roi) in zip(data, items)])
        assert not bad and np.array_equal(chunk, one), mode


MEASURES = [
    "prepare 24px L",
    "prepare 48px RGB",
    "prepare 48px L-CLAHE",
    "prepare 24px L, whole set",
    "HDF5 read, all splits (24px L)",
    "train v1 24px L",
    "train v1 24px L, peak RSS",
    "train v2 48px RGB",
    "train v2 48px RGB, peak RSS",
    "train v1 24px L, train.mixed_precision=false",
    "train v2 48px RGB, train.jit_compile=true",
    "predict v1 24px L (test set)",
    "dvc repro, nothing changed",
]


@pytest.mark.slow
def test_harness_runs_at_tiny_scale(tmp_path):
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--scale", "tiny", "--out", str(out), "--data-dir", str(tmp_path / "data")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    measures = results["measures"]
    assert set(MEASURES) <= set(measures)
    assert any(name.startswith("train v1 24px L, epoch of") for name in measures)
    for name, m in measures.items():
        assert m["ours"] > 0 and m["baseline"] > 0 and m["ratio"] > 0, name
        assert m["ratio"] == pytest.approx(
            m["ours"] / m["baseline"] if m["better"] == "higher" else m["baseline"] / m["ours"]
        ), name
    assert [row["compression"] for row in results["h5_compression"]] == ["none", "lzf", "gzip 1", "gzip 4"]
    assert results["machine"]["cpus"] >= 1 and results["images"]["train"] > 0
    assert "prepare 48px L-CLAHE" in done.stdout and "ratio" in done.stdout


def run_bench(module: str, tmp_path, *args: str) -> tuple[str, dict]:
    """`python -m <module>` on tiny synthetic data: its stdout and the JSON it wrote."""
    out = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", module, *args, "--out", str(out), "--data-dir", str(tmp_path / "data")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout, json.loads(out.read_text())


@pytest.mark.slow
def test_gpu_bench_without_a_gpu_says_so_and_runs_its_cpu_version(tmp_path):
    from bench.gpu import gpu_listed

    if gpu_listed():
        pytest.skip("this host has a GPU: bench.gpu would run its full version")
    stdout, results = run_bench("bench.gpu", tmp_path, "--no-install")
    assert "no GPU found" in stdout and "CPU only" in stdout
    table = {row["variant"]: row for row in results["table"]}
    assert list(table) == [
        "float32 (baseline)",
        "float32, op determinism off",
        "mixed precision",
        "float32, large batch",
    ]
    assert all("error" not in row and row["images_per_s"] > 0 for row in table.values()), table
    assert table["float32 (baseline)"]["ratio"] == 1.0
    assert table["float32, large batch"]["batch"] == 8 * table["float32 (baseline)"]["batch"]
    # op determinism: the same weights twice (without it, a CPU happens to give them too)
    assert table["float32 (baseline)"]["same_weights_twice"] is True
    assert table["float32, op determinism off"]["determinism"] is False
    assert "same_weights_twice" in table["float32, op determinism off"]
    assert table["mixed precision"]["policy"] == ("mixed_bfloat16" if native_bf16() else "float32")


def test_time_to_accuracy_compares_the_first_epochs_that_reach_the_same_accuracy():
    from bench.tta import compare

    results = {
        "ours": {"curve": [(100.0, 0.90), (200.0, 0.97), (300.0, 0.99)]},
        "fidle": {"curve": [(150.0, 0.80), (400.0, 0.96), (650.0, 0.98), (900.0, 0.985)]},
    }
    summary = compare(results, target=None)
    assert summary["val_accuracy"] == 0.985  # the best both reached
    assert summary["seconds_to_it"] == {"ours": 300.0, "fidle": 900.0}
    assert summary["speedup"] == 3.0
    assert summary["equal_wall_s"] == 300.0
    assert summary["val_accuracy_at_equal_wall"] == {"ours": 0.99, "fidle": 0.80}
    assert compare(results, target=0.97)["seconds_to_it"] == {"ours": 200.0, "fidle": 650.0}
    unreached = compare(results, target=0.995)
    assert unreached["seconds_to_it"] == {"ours": None, "fidle": None} and "speedup" not in unreached


def test_time_to_accuracy_validates_both_recipes_on_the_same_20_percent_of_the_tracks():
    from bench.tta import RECIPES, recipe_params

    committed = make_params()  # whatever share params.yaml holds out
    for scale in ("full", "tiny"):
        recipes = [recipe_params(overrides, scale) for overrides in RECIPES.values()]
        assert [r["prepare"]["val_fraction"] for r in recipes] == [0.2, 0.2]
        assert [r["prepare"]["seed"] for r in recipes] == [committed.prepare.seed] * 2


@pytest.mark.slow
def test_time_to_accuracy_runs_both_recipes_at_tiny_scale(tmp_path):
    stdout, results = run_bench("bench.tta", tmp_path, "--scale", "tiny")
    recipes, summary = results["recipes"], results["summary"]
    assert list(recipes) == ["ours (params.yaml)", "FIDLE (v2, 48 px RGB)"]
    ours, fidle = recipes.values()
    assert ours["train_images"] == (1 + make_params().augment.copies) * fidle["train_images"]  # offline vs online
    for run in recipes.values():
        seconds = [s for s, _ in run["curve"]]
        assert len(seconds) == 2 and run["prepare_s"] < seconds[0] < seconds[1]
    assert summary["val_accuracy"] == min(max(a for _, a in run["curve"]) for run in recipes.values())
    times = summary["seconds_to_it"]
    assert summary["speedup"] == pytest.approx(times["FIDLE (v2, 48 px RGB)"] / times["ours (params.yaml)"])
    assert "ratio (FIDLE's time / ours)" in stdout
