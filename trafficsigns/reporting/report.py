"""The pipeline's results in one document: reports/report.html (self-contained) and reports/report.md.

Everything it shows was computed by the stages before it (params, data plots, training curves, test
metrics and figures) except "what the network sees": the feature maps of each convolution layer for a
few test images and the first layer's kernels, which trafficsigns/explain/features.py computes from the
best model. This module only lays the document out.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
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
    REPORT_BASELINE,
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
from trafficsigns.reporting.baseline import Baseline, read_baseline
from trafficsigns.reporting.document import Code, Figure, Section, Table, Text, write_document
from trafficsigns.reporting.runs import (
    HEADLINE,
    change,
    curve_file,
    curves_figure,
    flatten,
    number,
    param_text,
    read_curve,
    test_metrics,
)

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
    """The answer first (test metrics against the baseline, provenance), then the evidence (curves, test set,
    data), then what teaches rather than answers, folded (what the network sees, demystify, all params)."""
    evaluation = test_metrics(read_json(EVALUATE_METRICS))
    training = read_json(TRAIN_SUMMARY)
    counts, class_names, meta = read_summary(DATASET)  # the sizes and names only: the images stay on disk
    baseline = read_baseline()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sections = [
            answer_section(params, evaluation, training, baseline),
            provenance_section(params, baseline),
            training_section(work),
            evaluation_section(class_names),
            *ensemble_sections(),
            data_section(counts, meta, class_names),
            *network_sections(params, work),
            demystify_section(),
            params_section(params),
        ]
        title = (
            f"Traffic signs: {params.model.name} on {params.data.source}, "
            f"{params.prepare.size} px {params.prepare.mode}"
        )
        write_document(title, sections, html_path, md_path, images_dir)
    log.info("wrote %s and %s (%d figures in %s)", html_path, md_path, len(list(images_dir.iterdir())), images_dir)


def answer_section(params: Params, evaluation: dict, training: dict, baseline: Baseline) -> Section:
    from trafficsigns.modeling.models import describe  # imported here: TensorFlow, which `compare` does without

    rows = [
        [label, number(evaluation.get(key), rate), number(baseline.metrics.get(key), rate)]
        + [change(evaluation.get(key), baseline.metrics.get(key), rate)]
        for key, label, rate in HEADLINE
    ]
    if baseline.name is None:
        against = f"No baseline to compare with ({baseline.why})."
    else:
        against = (
            f"Baseline: {baseline.name}, as `{REPORT_BASELINE}` records it (`trafficsigns baseline` sets it); "
            "change in percentage points (pp) for rates."
        )
    return Section(
        "Test results",
        [
            Table(["on the test set", "this run", "baseline", "change"], rows, bold={(0, 1)}),
            Text(
                f"{evaluation.get('images', 0):,} test images, never used to pick the model. Model "
                f"`{params.model.name}` ({describe(params.model)}, {training.get('parameters', 0):,} weights): "
                f"epoch {training.get('best_epoch')} of {training.get('epochs_done')}, the best on validation "
                f"({number(training.get('best_val_accuracy'), True)}). {against}"
            ),
        ],
    )


def md5(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "md5").hexdigest()


def provenance_section(params: Params, baseline: Baseline) -> Section:
    model_md5 = md5(BEST_MODEL)
    blocks = [
        Table(
            ["input", "md5 (as in dvc.lock)"],
            [[f"`{DATASET}` (the prepared data)", md5(DATASET)], [f"`{BEST_MODEL}`", model_md5]],
        )
    ]
    if baseline.name is not None:
        values = flatten(params.as_yaml())
        keys = [*values, *(k for k in baseline.params if k not in values)]
        changed = [
            [f"`{k}`", param_text(values.get(k, ...)), param_text(baseline.params.get(k, ...))]
            for k in keys
            if values.get(k, ...) != baseline.params.get(k, ...)
        ]
        blocks.append(
            Table(["parameter that differs", "this run", "baseline"], changed)
            if changed
            else Text("Parameters: all as in the baseline's `params.yaml`.")
        )
    blocks.append(
        Text(
            "Commit, experiment name and date are not written here, on purpose: this page is a DVC output, the same "
            "bytes for the same params, code and data (a fresh clone's `dvc repro` re-creates it on another day; "
            "DVC's run-cache restores it for an experiment of another name). The run records them: `dvc exp show` "
            "(or `python -m trafficsigns compare`) lists each experiment's name, commit and date beside these "
            "metrics, and `git log --all --decorate-refs=refs/ --format='%h %ci %D' -S "
            f"{model_md5} -- dvc.lock` lists the commits that hold this model, with their date and experiment."
        )
    )
    return Section("Provenance", blocks)


def params_section(params: Params) -> Section:
    return Section(
        "All parameters",
        [
            Text("`params.yaml`, as validated:"),
            Code(yaml.safe_dump(params.as_yaml(), sort_keys=False)),
        ],
        folded=True,
    )


def data_section(counts: dict[str, int], meta: dict, class_names: list[str]) -> Section:
    shown = ("source", "size", "mode", "roi_crop", "val_fraction")
    blocks = [
        Text(
            f"`{DATASET}`: {len(class_names)} classes; validation is split by track, so no physical sign "
            "is in both train and validation."
        ),
        Table(["split", "images"], [[s, f"{n:,}"] for s, n in counts.items()]),
        Table(["prepared with", "value"], [[k, param_text(meta[k])] for k in shown if k in meta]),
    ]
    captions = {
        CLASS_HISTOGRAM: "Images per class and split",
        IMAGE_SIZES: "Raw image sizes",
        SAMPLES: "One prepared training image per class",
    }
    blocks += [Figure(path, caption, f"data_{path.name}") for path, caption in captions.items() if path.exists()]
    return Section("Data", blocks)


def training_section(work: Path) -> Section:
    panels = {
        metric: {
            f"{split} {metric}": read_curve(curve_file(split, metric))
            for split in ("train", "val")
            if curve_file(split, metric).exists()
        }
        for metric in ("accuracy", "loss")
    }
    # No wall times: they differ run to run, and the report must be the same bytes for the same inputs.
    blocks = [Text(f"Wall times per epoch are in `{TRAIN_TIMINGS}` (`dvc metrics show`).")]
    if any(panels.values()):
        path = curves_figure({k: v for k, v in panels.items() if v}, "Training curves", work / "training_curves.png")
        blocks.append(Figure(path, "Accuracy and loss per epoch (validation: whole held-out tracks)"))
    return Section("Training", blocks)


def evaluation_section(class_names: list[str]) -> Section:
    blocks = []
    if PER_CLASS_CSV.exists():
        with open(PER_CLASS_CSV, newline="") as f:
            worst = sorted(csv.DictReader(f), key=lambda r: float(r["accuracy"]))[:5]
        blocks.append(
            Text(
                "Hardest classes: "
                + "; ".join(f"{r['class']} ({number(float(r['accuracy']), True)})" for r in worst)
                + "."
            )
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
                folded=True,
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
    return [Section(title, blocks, folded=True)]


def ensemble_sections() -> list[Section]:
    scores = read_json(ENSEMBLE_METRICS) if ENSEMBLE_METRICS.exists() else {}
    if "ensemble" not in scores:  # `{}`: evaluate.ensemble is off
        return []
    scores = scores["ensemble"]
    rows = [
        [name, number(s["test"]["accuracy"], True), number(s["test"]["macro_f1"], True)]
        for name, s in scores["members"].items()
    ]
    rows.append(
        [
            f"committee of {len(rows)}",
            number(scores["test"]["accuracy"], True),
            number(scores["test"]["macro_f1"], True),
        ]
    )
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
            folded=True,
        )
    return Section(
        "Opening the box",
        [Text(f"The `demystify` figures from `{DEMYSTIFY_PLOTS}/` (NumPy, no Keras):")]
        + [Figure(p, DEMYSTIFY_CAPTIONS.get(p.name, p.stem), f"demystify_{p.name}") for p in shown],
        folded=True,
    )
