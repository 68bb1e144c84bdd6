"""The report: the answer first (test metrics against the baseline, provenance), self-contained HTML (nothing
fetched, every image embedded), Markdown beside its images, and "what the network sees" for a CNN and for
the dense network that has no convolution."""

import base64
import contextlib
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import make_params, make_project, sh, tiny_params, write_params
from trafficsigns.reporting.document import Code, Figure, Section, Table, Text, to_markdown


@pytest.fixture(scope="module", params=["mnist_cnn", "dnn"])
def report(request, tiny_dataset, tmp_path_factory):
    """(project folder, model name): the real prepare/augment/train/evaluate/report stages on the tiny dataset, with
    stand-ins for the demystify figures and a committee's scores."""
    from trafficsigns.stages import augment, evaluate, report, train

    root = make_project(tmp_path_factory.mktemp(f"report-{request.param}"), prepared=tiny_dataset)
    params = tiny_params({"model": {"name": request.param}})
    with contextlib.chdir(root):
        augment.main(params, workers=1)
        train.main(params)
        evaluate.main(params)
        (root / "plots" / "demystify").mkdir(parents=True)
        shutil.copy(root / "plots" / "data" / "samples.png", root / "plots" / "demystify" / "3_relu_maxpool.png")
        (root / "metrics" / "ensemble.json").write_text(
            json.dumps(
                {
                    "ensemble": {
                        "test": {"accuracy": 0.7, "macro_f1": 0.6},
                        "members": {
                            "a.keras": {"test": {"accuracy": 0.5, "macro_f1": 0.4}},
                            "b.keras": {"test": {"accuracy": 0.6, "macro_f1": 0.5}},
                        },
                    }
                }
            )
        )
        report.main(params)
    return root, request.param


def test_html_fetches_nothing_and_embeds_every_image(report):
    root, _ = report
    page = (root / "reports" / "report.html").read_text()
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"<script|<link|@import|url\(", page), "scripts, stylesheets or fetched CSS in the page"
    sources = re.findall(r'<img src="([^"]*)"', page)
    images = sorted((root / "reports" / "images").iterdir())
    assert len(sources) == len(images) >= 8
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1]).startswith(b"\x89PNG")


def test_markdown_references_the_image_files(report):
    root, _ = report
    markdown = (root / "reports" / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown)
    assert sorted(linked) == sorted(f"images/{p.name}" for p in (root / "reports" / "images").iterdir())
    order = [
        "Test results",
        "Provenance",
        "Training",
        "Test set",
        "Ensemble",
        "Data",
        "What the network sees",
        "Opening the box",
        "All parameters",
    ]
    assert re.findall(r"^## (.+)$", markdown, flags=re.M) == order
    assert "| committee of 2 | **70.00%** | 60.00% |" in markdown
    assert "demystify_3_relu_maxpool.png" in markdown


def test_what_the_network_sees(report):
    root, model = report
    images = {p.name for p in (root / "reports" / "images").iterdir()}
    markdown = (root / "reports" / "report.md").read_text()
    if model == "dnn":
        assert "has no convolution layer" in markdown and not any("feature_maps" in n for n in images)
    else:  # report.images test images, each through both conv layers, and the first layer's kernels
        assert {f"feature_maps_{i}.png" for i in range(1, 5)} | {"first_layer_kernels.png"} <= images
        assert re.search(
            r"2 convolution layers: `conv2d\w*` \(8 kernels 3×3\), `conv2d\w*` \(16 kernels 3×3\)", markdown
        )


def test_one_structure_two_renderings(tmp_path):
    (tmp_path / "x.png").write_bytes(b"\x89PNG fake")
    sections = [
        Section(
            "A b",
            [
                Text("a `key` | b"),
                Code("k: v"),
                Table(["h", "i"], [[1, "x|y"]], bold={(0, 0)}),
                Figure(tmp_path / "x.png", "cap", "x.png"),
            ],
        )
    ]
    assert to_markdown("T", sections, Path("img")).split("\n") == [
        "# T",
        "",
        "## A b",
        "",
        "a `key` | b",
        "",
        "```",
        "k: v",
        "```",
        "",
        "| h | i |",
        "| --- | --- |",
        "| **1** | x\\|y |",
        "",
        "![cap](img/x.png)",
        "",
        "*cap*",
        "",
    ]


def _commit(path, message: str, params: dict | None = None, metrics: dict | None = None) -> str:
    """Commit params.yaml (the committed one with `params` overrides) and metrics/evaluate.json; the commit's sha."""
    if params is not None:
        write_params(path, params)
    if metrics is not None:
        (path / "metrics").mkdir(exist_ok=True)
        (path / "metrics" / "evaluate.json").write_text(json.dumps({"test": metrics}))
    if not (path / ".git").exists():
        sh(path, "git", "init", "-q")
    sh(path, "git", "add", "-A")
    sh(path, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)
    return sh(path, "git", "rev-parse", "HEAD").stdout.strip()


def _provenance(path, params):
    from trafficsigns.reporting.baseline import read_baseline
    from trafficsigns.reporting.report import provenance_section

    for name in ("data/prepared/dataset.h5", "models/best.keras"):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(name.encode())
    with contextlib.chdir(path):
        baseline = read_baseline()
        return baseline, provenance_section(params, baseline)


def test_the_baseline_is_a_recorded_file_so_the_page_depends_on_its_inputs_only(tmp_path):
    """`trafficsigns baseline [NAME]` records a run's test metrics and params in reports/baseline.json, an input
    of the report stage: the page compares with it whatever git history the clone has."""
    from trafficsigns.reporting.baseline import record
    from trafficsigns.reporting.report import answer_section

    first = _commit(tmp_path, "baseline", {"train": {"epochs": 5}}, {"accuracy": 0.8, "loss": 0.9})
    (tmp_path / "metrics" / "evaluate.json").write_text(json.dumps({"test": {"accuracy": 0.85, "loss": 0.7}}))
    params = make_params({"train": {"epochs": 7}, "model": {"v1": {"filters": 48}}})
    write_params(tmp_path, {"train": {"epochs": 7}, "model": {"v1": {"filters": 48}}})
    with contextlib.chdir(tmp_path):
        record(first[:10])
    baseline, section = _provenance(tmp_path, params)
    assert baseline.name == f"{first[:10]} ({first[:7]})" and baseline.metrics == {"accuracy": 0.8, "loss": 0.9}
    table = section.blocks[1]
    assert table.header == ["parameter that differs", "this run", "baseline"]
    assert table.rows == [["`model.v1.filters`", "48", "96"], ["`train.epochs`", "7", "5"]]
    answer = answer_section(params, {"accuracy": 0.85, "loss": 0.7}, {}, baseline)
    assert answer.blocks[0].rows[0] == ["test accuracy", "85.00%", "80.00%", "+5.00 pp"]
    assert answer.blocks[0].rows[3] == ["loss", "0.7000", "0.9000", "-0.2000"]

    # The same file in a history-less copy (a fresh `git init`, as a CI checkout may be): the same page.
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("params.yaml", "metrics/evaluate.json", "reports/baseline.json"):
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tmp_path / name, copy / name)
    _commit(copy, "no history")
    assert _provenance(copy, params) == (baseline, section)

    # The workspace's own results, as main records them after `dvc repro`.
    with contextlib.chdir(tmp_path):
        assert record(None)["test"] == {"accuracy": 0.85, "loss": 0.7}


def test_a_missing_baseline_is_said_and_an_unknown_name_refused(tmp_path):
    from trafficsigns.core.errors import PipelineError
    from trafficsigns.reporting.baseline import record

    baseline, section = _provenance(tmp_path, make_params())
    assert baseline.name is None and "`trafficsigns baseline` records one" in baseline.why
    assert len(section.blocks) == 2, "no params table without a baseline"
    _commit(tmp_path, "results", {}, {"accuracy": 0.8})
    with contextlib.chdir(tmp_path), pytest.raises(PipelineError, match="'nope' is no commit, branch, tag or"):
        record("nope")


def test_the_answer_leads_with_every_rate_as_a_percentage(report):
    """No reports/baseline.json here, so no baseline: its cells are dashes, never Python's None or nan."""
    root, _ = report
    test = json.loads((root / "metrics" / "evaluate.json").read_text())["test"]
    markdown = (root / "reports" / "report.md").read_text()
    answer = markdown.split("\n## Test results\n", 1)[1].split("\n## ", 1)[0]
    assert answer.lstrip().startswith("| on the test set | this run | baseline | change |")
    assert f"| test accuracy | **{test['accuracy']:.2%}** | — | — |" in answer
    assert f"| macro-F1 | {test['macro_f1']:.2%} | — | — |" in answer
    assert f"| loss | {test['loss']:.4f} | — | — |" in answer
    assert (
        f"{test['images']:,} test images" in answer
        and "No baseline to compare with (no `reports/baseline.json`" in answer
    )
    assert not re.search(r"\bNone\b|\bnan\b|\bFalse\b", markdown)


def test_provenance_is_a_function_of_the_inputs(report):
    """The data's and the model's md5, as dvc.lock records them; no commit, experiment name or date."""
    root, _ = report
    markdown = (root / "reports" / "report.md").read_text()
    for path in ("data/prepared/dataset.h5", "models/best.keras"):
        assert hashlib.md5((root / path).read_bytes()).hexdigest() in markdown
    assert "git log --all --decorate-refs=refs/ --format='%h %ci %D' -S " in markdown
    assert "not written here, on purpose" in markdown


def test_the_teaching_sections_and_all_params_are_folded(report):
    root, _ = report
    page = (root / "reports" / "report.html").read_text()
    folded = re.findall(r'<details><summary><h2 id="[^"]+">([^<]+)</h2></summary>', page)
    assert folded == ["What the network sees", "Opening the box", "All parameters"]
    ids = [page.index(f'<h2 id="{anchor}">') for anchor in ("test-results", "provenance", "training", "test-set")]
    assert ids == sorted(ids)


def test_numbers_have_one_format_and_no_python_literals():
    from trafficsigns.reporting.runs import change, number, param_text

    assert [number(0.823188, True), number(0.80829, False), number(None, True), number(float("nan"), True)] == [
        "82.32%",
        "0.8083",
        "—",
        "—",
    ]
    assert [change(0.8232, 0.8112, True), change(0.5, 0.7, False), change(0.5, None, True)] == [
        "+1.20 pp",
        "-0.2000",
        "—",
    ]
    assert [param_text(v) for v in ("v1", True, None, 0.001, [1, 2], "", ...)] == [
        "v1",
        "true",
        "null",
        "0.001",
        "[1, 2]",
        '""',
        "—",
    ]
