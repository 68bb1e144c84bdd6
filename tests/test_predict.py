"""`python -m trafficsigns predict` on pictures a user would have: the sign cut out of a photo, as files."""

import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
from PIL import Image

from tests.helpers import QUICK_TRAINING, ROOT, make_project, run_stages, tiny_params
from trafficsigns.cli import main
from trafficsigns.core.shell import EXIT_ERROR, EXIT_SKIPPED
from trafficsigns.data.archives import read_test_split
from trafficsigns.data.classes import GTSRB_CLASS_NAMES
from trafficsigns.data.h5store import read_dataset
from trafficsigns.data.images import prepare_image
from trafficsigns.modeling.predict import predict_files

# Two sizes and two colour modes.
SETTINGS = {
    "24px-L": {"image_size": 24, "mode": "L"},
    "32px-RGB": {"image_size": 32, "mode": "RGB"},
}

# QUICK_TRAINING: a model whose classes depend on the image (not a near-uniform one), so agreeing on
# them means something, and top classes are no near-ties that round-off could swap.


def write_roi_crops(raw_dir, out_dir) -> None:
    """The test images cut to their annotated ROI, as a user would save them, named by test index.

    Every third goes to a subfolder as PNG (lossless, so the same pixels), the others stay PPM.
    """
    split = read_test_split(raw_dir)
    (out_dir / "png").mkdir(parents=True)
    with zipfile.ZipFile(split.archive) as zf:
        for i, (member, (x1, y1, x2, y2)) in enumerate(zip(split.members, split.rois)):
            img = Image.open(io.BytesIO(zf.read(member)))
            assert 0 <= x1 <= x2 < img.width and 0 <= y1 <= y2 < img.height  # so no clipping to mimic
            crop = img.crop((x1, y1, x2 + 1, y2 + 1))  # GTSRB corners are inclusive
            crop.save(out_dir / "png" / f"{i:05d}.png" if i % 3 == 0 else out_dir / f"{i:05d}.ppm")


@pytest.fixture(scope="module")
def projects(tiny_raw_master, tmp_path_factory) -> dict:
    """Per setting, a project after the real prepare and train stages, plus crops/ of its test images."""
    made = {}
    for name, prepare_params in SETTINGS.items():
        project = made[name] = make_project(tmp_path_factory.mktemp(name), raw=tiny_raw_master)
        run_stages(project, tiny_params({"prepare": prepare_params}, QUICK_TRAINING), "prepare", "augment", "train")
        write_roi_crops(project / "data" / "raw", project / "crops")
    return made


def image_files(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file())


def index_of(path) -> int:
    return int(os.path.basename(path).split(".")[0])


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_roi_crops_preprocess_exactly_like_prepare(projects, setting):
    """Crop first, then let predict resize == prepare's crop + resize, pixel for pixel."""
    project = projects[setting]
    ds = read_dataset(project / "data" / "prepared" / "dataset.h5", splits=("test",))
    files = image_files(project / "crops")
    assert len(files) == len(ds.y["test"])
    for path in files:
        settings = SETTINGS[setting]
        prepared = prepare_image(path.read_bytes(), str(path), settings["image_size"], settings["mode"])
        assert np.array_equal(prepared, ds.x["test"][index_of(path)])


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_cli_json_gives_the_models_classes_on_the_prepared_test_set(projects, setting):
    project = projects[setting]
    model_path = project / "models" / "best.keras"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "trafficsigns",
            "predict",
            str(project / "crops"),
            "--json",
            "--model",
            str(model_path),
            "--batch-size",
            "50",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    predictions = json.loads(result.stdout)

    assert [p["path"] for p in predictions] == [str(f) for f in image_files(project / "crops")]  # recursive, sorted
    x_test = read_dataset(project / "data" / "prepared" / "dataset.h5", splits=("test",)).x["test"]
    probs = keras.models.load_model(model_path).predict(x_test, verbose=0)[[index_of(p["path"]) for p in predictions]]
    top1 = [p["top_k"][0]["class_id"] for p in predictions]
    assert top1 == probs.argmax(axis=1).tolist()
    assert len(set(top1)) > 10, "a trained model, whose classes depend on the image"
    assert np.allclose(
        [[c["probability"] for c in p["top_k"]] for p in predictions], -np.sort(-probs, axis=1)[:, :3], atol=1e-5
    )
    assert all(c["name"] == GTSRB_CLASS_NAMES[c["class_id"]] for p in predictions for c in p["top_k"])


def test_roi_option_crops_like_prepare(projects):
    """A whole photo with --roi gives what its cropped file gives."""
    project = projects["32px-RGB"]
    split = read_test_split(project / "data" / "raw")
    photo = project / "photo.ppm"
    with zipfile.ZipFile(split.archive) as zf:
        photo.write_bytes(zf.read(split.members[1]))
    model = project / "models" / "best.keras"
    whole, _ = predict_files(model, [photo], top_k=5, roi=tuple(int(v) for v in split.rois[1]))
    cropped, _ = predict_files(model, [project / "crops" / "00001.ppm"], top_k=5)
    assert whole[0]["top_k"] == cropped[0]["top_k"]


def test_bad_files_are_skipped_by_name_and_the_exit_is_non_zero(projects, tmp_path, capsys):
    project = projects["24px-L"]
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("00001.ppm", "00002.ppm"):
        shutil.copy(project / "crops" / name, folder / name)
    (folder / "notes.ppm").write_text("not an image")
    (folder / "README.txt").write_text("not searched: no image suffix")
    code = main(
        [
            "predict",
            str(folder),
            str(tmp_path / "gone.png"),
            "--json",
            "--model",
            str(project / "models" / "best.keras"),
        ]
    )
    out, err = capsys.readouterr()
    assert code == EXIT_SKIPPED
    assert [r["path"] for r in json.loads(out)] == [str(folder / "00001.ppm"), str(folder / "00002.ppm")]
    assert f"skipped: {folder / 'notes.ppm'}: image does not decode" in err
    assert f"skipped: {tmp_path / 'gone.png'}: cannot read (No such file or directory)" in err
    assert "2 of 4 file(s) skipped" in err and "README" not in err


TABLE_ROW = re.compile(r"^(\S*) +(\d+) +(\d+)  (.+?) +([01]\.\d{4})$")


def test_text_table_shows_top_k_per_image(projects, capsys):
    project = projects["24px-L"]
    files = [str(project / "crops" / name) for name in ("00001.ppm", "00002.ppm")]
    model = str(project / "models" / "best.keras")
    assert main(["predict", *files, "--top-k", "5", "--model", model]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header.split() == ["image", "rank", "class", "name", "probability"]
    rows = [TABLE_ROW.match(line).groups() for line in lines]
    expected, _ = predict_files(model, files, top_k=5)
    assert len(rows) == 2 * 5
    for result, block in zip(expected, (rows[:5], rows[5:])):
        assert [r[0] for r in block] == [result["path"], "", "", "", ""]
        assert [int(r[1]) for r in block] == [1, 2, 3, 4, 5]
        assert [(int(r[2]), r[3], r[4]) for r in block] == [
            (c["class_id"], c["name"], f"{c['probability']:.4f}") for c in result["top_k"]
        ]


def test_user_errors_are_one_line_and_exit_1(projects, tmp_path, capsys):
    model = projects["24px-L"] / "models" / "best.keras"
    keras.models.load_model(model).save(tmp_path / "plain.keras")  # no metadata inside
    (tmp_path / "empty").mkdir()
    crops = str(projects["24px-L"] / "crops")
    cases = {
        "model not found": ["predict", crops, "--model", str(tmp_path / "absent.keras")],
        "not a model saved by this pipeline": ["predict", crops, "--model", str(tmp_path / "plain.keras")],
        "no images found": ["predict", str(tmp_path / "empty"), "--model", str(model)],
    }
    for message, argv in cases.items():
        assert main(argv) == EXIT_ERROR
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
