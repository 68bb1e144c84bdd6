"""The pipeline's results in one document: reports/report.html (self-contained) and reports/report.md.

Everything it shows was computed by the stages before it (params, data plots, training curves, test
metrics and figures) except "what the network sees": the feature maps of each convolution layer for a
few test images and the first layer's kernels, computed here from the best model.
"""

from __future__ import annotations

import csv
import json
import logging
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import yaml
from matplotlib.ticker import MaxNLocator

from trafficsigns.core.config import Params
from trafficsigns.core.errors import PipelineError
from trafficsigns.core.paths import (
    BEST_MODEL,
    DATA_PLOTS,
    DATASET,
    DEMYSTIFY_PLOTS,
    ENSEMBLE_METRICS,
    EVALUATE_METRICS,
    EVALUATE_PLOTS,
    REPORT_HTML,
    REPORT_IMAGES,
    REPORT_MD,
    TRAIN_LIVE_DIR,
    TRAIN_TIMINGS,
    step_logs,
)
from trafficsigns.data.h5store import expected_meta, read_dataset, read_summary
from trafficsigns.reporting import plots
from trafficsigns.reporting.document import Code, Figure, Section, Table, Text, write_document

log = logging.getLogger(__name__)
plt = plots.plt
DEMYSTIFY_CAPTIONS = {
    "1_classic_kernels": "A test sign cross-correlated with classic kernels: edges, blur, sharpen",
    "2_first_layer_feature_maps": "What the first layer (ReLU(conv + b) in NumPy) makes of the same sign",
    "3_relu_maxpool": "One feature map through the convolution, ReLU and 2×2 max-pooling, with the numbers",
    "4_gd_vs_sgd": "Full-batch gradient descent vs mini-batch SGD vs pure SGD at equal compute",
}
CURVES = step_logs(TRAIN_LIVE_DIR)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found (run `dvc repro` first)") from None


def parse_curve(text: str) -> tuple[np.ndarray, np.ndarray]:
    """A dvclive TSV (step, value) as epochs (1-based) and values."""
    rows = list(csv.reader(text.splitlines(), delimiter="\t"))[1:]
    return np.array([int(r[0]) + 1 for r in rows]), np.array([float(r[1]) for r in rows])


def read_curve(path: Path) -> tuple[np.ndarray, np.ndarray]:
    return parse_curve(path.read_text())


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"model": {"name": "v1"}} -> {"model.name": "v1"}, the keys `dvc exp run -S` takes."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def curves_figure(panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], title: str, path: Path) -> Path:
    """One panel per y label, one line per series: {ylabel: {label: (epochs, values)}}."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for ax, (ylabel, series) in zip(axes[0], panels.items()):
        for label, (x, y) in series.items():
            ax.plot(x, y, marker="." if len(x) < 30 else None, label=label)
        ax.set_xlabel("epoch"), ax.set_ylabel(ylabel), ax.grid(alpha=0.3), ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    plots.save(fig, path)
    return path


def write_report(
    params: Params, html_path: Path = REPORT_HTML, md_path: Path = REPORT_MD, images_dir: Path = REPORT_IMAGES
) -> None:
    evaluation = read_json(EVALUATE_METRICS)
    training = read_json(TRAIN_LIVE_DIR / "metrics.json")
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
    from trafficsigns.modeling.models import ARCHITECTURES  # imported here: TensorFlow, which `compare` does without

    arch = ARCHITECTURES.get(params.model.name)
    return Section(
        "Summary",
        [
            Text(
                f"Model `{params.model.name}` ({arch.about if arch else 'unknown architecture'}, "
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


def params_section(params: Params) -> Section:
    values, defaults = flatten(params.model_dump(mode="json")), flatten(Params().model_dump(mode="json"))
    changed = [[k, cell(v), cell(defaults.get(k))] for k, v in values.items() if v != defaults.get(k)]
    blocks = [
        Table(["parameter", "value", "default"], changed) if changed else Text("All parameters at their defaults.")
    ]
    blocks += [
        Text("All of `params.yaml`, as validated, defaults filled in:"),
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
        "class_histogram.png": "Images per class and split",
        "image_sizes.png": "Raw image sizes",
        "samples.png": "One prepared training image per class",
    }
    blocks += [
        Figure(DATA_PLOTS / name, caption, f"data_{name}")
        for name, caption in captions.items()
        if (DATA_PLOTS / name).exists()
    ]
    return Section("Data", blocks)


def training_section(training: dict, work: Path) -> Section:
    panels = {
        metric: {
            f"{split} {metric}": read_curve(CURVES / split / f"{metric}.tsv")
            for split in ("train", "val")
            if (CURVES / split / f"{metric}.tsv").exists()
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
    per_class = EVALUATE_PLOTS / "per_class_accuracy.csv"
    if per_class.exists():
        with open(per_class, newline="") as f:
            worst = sorted(csv.DictReader(f), key=lambda r: float(r["accuracy"]))[:5]
        blocks.append(
            Text("Hardest classes: " + "; ".join(f"{r['class']} ({float(r['accuracy']):.0%})" for r in worst) + ".")
        )
    blocks.append(
        Figure(EVALUATE_PLOTS / "per_class_accuracy.png", "Per-class test accuracy", "evaluate_per_class_accuracy.png")
    )
    confusion = EVALUATE_PLOTS / "confusion.csv"
    if confusion.exists():
        with open(confusion, newline="") as f:
            pairs = Counter(
                (int(r["actual"]), int(r["predicted"])) for r in csv.DictReader(f) if r["actual"] != r["predicted"]
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
        Figure(
            EVALUATE_PLOTS / "confusion_matrix.png", "Confusion matrix on the test set", "evaluate_confusion_matrix.png"
        ),
        Figure(EVALUATE_PLOTS / "worst_errors.png", "The most confident errors", "evaluate_worst_errors.png"),
    ]
    return Section("Test set", blocks)


def network_sections(params: Params, work: Path) -> list[Section]:
    """Feature maps of each conv layer for `report.images` test images, and the first-layer kernels."""
    from trafficsigns.explain import features
    from trafficsigns.modeling.models import load_model

    title = "What the network sees"
    model = load_model(BEST_MODEL)
    convs = features.conv_layers(model)
    if not convs:
        return [
            Section(
                title,
                [
                    Text(
                        f"Model `{model.name}` has no convolution layer: it sees the image as one "
                        "flat vector of pixels, so there are no kernels or feature maps to show."
                    )
                ],
            )
        ]
    ds = read_dataset(DATASET, splits=("test",), expected=expected_meta(params.data.source, params.prepare))
    x, y = ds.x["test"], ds.y["test"]
    chosen = features.pick_images(y, params.report.images)
    blocks = [
        Text(
            f"`{model.name}` has {len(convs)} convolution layers: "
            + ", ".join(f"`{c.name}` ({c.filters} kernels {c.kernel_size[0]}×{c.kernel_size[1]})" for c in convs)
            + ". Early layers respond to edges and colour blobs; deeper ones see coarser, more abstract "
            "patterns at a lower resolution."
        )
    ]
    if len(x):
        first = int(chosen[0]) if len(chosen) else 0
        caption = f"test image #{first}: {ds.class_names[y[first]]}"
        blocks.append(
            Figure(
                features.kernels_figure(model, x[first], caption, work / "first_layer_kernels.png"),
                f"The {convs[0].filters} kernels of the first layer `{convs[0].name}`",
            )
        )
    if len(chosen):
        probs = model.predict(x[chosen], verbose=0)
        maps = features.feature_maps(model, x[chosen])
        for n, i in enumerate(chosen):
            pred = int(probs[n].argmax())
            caption = (
                f"test image #{i}, true: {ds.class_names[y[i]]}\n"
                f"predicted: {ds.class_names[pred]} (p = {probs[n, pred]:.2f})"
            )
            path = features.feature_maps_figure(
                x[i], caption, [(name, m[n]) for name, m in maps], work / f"feature_maps_{n + 1}.png"
            )
            blocks.append(Figure(path, f"Each convolution layer's most active feature maps for test image #{i}"))
    return [Section(title, blocks)]


def ensemble_sections() -> list[Section]:
    if not ENSEMBLE_METRICS.exists():
        return []
    scores = read_json(ENSEMBLE_METRICS)
    if not scores.get("enabled"):
        return []
    rows = [[name, f"{s['accuracy']:.2%}", f"{s['macro_f1']:.4f}"] for name, s in scores["members"].items()]
    rows.append(
        [
            f"committee of {len(rows)}",
            f"{scores['committee']['accuracy']:.2%}",
            f"{scores['committee']['macro_f1']:.4f}",
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
    figures = sorted(p for p in DEMYSTIFY_PLOTS.glob("*.png") if p.stem != "2_first_layer_kernels")
    if not figures:
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
        + [Figure(p, DEMYSTIFY_CAPTIONS.get(p.stem, p.stem), f"demystify_{p.name}") for p in figures],
    )
