"""The `augment` stage: deterministic, training split only, labels right under the flip tables, values in [0, 1]."""

import contextlib
import functools

import h5py
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from tests.helpers import NO_AUGMENT, make_params, make_project, tiny_params
from trafficsigns.core.config import AugmentParams
from trafficsigns.core.errors import PipelineError
from trafficsigns.core.fsutil import md5sum
from trafficsigns.core.paths import AUGMENT_PLOTS, AUGMENTED, DATASET
from trafficsigns.data import augment
from trafficsigns.data.augment import Ranges, augment_split, make_plan
from trafficsigns.data.classes import (
    GTSRB_CLASS_NAMES,
    HFLIP_SELF,
    MIRROR_PAIRS,
    NUM_GTSRB_CLASSES,
    ROT180_SELF,
    VFLIP_SELF,
    flipped_class,
)
from trafficsigns.data.h5store import Dataset, expected_meta, read_dataset
from trafficsigns.data.synthetic import draw_pictogram
from trafficsigns.stages import augment as stage

ALL_ON = dict(rotation=15, shift=0.1, zoom=0.2, shear=10, brightness=0.2, contrast=0.3, blur=1.0, noise=0.05)


@functools.lru_cache(maxsize=1)
def pictograms(size: int = 24) -> np.ndarray:
    """The 43 clean pictograms on grey, float32 RGB in [0, 1]: a training set whose labels can be seen."""
    out = []
    for cid in range(NUM_GTSRB_CLASSES):
        canvas = Image.new("RGBA", (size, size), (128, 128, 128, 255))
        canvas.alpha_composite(draw_pictogram(cid, size))
        out.append(np.asarray(canvas.convert("RGB"), dtype=np.float32) / 255)
    return np.stack(out)


def toy(n_per_class=(5, 1, 3), size: int = 12, seed: int = 0, names=None) -> Dataset:
    """A small random training split with GTSRB's class names (classes 3.. have no image)."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(n_per_class)), n_per_class)
    return Dataset(
        x={"train": rng.random((len(y), size, size, 3), dtype=np.float32)},
        y={"train": y},
        class_names=list(names or GTSRB_CLASS_NAMES),
        tracks={"train": np.arange(len(y)) // 2},
        meta={"size": size, "mode": "RGB", "channels": 3},
    )


def augment_params(**params) -> AugmentParams:
    """The committed augment section with every transform off (NO_AUGMENT), then `params`."""
    return make_params({"augment": {**NO_AUGMENT, **params}}).augment


def run(ds: Dataset, tmp_path, name="out.h5", workers=1, **params) -> Dataset:
    augment_split(ds, tmp_path / name, augment_params(**params), workers=workers)
    return read_dataset(tmp_path / name, splits=("train",))


# --- flip tables ------------------------------------------------------------------------------------


def flip(image: np.ndarray, kind: str) -> np.ndarray:
    return {"horizontal": image[:, ::-1], "vertical": image[::-1], "both": image[::-1, ::-1]}[kind]


def nearest(image: np.ndarray, pics: np.ndarray) -> tuple[int, float, float]:
    """The closest pictogram, its mean absolute difference, and that of the runner-up."""
    d = np.abs(pics - image).mean(axis=(1, 2, 3))
    first, second = np.argsort(d)[:2]
    return int(first), d[first], d[second]


def table_entries():
    yield from ((cid, "horizontal") for cid in sorted(HFLIP_SELF))
    yield from ((cid, "vertical") for cid in sorted(VFLIP_SELF))
    yield from ((cid, "both") for cid in sorted(ROT180_SELF))
    yield from ((cid, "horizontal") for pair in MIRROR_PAIRS for cid in pair)


@pytest.mark.parametrize("cid, kind", list(table_entries()))
def test_flip_tables_hold_on_the_pictograms(cid, kind):
    """A flipped pictogram is its table's class: the nearest by far (a 1-px drawing asymmetry aside)."""
    pics = pictograms()
    target = flipped_class(cid, kind)
    found, d, runner_up = nearest(flip(pics[cid], kind), pics)
    assert found == target and d < 0.5 * runner_up, (cid, kind, found, d, runner_up)


@pytest.mark.parametrize("cid, kind", [(1, "vertical"), (5, "vertical"), (40, "both")])
def test_dropped_table_entries_fail_the_same_check(cid, kind):
    """Why 30, 80 (vertical) and the roundabout (180°) are not in the tables: the check would refute them."""
    assert flipped_class(cid, kind) is None
    pics = pictograms()
    found, d, runner_up = nearest(flip(pics[cid], kind), pics)
    assert not (found == cid and d < 0.5 * runner_up)


def test_flip_tables_are_consistent():
    mirrored = {cid for pair in MIRROR_PAIRS for cid in pair}
    assert HFLIP_SELF & VFLIP_SELF <= ROT180_SELF
    assert not mirrored & (HFLIP_SELF | VFLIP_SELF | ROT180_SELF)
    assert {flipped_class(b, "horizontal") for a, b in MIRROR_PAIRS} == {a for a, _ in MIRROR_PAIRS}
    with pytest.raises(ValueError):
        flipped_class(1, "diagonal")


def test_flips_keep_labels_right(tmp_path):
    """Pictograms as the training set, flips only: every output image looks like its output label."""
    pics = pictograms()
    ds = Dataset(x={"train": pics}, y={"train": np.arange(NUM_GTSRB_CLASSES)}, class_names=list(GTSRB_CLASS_NAMES))
    out = run(ds, tmp_path, copies=8, flip=True)
    assert len(out.y["train"]) == 9 * NUM_GTSRB_CLASSES
    for image, label in zip(out.x["train"], out.y["train"]):
        found, d, runner_up = nearest(image, pics)
        assert found == label and d < 0.5 * runner_up
    changed = [i for i, image in enumerate(out.x["train"]) if not np.array_equal(image, pics[i % NUM_GTSRB_CLASSES])]
    relabelled = out.y["train"] != np.tile(np.arange(NUM_GTSRB_CLASSES), 9)
    assert len(changed) > 20 and relabelled.sum() >= 4  # flips happened, and some turned into their pair
    assert set(out.y["train"][relabelled]) <= {cid for pair in MIRROR_PAIRS for cid in pair}


def test_flip_is_skipped_for_other_classes(tmp_path, caplog):
    ds = toy(names=[str(d) for d in range(10)])
    out = run(ds, tmp_path, copies=1, flip=True)
    assert "no flips" in caplog.text
    assert np.array_equal(out.y["train"], np.tile(ds.y["train"], 2)), "digits keep their labels"


# --- the transforms ---------------------------------------------------------------------------------


def test_affine_is_scipys_bilinear_nearest_edge():
    """The fast NumPy warp equals scipy.ndimage.affine_transform(order=1, mode='nearest') to float32 rounding."""
    rng = np.random.default_rng(0)
    image = rng.random((20, 16, 3), dtype=np.float32)
    r = Ranges(rotation=20, shift=0.2, zoom=0.3, shear=10)
    for u in rng.uniform(-1, 1, (5, 10)):
        h, w = image.shape[:2]
        a, s = np.deg2rad(r.rotation * u[0]), np.deg2rad(r.shear * u[5])
        linear = (
            np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
            @ np.array([[1, 0], [np.tan(s), 1]])
            @ np.diag(1 / (1 + r.zoom * u[3:5]))
        )
        centre = np.array([(h - 1) / 2, (w - 1) / 2])
        matrix = np.eye(3)
        matrix[:2, :2] = linear
        offset = (*(centre - linear @ centre + r.shift * u[1:3] * (h, w)), 0)
        expected = ndimage.affine_transform(image, matrix, offset=offset, order=1, mode="nearest")
        np.testing.assert_allclose(augment._affine(image, r, u), expected, atol=1e-6)


def test_values_stay_in_range_and_float32(tmp_path):
    strong = dict(rotation=45, shift=0.3, zoom=0.5, shear=30, brightness=1.0, contrast=0.9, blur=3.0, noise=0.5)
    out = run(toy(), tmp_path, copies=3, flip=True, **strong)
    x = out.x["train"]
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1 and x.min() == 0 and x.max() == 1


def test_deterministic_for_a_seed_whatever_the_workers_and_chunks(tmp_path):
    ds = toy((40, 7, 25))
    params = augment_params(copies=2, flip=True, balance=60, seed=3, **ALL_ON)
    outputs = []
    for name, workers, chunk in (("a.h5", 1, 256), ("b.h5", 2, 7), ("c.h5", 2, 256)):
        augment_split(ds, tmp_path / name, params, workers=workers, chunk=chunk)
        with h5py.File(tmp_path / name) as f:
            outputs.append((f["x_train"][...], f["y_train"][...], f["track_train"][...]))
    for x, y, tracks in outputs[1:]:
        assert x.tobytes() == outputs[0][0].tobytes()
        assert np.array_equal(y, outputs[0][1]) and np.array_equal(tracks, outputs[0][2])
    other = run(ds, tmp_path, "d.h5", copies=2, flip=True, balance=60, seed=4, **ALL_ON)
    assert not np.array_equal(other.x["train"], outputs[0][0])


def test_pass_through_is_the_split_bit_for_bit(tmp_path):
    ds = toy()
    out = run(ds, tmp_path, **ALL_ON)  # copies 0, balance 0: the ranges don't matter
    assert out.x["train"].tobytes() == ds.x["train"].tobytes()
    assert np.array_equal(out.y["train"], ds.y["train"]) and np.array_equal(out.tracks["train"], ds.tracks["train"])
    assert out.meta["augment"]["counts"]["total"] == len(ds.y["train"])


def test_copies_multiply_the_set_after_the_originals(tmp_path):
    ds = toy()
    n = len(ds.y["train"])
    out = run(ds, tmp_path, copies=3, **ALL_ON)
    x, y = out.x["train"], out.y["train"]
    assert len(x) == 4 * n and np.array_equal(y, np.tile(ds.y["train"], 4))
    assert np.array_equal(out.tracks["train"], np.tile(ds.tracks["train"], 4))
    assert x[:n].tobytes() == ds.x["train"].tobytes()
    for copy in range(1, 4):  # every copy differs from its original and from the other copies
        assert (np.abs(x[copy * n : (copy + 1) * n] - ds.x["train"]).mean(axis=(1, 2, 3)) > 0.01).all()
    assert out.meta["augment"]["counts"] | {"per_class": None} == {
        "originals": n,
        "copies": 3 * n,
        "balance": 0,
        "relabelled": 0,
        "total": 4 * n,
        "per_class": None,
    }


def test_balance_raises_rare_classes_with_augmented_images(tmp_path):
    ds = toy((10, 1, 3))
    out = run(ds, tmp_path, copies=1, balance=12, rotation=10, noise=0.02)
    counts = np.bincount(out.y["train"], minlength=NUM_GTSRB_CLASSES)
    assert counts[:3].tolist() == [20, 12, 12]  # class 0 had 20 with its copies: left alone
    assert counts[3:].sum() == 0  # classes without an image cannot be raised
    extras = out.x["train"][2 * 14 :]
    assert len(extras) == 10 + 6 and out.meta["augment"]["counts"]["balance"] == 16
    sources = make_plan(ds.y["train"], ds.class_names, augment_params(copies=1, balance=12, rotation=10)).source[28:]
    assert not any(np.array_equal(e, ds.x["train"][s]) for e, s in zip(extras, sources))  # not plain duplicates
    assert len({e.tobytes() for e in extras}) == len(extras)


def test_balance_extras_keep_their_class_under_flips():
    y = np.array([38] * 2 + [19] * 1)
    plan = make_plan(y, list(GTSRB_CLASS_NAMES), augment_params(copies=2, flip=True, balance=50))
    counts = np.bincount(plan.label, minlength=NUM_GTSRB_CLASSES)
    assert counts[38] >= 50 and counts[19] >= 50
    extra = plan.copy > 2
    assert np.array_equal(plan.label[extra], y[plan.source[extra]])


# --- params and errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"preset": "fidle", "rotation": 5}, "leave rotation at 0"),
        ({"copies": 2}, "plain duplicates"),
        ({"balance": 100}, "plain duplicates"),
        ({"zoom": 1.0}, "'augment.zoom'"),
        ({"copies": -1}, "'augment.copies'"),
        ({"preset": "keras"}, "'augment.preset'"),
        ({"rotatoin": 10}, "unknown key 'augment.rotatoin'"),
    ],
)
def test_bad_augment_params_are_refused(raw, expected):
    with pytest.raises(PipelineError, match="invalid params") as err:
        augment_params(**raw)
    assert expected in str(err.value)


def test_fidle_preset_sets_the_geometry():
    params = augment_params(preset="fidle", copies=1, noise=0.01)
    assert Ranges.of(params) == Ranges(rotation=10, shift=0.1, zoom=0.2, shear=0.1, noise=0.01)


def test_a_dataset_without_a_train_split_is_a_clear_error(tmp_path):
    path = tmp_path / "no_train.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x_test", data=np.zeros((2, 8, 8, 1), np.float32))
    with pytest.raises(PipelineError, match="missing x_train, y_train"):
        read_dataset(path, splits=("train",))


def _broken_chunk(*args, **kwargs):
    raise PipelineError("worker failed")


def test_a_failure_mid_write_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(augment, "_augment_chunk", _broken_chunk)
    with pytest.raises(PipelineError, match="worker failed"):
        augment_split(toy(), tmp_path / "out.h5", augment_params(copies=1, rotation=5), workers=1)
    assert list(tmp_path.iterdir()) == []


# --- the stage ------------------------------------------------------------------------------------


def test_stage_on_the_tiny_dataset(tiny_dataset, tmp_path):
    project = make_project(tmp_path / "project", prepared=tiny_dataset)
    params = tiny_params({"augment": {**NO_AUGMENT, "preset": "fidle", "copies": 1, "flip": True, "noise": 0.02}})
    with contextlib.chdir(project):
        before = md5sum(DATASET)
        stage.main(params, workers=2)
        assert md5sum(DATASET) == before  # the prepared dataset, val and test included, is untouched
        prepared = read_dataset(DATASET, splits=("train",))
        out = read_dataset(AUGMENTED, splits=("train",), expected=expected_meta(params.data.source, params.prepare))
        with h5py.File(AUGMENTED) as f:
            assert set(f) == {"x_train", "y_train", "track_train", "class_names", "meta"}  # no val, no test
            assert f["x_train"].chunks[0] == min(256, len(out.y["train"]))
        assert (AUGMENT_PLOTS / "families.png").stat().st_size > 10_000
    n = len(prepared.y["train"])
    assert len(out.y["train"]) == 2 * n and out.x["train"][:n].tobytes() == prepared.x["train"].tobytes()
    assert out.meta == {**prepared.meta, "augment": out.meta["augment"]}
    assert out.meta["augment"]["params"] == params.augment.model_dump()
    assert out.meta["augment"]["geometry"] == {"rotation": 10.0, "shift": 0.1, "zoom": 0.2, "shear": 0.1}
