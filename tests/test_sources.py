"""The table of data sources: every `data.source` can be downloaded (or generated) and prepared."""

from __future__ import annotations

from tests.helpers import make_params
from trafficsigns.data.dataset import BUILDERS
from trafficsigns.data.h5store import expected_meta
from trafficsigns.data.sources import SOURCES


def test_every_source_has_a_builder_and_an_origin():
    for source in SOURCES.values():
        assert source.format in BUILDERS, source.name
        assert source.files, source.name
        # generated, or downloaded and verified against official checksums
        assert source.generated or all(source.files.values()), source.name


def test_synthetic_writes_the_official_archives(tiny_raw_master):
    assert sorted(p.name for p in tiny_raw_master.iterdir()) == sorted(SOURCES["synthetic"].files)
    assert list(SOURCES["synthetic"].files) == list(SOURCES["gtsrb"].files)


def test_fixed_preprocessing_overrides_params():
    params = make_params({"prepare": {"image_size": 48, "mode": "RGB", "roi_crop": True}}).prepare
    assert expected_meta("mnist", params) | {"size": 28, "mode": "L", "roi_crop": False} == expected_meta(
        "mnist", params
    )
    assert expected_meta("gtsrb", params)["size"] == 48
