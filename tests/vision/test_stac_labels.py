"""vision.data.stac_labels: a STAC label catalog (stac-eurosat100) as training windows: items
as scenes, label assets as labels, ml-aoi:split as splits, the catalog's band names; items
that cannot be used are listed, not dropped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from vision.data.labelled import LabelledSpec, build
from vision.data.sampling import SamplingOptions
from vision.data.spec import open_spec, resolve_spec
from vision.data.stac_labels import read_label_catalog

CATALOG = "stac-eurosat100/stac/subset/catalog.json"
DECLARED = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B08A", "B09", "B10", "B11", "B12"]

pytestmark = pytest.mark.data


def test_the_catalog_gives_one_window_per_item_with_its_split(data_dir: Path) -> None:
    spec = LabelledSpec(kind="stac", catalog=str(data_dir / CATALOG), sampling=SamplingOptions(size=(64, 64)))
    data = build(spec, quiet=True, reuse=False)
    assert len(data.samples) == 83 and not data.label_problems and not data.window_skips
    assert {s: data.splits.count(s) for s in data.split_names()} == {"train": 50, "validate": 17, "test": 16}
    assert data.bands == DECLARED  # the catalog's eo:bands names, as declared
    assert data.radiometry.kind == "reflectance" and data.radiometry.level == "L1C" and data.gsd_m == 9.999
    # the declared order does not fit the pixels: said, not silently fixed
    assert any("band 10 (declared B09, median 12) looks like cirrus B10" in w for w in data.warnings)
    # s2cloudless would read the wrong bands: no cloud check, said once for the catalog
    assert set(data.cloud_methods.values()) == {None}
    assert [w for w in data.warnings if "no s2cloudless cloud check on 83 scene(s)" in w]
    assert sum("s2cloudless" in w for w in data.warnings) == 1
    assert data.split_report["rule"] == {"method": "preset"}
    k = 0
    path = data.scenes[data.samples[k].scene].plan.sources[0].path
    with rasterio.open(path) as ds:
        assert np.array_equal(data.read_window(k), np.moveaxis(ds.read(), 0, -1))
    assert data.columns()["label_source"][k].endswith(".geojson")


def test_the_catalog_is_a_data_spec(data_dir: Path) -> None:
    ds = resolve_spec(str(data_dir / CATALOG))
    assert ds.layout == "stac" and ds.names() == ["train", "test", "validate"]
    test = open_spec(f"{data_dir / CATALOG}:test")
    assert len(test) == 16 and test.bands == DECLARED and len(test.classes) == 10


def test_items_without_labels_or_with_remote_hrefs_are_listed(data_dir: Path, tmp_path: Path) -> None:
    src = data_dir / "stac-eurosat100"
    root = tmp_path / "cat"
    shutil.copytree(src, root)
    items = sorted((root / "stac" / "subset" / "test").glob("item-*.json"))
    a = json.loads(items[0].read_text())
    del a["assets"]["labels"]
    items[0].write_text(json.dumps(a))
    b = json.loads(items[1].read_text())
    b["assets"]["labels"]["href"] = "https://example.org/labels.geojson"
    items[1].write_text(json.dumps(b))
    cat = read_label_catalog(root / "stac" / "subset" / "catalog.json")
    reasons = {Path(p.path).name: p.reason for p in cat.problems}
    assert "no label asset" in reasons[items[0].name] and "is remote" in reasons[items[1].name]
    assert len(cat.inputs) == 81
