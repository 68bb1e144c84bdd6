"""The report: self-contained HTML (nothing fetched, every image embedded), Markdown beside its images,
and "what the network sees" for a CNN and for the dense network that has no convolution."""

import base64
import contextlib
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
    for section in (
        "Parameters",
        "Data",
        "Training",
        "Test set",
        "What the network sees",
        "Ensemble",
        "Opening the box",
    ):
        assert f"\n## {section}\n" in markdown
    assert "| committee of 2 | **70.00%** |" in markdown
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


def _git_project(path, committed: dict):
    """A git repo whose HEAD holds params.yaml = the committed one with `committed` overrides."""
    write_params(path, committed)
    sh(path, "git", "init", "-q")
    sh(path, "git", "add", "params.yaml")
    sh(path, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "params")
    return sh(path, "git", "rev-parse", "--short", "HEAD").stdout.strip()


def test_params_that_differ_are_those_that_differ_from_git_head(tmp_path):
    """Compared with params.yaml at HEAD (inside `dvc exp run`: the baseline); the commit is not named, so a
    new commit with the same params.yaml gives the same report bytes (the run-cache and remotes rely on it)."""
    from trafficsigns.reporting.report import params_section

    commit = _git_project(tmp_path, {})
    with contextlib.chdir(tmp_path):
        untouched = params_section(make_params())
        changed = params_section(make_params({"train": {"epochs": 7}, "model": {"v1": {"filters": 48}}}))
    assert untouched.blocks[0] == Text("All parameters as committed in `params.yaml` at git HEAD.")
    assert "git HEAD" in changed.blocks[0].text and commit not in changed.blocks[0].text
    table = changed.blocks[1]
    assert table.header == ["parameter", "value", "committed"]
    assert table.rows == [["model.v1.filters", "48", "96"], ["train.epochs", "7", "5"]]


def test_params_without_git_say_they_cannot_tell(tmp_path):
    from trafficsigns.reporting.report import params_section

    with contextlib.chdir(tmp_path):
        section = params_section(make_params())
    assert section.blocks[0].text.startswith("Cannot tell which parameters differ from the committed `params.yaml`")
    assert isinstance(section.blocks[-1], Code) and "epochs: 5" in section.blocks[-1].text
