"""The pipeline's results in one document: reports/report.html (self-contained) and reports/report.md.

Everything it shows was computed by the stages before it (params, data plots, training curves, test
metrics and figures) except "what the network sees": the feature maps of each convolution layer for a
few test images and the first layer's kernels, which trafficsigns/explain/features.py computes from the
best model. This module only lays the document out.
"""

from __future__ import annotations

import csv
import json
import logging
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import yaml

from trafficsigns.core.config import Params
from trafficsigns.core.errors import PipelineError
from trafficsigns.core.paths import (
    BEST_MODEL,
    CLASS_HISTOGRAM,
    CONFUSION_CSV,
    CONFUSION_FIGURE,
    DATASET,
    DEMYSTIFY_PLOTS,
    ENSEMBLE_METRICS,
    ERRORS_FIGURE,
    EVALUATE_METRICS,
    IMAGE_SIZES,
    PER_CLASS_CSV,
    PER_CLASS_FIGURE,
    REPORT_HTML,
    REPORT_IMAGES,
    REPORT_MD,
    SAMPLES,
    TRAIN_SUMMARY,
    TRAIN_TIMINGS,
)
from trafficsigns.data.h5store import expected_meta, read_summary
from trafficsigns.explain import demystify
from trafficsigns.reporting import plots
from trafficsigns.reporting.document import Code, Figure, Section, Table, Text, write_document
from trafficsigns.reporting.runs import curve_file, curves_figure, flatten, read_curve

log = logging.getLogger(__name__)
DEMYSTIFY_CAPTIONS = {
    demystify.CLASSIC_KERNELS_PNG: "A test sign cross-correlated with classic kernels: edges, blur, sharpen",
    demystify.FEATURE_MAPS_PNG: "What the first layer (ReLU(conv + b) in NumPy) makes of the same sign",
    demystify.RELU_MAXPOOL_PNG: "One feature map through the convolution, ReLU and 2×2 max-pooling, with the numbers",
    demystify.GD_VS_SGD_PNG: "Full-batch gradient descent vs mini-batch SGD vs pure SGD at equal compute",
}


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found (run `dvc repro` first)") from None


def write_report(
    params: Params, html_path: Path = REPORT_HTML, md_path: Path = REPORT_MD, images_dir: Path = REPORT_IMAGES
) -> None:
    evaluation = read_json(EVALUATE_METRICS)["test"]
    training = read_json(TRAIN_SUMMARY)
    counts, class_names, meta = read_summary(DATASET)  # the sizes and names only: the images stay on disk
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sections = [
            summary_section(params, evaluation, training),
            params_section(params),
            data_section(counts, meta, class_names),
            training_section(training, work),
            evaluation_section(evaluation, class_names),
            *network_sections(params, work),
            *ensemble_sections(),
            demystify_section(),
        ]
        title = (
            f"Traffic signs: {params.model.name} on {params.data.source}, "
            f"{params.prepare.size} px {params.prepare.mode}"
        )
        write_document(title, sections, html_path, md_path, images_dir)
    log.info("wrote %s and %s (%d figures in %s)", html_path, md_path, len(list(images_dir.iterdir())), images_dir)


def summary_section(params: Params, evaluation: dict, training: dict) -> Section:
    from trafficsigns.modeling.models import describe  # imported here: TensorFlow, which `compare` does without

    return Section(
        "Summary",
        [
            Text(
                f"Model `{params.model.name}` ({describe(params.model)}, "
                f"{training.get('parameters', 0):,} weights), trained {training.get('step', 0) + 1} epochs "
                f"(wall times in `{TRAIN_TIMINGS}`); the best epoch on validation was "
                f"{training.get('best_epoch')}. Test accuracy {evaluation['accuracy']:.2%}, macro-F1 "
                f"{evaluation['macro_f1']:.4f}, on {evaluation['images']:,} test images never used to pick the model."
            )
        ],
    )


def cell(value) -> str:
    """A table cell: floats to 4 decimals, integers with separators, booleans, null and lists as in YAML."""
    if isinstance(value, (bool, list, tuple)) or value is None or value == "":
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def committed_params() -> tuple[dict | None, str]:
    """params.yaml as committed at git HEAD, flattened, or (None, why) if git cannot tell.

    Inside `dvc exp run` (and in a queued run's temporary workspace) HEAD is the experiment's baseline
    commit, so the comparison shows exactly what the experiment changed. The commit itself is not named:
    the report must be the same bytes for the same params, code and data (DVC's run-cache, a team remote),
    and a new commit with the same params.yaml is the same baseline.
    """
    try:
        text = subprocess.run(
            ["git", "show", "HEAD:./params.yaml"], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        committed = yaml.safe_load(text)
    except subprocess.CalledProcessError as exc:  # not a git repo, no commit yet, no params.yaml at HEAD
        lines = (exc.stderr or "").strip().splitlines()
        return None, lines[-1] if lines else str(exc)
    except (OSError, subprocess.SubprocessError, yaml.YAMLError) as exc:
        return None, str(exc)
    if not isinstance(committed, dict):
        return None, "params.yaml at HEAD is not a mapping"
    return flatten(committed), ""


def params_section(params: Params) -> Section:
    values = flatten(params.model_dump(mode="json"))
    committed, why = committed_params()
    if committed is None:
        blocks = [Text(f"Cannot tell which parameters differ from the committed `params.yaml` (git: {why}).")]
    else:
        changed = [
            [k, cell(values[k]) if k in values else "(absent)", cell(committed[k]) if k in committed else "(absent)"]
            for k in [*values, *(k for k in committed if k not in values)]
            if values.get(k, ...) != committed.get(k, ...)
        ]
        blocks = (
            [
                Text("Parameters that differ from `params.yaml` as committed at git HEAD (the experiment's baseline):"),
                Table(["parameter", "value", "committed"], changed),
            ]
            if changed
            else [Text("All parameters as committed in `params.yaml` at git HEAD.")]
        )
    blocks += [
        Text("All of `params.yaml`, as validated:"),
        Code(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False)),
    ]
    return Section("Parameters", blocks)


def data_section(counts: dict[str, int], meta: dict, class_names: list[str]) -> Section:
    shown = ("source", "size", "mode", "roi_crop", "val_fraction")
    blocks = [
        Text(
            f"`{DATASET}`: {len(class_names)} classes; validation is split by track, so no physical sign "
            "is in both train and validation."
        ),
        Table(["split", "images"], [[s, f"{n:,}"] for s, n in counts.items()]),
        Table(["prepared with", "value"], [[k, cell(meta[k])] for k in shown if k in meta]),
    ]
    captions = {
        CLASS_HISTOGRAM: "Images per class and split",
        IMAGE_SIZES: "Raw image sizes",
        SAMPLES: "One prepared training image per class",
    }
    blocks += [Figure(path, caption, f"data_{path.name}") for path, caption in captions.items() if path.exists()]
    return Section("Data", blocks)


def training_section(training: dict, work: Path) -> Section:
    panels = {
        metric: {
            f"{split} {metric}": read_curve(curve_file(split, metric))
            for split in ("train", "val")
            if curve_file(split, metric).exists()
        }
        for metric in ("accuracy", "loss")
    }
    # No wall times: they differ run to run, and the report must be the same bytes for the same inputs.
    rows = [[k, cell(training[k])] for k in ("best_epoch", "best_val_accuracy", "parameters") if k in training]
    blocks = [Table(["training", "value"], rows)]
    if any(panels.values()):
        path = curves_figure({k: v for k, v in panels.items() if v}, "Training curves", work / "training_curves.png")
        blocks.append(Figure(path, "Accuracy and loss per epoch (validation: whole held-out tracks)"))
    return Section("Training", blocks)


def evaluation_section(evaluation: dict, class_names: list[str]) -> Section:
    blocks = [Table(["test metric", "value"], [[k, cell(v)] for k, v in evaluation.items()])]
    if PER_CLASS_CSV.exists():
        with open(PER_CLASS_CSV, newline="") as f:
            worst = sorted(csv.DictReader(f), key=lambda r: float(r["accuracy"]))[:5]
        blocks.append(
            Text("Hardest classes: " + "; ".join(f"{r['class']} ({float(r['accuracy']):.0%})" for r in worst) + ".")
        )
    blocks.append(Figure(PER_CLASS_FIGURE, "Per-class test accuracy", f"evaluate_{PER_CLASS_FIGURE.name}"))
    if CONFUSION_CSV.exists():
        with open(CONFUSION_CSV, newline="") as f:
            pairs = Counter(
                (plots.class_id(r["actual"]), plots.class_id(r["predicted"]))
                for r in csv.DictReader(f)
                if r["actual"] != r["predicted"]
            )
        if pairs:
            blocks.append(
                Text(
                    "Most frequent confusions (true → predicted, test images): "
                    + "; ".join(
                        f"{a} {class_names[a]} → {p} {class_names[p]} ({n})" for (a, p), n in pairs.most_common(5)
                    )
                    + "."
                )
            )
    blocks += [
        Figure(CONFUSION_FIGURE, "Confusion matrix on the test set", f"evaluate_{CONFUSION_FIGURE.name}"),
        Figure(ERRORS_FIGURE, "The most confident errors", f"evaluate_{ERRORS_FIGURE.name}"),
    ]
    return Section("Test set", blocks)


def network_sections(params: Params, work: Path) -> list[Section]:
    """Feature maps of each conv layer for `report.images` test images, and the first-layer kernels."""
    from trafficsigns.explain.features import network_views  # TensorFlow, which `compare` does without

    title = "What the network sees"
    expected = expected_meta(params.data.source, params.prepare)
    views = network_views(BEST_MODEL, DATASET, expected, params.report.images, work)
    if not views.convs:
        return [
            Section(
                title,
                [
                    Text(
                        f"Model `{views.model}` has no convolution layer: it sees the image as one "
                        "flat vector of pixels, so there are no kernels or feature maps to show."
                    )
                ],
            )
        ]
    first = views.convs[0]
    blocks = [
        Text(
            f"`{views.model}` has {len(views.convs)} convolution layers: "
            + ", ".join(f"`{c.name}` ({c.filters} kernels {c.kernel[0]}×{c.kernel[1]})" for c in views.convs)
            + ". Early layers respond to edges and colour blobs; deeper ones see coarser, more abstract "
            "patterns at a lower resolution."
        )
    ]
    if views.kernels is not None:
        blocks.append(Figure(views.kernels, f"The {first.filters} kernels of the first layer `{first.name}`"))
    blocks += [
        Figure(path, f"Each convolution layer's most active feature maps for test image #{i}")
        for i, path in views.feature_maps
    ]
    return [Section(title, blocks)]


def ensemble_sections() -> list[Section]:
    if not ENSEMBLE_METRICS.exists():
        return []
    scores = read_json(ENSEMBLE_METRICS).get("ensemble")
    if not scores:
        return []
    rows = [
        [name, f"{s['test']['accuracy']:.2%}", f"{s['test']['macro_f1']:.4f}"] for name, s in scores["members"].items()
    ]
    rows.append([f"committee of {len(rows)}", f"{scores['test']['accuracy']:.2%}", f"{scores['test']['macro_f1']:.4f}"])
    return [
        Section(
            "Ensemble",
            [
                Text("The average of the members' softmax outputs, on the same test set (`evaluate.ensemble`):"),
                Table(["model", "test accuracy", "macro-F1"], rows, bold={(len(rows) - 1, 1)}),
            ],
        )
    ]


def demystify_section() -> Section:
    # its first-layer kernels figure is the one "What the network sees" already shows
    shown = sorted(p for p in DEMYSTIFY_PLOTS.glob("*.png") if p.name != demystify.KERNELS_PNG)
    if not shown:
        return Section(
            "Opening the box",
            [
                Text(
                    "The demystify figures (convolution, ReLU and max-pooling step by step in NumPy, GD vs SGD) "
                    "are off: "
                    "`dvc exp run -S demystify.enabled=true` adds them here, or run `python -m trafficsigns demystify`."
                )
            ],
        )
    return Section(
        "Opening the box",
        [Text(f"The `demystify` figures from `{DEMYSTIFY_PLOTS}/` (NumPy, no Keras):")]
        + [Figure(p, DEMYSTIFY_CAPTIONS.get(p.name, p.stem), f"demystify_{p.name}") for p in shown],
    )
