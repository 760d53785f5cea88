"""The job's STAC catalog: an item per scene for its class and confidence COGs, with the
proj, raster and classification extensions, read back with pystac."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pystac
import pytest
from pystac.extensions.classification import ClassificationExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import RasterExtension

from inference.cog import raster_layout
from inference.palette import class_colours
from inference.quicklook import Canvas
from inference.runner import JobOptions, run_job
from inference.stac_items import CLASSIFICATION, PROJ, RASTER, scene_item, write_stac
from inference.writers import write_scene_outputs
from vision.contracts.predictions import rows_to_table

from .conftest import CLASSES, RGB_BANDS
from .test_cog import scene_plan, scene_rows

ACQUIRED = datetime(2020, 2, 19, 11, 23, 41, tzinfo=UTC)


def _with_acquired(table: pa.Table) -> pa.Table:
    rows = table.to_pylist()
    for r in rows:
        r["acquired"] = ACQUIRED
    return rows_to_table(rows)


def test_a_scene_item_reads_back_with_pystac(tmp_path: Path) -> None:
    """A scene read from a STAC item, some windows cloudy: the item's datetime is the
    acquisition, it links the input item, its assets resolve to the COGs, and its classes
    carry values, names and colours, with cloud a not-assessed class of its own."""
    scene = scene_plan(512, 384)
    rows = _with_acquired(scene_rows(scene, {(0, 0): "cloudy", (1, 1): "nodata"}))
    write_scene_outputs(scene, rows, tmp_path, CLASSES, Canvas(scene, RGB_BANDS))
    source = "/data/s2/S2A_29RKH_20200219_0_L2A.json"
    entry = {"windows": {"ok": 46, "nodata": 1, "cloudy": 1, "error": 0},
             "read": {"item_id": "S2A_X", "source": source}}
    model = {"name": "tiny", "version": "1", "sha256": "cd" * 32}
    item_obj = scene_item(scene, raster_layout(scene), rows, CLASSES, model, entry,
                          datetime(2024, 1, 1, tzinfo=UTC))
    names = write_stac(tmp_path, [item_obj], "vision infer: tiny 1")
    assert names == ["stac/s.json", "stac/catalog.json"]

    item = pystac.read_file(str(tmp_path / "stac" / "s.json"))
    assert isinstance(item, pystac.Item) and item.id == "s"
    assert item.datetime == ACQUIRED and item.properties["vision:datetime_source"] == "acquired"
    assert set(item.stac_extensions) == {PROJ, RASTER, CLASSIFICATION}
    (derived,) = item.get_links("derived_from")
    assert derived.href == source and derived.media_type == "application/geo+json"
    assert item.properties["vision:input_item_id"] == "S2A_X"

    proj = ProjectionExtension.ext(item)
    assert proj.code == "EPSG:32631" and proj.shape == [8, 6]
    assert proj.transform == [640.0, 0.0, 500000.0, 0.0, -640.0, 5000000.0]
    west, south, east, north = item.bbox
    assert west < east and south < north and 2.9 < west < 3.1 and 45.0 < south < 45.2

    classes_asset = item.assets["classes"]
    assert Path(classes_asset.get_absolute_href()) == tmp_path / "s.classes.tif"
    assert Path(item.assets["confidence"].get_absolute_href()).is_file()
    assert Path(item.assets["categories"].get_absolute_href()).is_file()
    band = RasterExtension.ext(classes_asset).bands[0]
    assert band.data_type == "uint8" and band.nodata == 255 and band.spatial_resolution == 640.0
    got = {c.value: (c.name, c.title, c.color_hint, c.nodata)
           for c in ClassificationExtension.ext(classes_asset).classes}
    for k, (name, rgb) in enumerate(zip(CLASSES, class_colours(CLASSES), strict=True)):
        assert got[k] == (name, name, "".join(f"{v:02X}" for v in rgb), None)
    assert got[254][:2] == ("cloudy", "cloudy (not assessed)")
    assert got[255][:2] == ("nodata", "nodata (not assessed)") and got[255][3] is True
    assert got[253][:2] == ("error", "error (not assessed)")

    catalog = pystac.read_file(str(tmp_path / "stac" / "catalog.json"))
    assert isinstance(catalog, pystac.Catalog)
    walked = list(catalog.get_items(recursive=True))
    assert [i.id for i in walked] == ["s"] and walked[0].datetime == ACQUIRED


def test_a_job_writes_its_catalog_and_items_derive_from_the_input_file(
        rgb_model: Path, tmp_path: Path, tif_factory: Callable[..., Path]) -> None:
    """A plain GeoTIFF job: an item per scene, the job's start as datetime (no acquisition
    time), ``derived_from`` the input file; all listed in the manifest's outputs."""
    rng = np.random.default_rng(4)
    a = tif_factory("a.tif", rng.integers(1, 255, (3, 200, 130), dtype=np.uint8))
    b = tif_factory("b.tif", rng.integers(1, 255, (3, 130, 140), dtype=np.uint8),
                    crs="EPSG:4326", transform=(0.0001, 0.0, 10.0, 0.0, -0.0001, 50.0))
    out = tmp_path / "job"
    assert run_job(JobOptions(inputs=(str(a), str(b)), model=str(rgb_model), out=out,
                              progress=False, threads=1, workers=1)).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert {"stac/a.json", "stac/b.json", "stac/catalog.json"} <= set(manifest["outputs"])
    started = datetime.fromisoformat(manifest["started_at"])
    catalog = pystac.read_file(str(out / "stac" / "catalog.json"))
    items = {i.id: i for i in catalog.get_items(recursive=True)}
    assert set(items) == {"a", "b"}
    for stem, path in (("a", a), ("b", b)):
        item = items[stem]
        assert item.datetime == started and item.properties["vision:datetime_source"] == "job"
        (derived,) = item.get_links("derived_from")
        assert derived.href == str(path) and derived.media_type.startswith("image/tiff")
        for key in ("classes", "confidence", "windows", "quicklook", "categories"):
            assert Path(item.assets[key].get_absolute_href()).is_file(), (stem, key)
        assert item.properties["vision:model"]["sha256"] == manifest["model"]["sha256"]
        assert item.properties["vision:windows"] == next(
            e["windows"] for e in manifest["inputs"] if e["path"] == str(path))
    assert ProjectionExtension.ext(items["b"]).code == "EPSG:4326"
    assert items["b"].bbox == pytest.approx([10.0, 49.987, 10.014, 50.0], abs=1e-6)
