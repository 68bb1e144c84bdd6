"""A committee of trained models: the average of their softmax outputs on the test set.

Members differ by their random start, architecture or preprocessing, so their errors partly differ and
the average corrects some of them (IDSIA's 99.46 % on GTSRB was a committee of 25 CNNs). A member is a
model file, or the name of an experiment (any git revision): its `models/best.keras` is read from the DVC
cache through `dvc.api.open`, which changes nothing in the workspace (`dvc exp apply` would). An
experiment prepared otherwise (another colour mode or size) is fed the test images of its own
`data/prepared/dataset.h5`, from the cache too, once they are checked to be the same images.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from trafficsigns.core.errors import PipelineError
from trafficsigns.core.paths import BEST_MODEL, DATASET
from trafficsigns.data.h5store import Dataset, read_dataset
from trafficsigns.modeling.metrics import classification_metrics
from trafficsigns.modeling.models import load_model, read_model_metadata

log = logging.getLogger(__name__)
PREPROCESSING = ("size", "mode", "roi_crop", "channels")


def committee_probabilities(member_probs: list[np.ndarray]) -> np.ndarray:
    """The plain average of the members' class probabilities (each row still sums to 1)."""
    shapes = {p.shape for p in member_probs}
    if len(shapes) != 1:
        raise PipelineError(f"ensemble members predict differently shaped outputs: {sorted(shapes)}")
    return np.mean(member_probs, axis=0)


def committee_scores(member_probs: dict[str, np.ndarray], y: np.ndarray) -> dict:
    """metrics/ensemble.json: the committee's and each member's test accuracy and macro-F1, numbers only,
    nested so that DVC's columns read ensemble.test.accuracy, ensemble.members.<member>.test.accuracy."""

    def score(probs):
        headline, _ = classification_metrics(probs, y)
        return {"test": {"accuracy": headline["accuracy"], "macro_f1": headline["macro_f1"]}}

    committee = score(committee_probabilities(list(member_probs.values())))
    return {"ensemble": {**committee, "members": {name: score(p) for name, p in member_probs.items()}}}


def from_revision(spec: str, path: Path, dest: Path) -> Path:
    """`path` as experiment (or git revision) `spec` has it, copied out of the DVC cache to `dest`."""
    import dvc.api  # imported here: only experiment names need DVC's machinery

    try:
        with dvc.api.open(str(path), rev=spec, mode="rb") as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst)
    except Exception as exc:  # DVC raises many kinds: unknown revision, output not in the cache, no repo
        raise PipelineError(
            f"evaluate.ensemble: {spec!r} is neither a model file nor an experiment or revision "
            f"whose {path} is in the DVC cache ({type(exc).__name__}: {exc})"
        ) from None
    return dest


def is_model_file(spec: str) -> bool:
    """A member named by its file (an existing path or a `.keras` name), not by its experiment."""
    return Path(spec).exists() or Path(spec).suffix == ".keras"


def member_path(spec: str, workdir: Path) -> Path:
    """A model file as given, or an experiment's best model copied from the DVC cache into `workdir`."""
    if is_model_file(spec):
        if not Path(spec).is_file():
            raise PipelineError(f"evaluate.ensemble: model file {spec} not found")
        return Path(spec)
    return from_revision(spec, BEST_MODEL, workdir / f"{_safe(spec)}.keras")


def _safe(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", spec)


def member_test_images(spec: str, preprocessing: dict, ds: Dataset, workdir: Path) -> np.ndarray:
    """The test images as `spec` was trained to see them: `ds`'s, or those its experiment prepared."""
    wanted = {k: ds.meta.get(k) for k in PREPROCESSING}
    if preprocessing == wanted:
        return ds.x["test"]
    if is_model_file(spec):
        raise PipelineError(
            f"evaluate.ensemble: {spec} was trained on {preprocessing}, the dataset is {wanted}; name the "
            "experiment that trained it instead of the file, so that its own prepared test images are used"
        )
    copy = workdir / f"{_safe(spec)}.h5"
    own = read_dataset(from_revision(spec, DATASET, copy), ("test",), expected=preprocessing)
    copy.unlink()
    if own.class_names != ds.class_names or not np.array_equal(own.y["test"], ds.y["test"]):
        raise PipelineError(
            f"evaluate.ensemble: {spec}'s prepared test set is not this one (other data.source or images); "
            "a committee's members must be scored on the same test images"
        )
    return own.x["test"]


def member_probabilities(specs: tuple[str, ...], ds: Dataset, batch_size: int) -> dict[str, np.ndarray]:
    """Each member's test-set probabilities, each on the test images prepared as it was trained (read once
    per preprocessing: two grayscale seeds share one copy of their prepared data)."""
    probs, images = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in specs:
            path = member_path(spec, Path(tmp))
            meta = read_model_metadata(path)
            if meta["class_names"] != ds.class_names:
                raise PipelineError(f"evaluate.ensemble: {spec} was trained on other classes than the dataset's")
            key = (is_model_file(spec), json.dumps(meta["preprocessing"], sort_keys=True))  # files: never fetched
            if key not in images:
                images[key] = member_test_images(spec, meta["preprocessing"], ds, Path(tmp))
            probs[spec] = load_model(path).predict(images[key], batch_size=batch_size, verbose=0)
            log.info(
                "ensemble member %s: test accuracy %.4f", spec, (probs[spec].argmax(axis=1) == ds.y["test"]).mean()
            )
    return probs


def ensemble_metrics(specs: tuple[str, ...], ds: Dataset, batch_size: int) -> dict:
    """metrics/ensemble.json: `{}` without members (DVC wants the file either way; no column then)."""
    if not specs:
        return {}
    scores = committee_scores(member_probabilities(specs, ds, batch_size), ds.y["test"])
    log.info("committee of %d: test accuracy %.4f", len(specs), scores["ensemble"]["test"]["accuracy"])
    return scores
