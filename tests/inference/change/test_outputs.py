"""The change folder's files (`inference.change.outputs`): the change COG and its colour table,
RFC 7946 GeoJSON of the changed windows, hectares that add up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio

from inference.change.outputs import rfc7946_geometry
from tests.inference.change.conftest import run_cli
from vision.contracts.changes import CHANGE_CODES, CHANGE_COLOURS, CHANGE_RASTER_NODATA, CHANGE_TRANSITIONS


@pytest.fixture(scope="module")
def folder(sim_jobs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("outputs") / "c"
    code, text = run_cli(str(sim_jobs["d0"]), str(sim_jobs["d1-3857"]), "--out", str(out), "--classes",
                         "AnnualCrop", "--no-progress", "--no-report")
    assert code == 0, text
    return out


def test_the_change_cog_holds_every_window_outcome_with_a_colour_table(folder: Path) -> None:
    from rio_cogeo.cogeo import cog_validate

    path = folder / "change-pair-d1-3857.change.tif"
    valid, errors, _ = cog_validate(str(path))
    assert valid, errors
    rows = pq.read_table(folder / "changes.parquet", columns=["row_off", "col_off", "status", "transition"]).to_pylist()
    with rasterio.open(path) as ds:
        assert ds.crs.to_string() == "EPSG:3857" and ds.nodata == CHANGE_RASTER_NODATA
        cmap = ds.colormap(1)
        assert all(tuple(cmap[v]) == CHANGE_COLOURS[k] for k, v in CHANGE_CODES.items())
        assert ds.tags(1)["class_1"] == "appeared"
        data = ds.read(1)
    for r in rows:
        name = r["transition"] if r["status"] == "ok" else r["status"]
        assert data[r["row_off"] // 64, r["col_off"] // 64] == CHANGE_CODES[name]
    assert (data != CHANGE_RASTER_NODATA).sum() == len(rows)


def test_geojson_is_rfc7946_and_holds_exactly_the_changed_windows(folder: Path) -> None:
    gj = json.loads((folder / "changes.geojson").read_text())
    assert gj["type"] == "FeatureCollection" and "crs" not in gj
    t = pq.read_table(folder / "changes.parquet").to_pylist()
    changed = {r["change_id"]: r for r in t if r["status"] == "ok" and r["transition"] in CHANGE_TRANSITIONS}
    assert len(changed) > 0 and {f["id"] for f in gj["features"]} == set(changed)
    for f in gj["features"]:
        ring = np.array(f["geometry"]["coordinates"][0])
        assert f["geometry"]["type"] == "Polygon" and (ring[0] == ring[-1]).all()
        assert (abs(ring[:, 0]) <= 180).all() and (abs(ring[:, 1]) <= 90).all()
        assert 8.9 < ring[:, 0].mean() < 9.1 and 48.2 < ring[:, 1].mean() < 48.4  # the scene near 9 E, 48.3 N
        p, r = f["properties"], changed[f["id"]]
        assert (p["class_before"], p["class_after"], p["transition"]) == (r["class_before"], r["class_after"],
                                                                          r["transition"])
        assert p["p_before"] == pytest.approx(r["p_before"], abs=1e-4) and p["acquired_after"].endswith("Z")
    w, s, e, n = gj["bbox"]
    assert w < e and s < n


def test_a_window_across_the_antimeridian_is_split() -> None:
    lon = np.array([179.9, 180.0, -179.9, -179.9, -179.9, 180.0, 179.9, 179.9, 179.9])
    lat = np.array([10.0, 10.0, 10.0, 9.95, 9.9, 9.9, 9.9, 9.95, 10.0])
    g = rfc7946_geometry(lon, lat)
    assert g["type"] == "MultiPolygon" and len(g["coordinates"]) == 2
    lons = [x for poly in g["coordinates"] for x, _ in poly[0]]
    assert max(lons) <= 180 and min(lons) >= -180


def test_hectares_add_up_to_the_scene(folder: Path, sim_jobs: dict[str, Path]) -> None:
    summary = json.loads((folder / "change_summary.json").read_text())
    rows = pq.read_table(folder / "changes.parquet", columns=["area_ha"]).to_pylist()
    (area,) = summary["areas"]
    assert area["aoi_id"] is None
    assert area["hectares"]["total"] == pytest.approx(sum(r["area_ha"] for r in rows), abs=1e-3)
    # the 3857 scene is the UTM scene of 12 x 12 windows of 640 m, warped: its ground area is
    # about the same (Mercator areas are measured in an equal-area projection, not in 3857 units)
    assert area["hectares"]["total"] == pytest.approx(7680 * 7680 / 1e4, rel=0.01)
    by_class = area["hectares_by_class"]["AnnualCrop"]
    assert by_class["appeared"] == pytest.approx(area["hectares"]["appeared"], abs=1e-3)


def test_schema2_aoi_ids_of_the_later_job_group_the_summary(make_grid_job: Any, tmp_path: Path) -> None:
    ok = np.full((2, 4), "ok", object)
    lab = np.zeros((2, 4), int)
    a = make_grid_job("a", ok, lab, acquired="2023-01-01T00:00:00Z")
    aoi = np.array([["north"] * 4, ["south", "south", None, None]], dtype=object)
    b = make_grid_job("b", ok, lab, acquired="2024-01-01T00:00:00Z", aoi_id=aoi)
    code, text = run_cli(str(a), str(b), "--out", str(tmp_path / "c"), "--no-progress", "--no-report")
    assert code == 0, text
    areas = {x["aoi_id"]: x for x in json.loads((tmp_path / "c" / "change_summary.json").read_text())["areas"]}
    assert {k: sum(v["windows"].values()) for k, v in areas.items()} == {"north": 4, "south": 2, None: 2}
    assert areas["north"]["hectares"]["persisted"] == pytest.approx(4 * 40.96)


def test_overlapping_scenes_of_the_later_job_count_their_area_once(tmp_path: Path) -> None:
    from affine import Affine

    from tests.inference.change.conftest import CLASSES
    from tests.inference.change.jobs import SceneSpec, write_job

    k = len(CLASSES)
    probs = np.full((2, 2, k), 0.1 / (k - 1), np.float32)
    probs[..., 0] = 0.9
    ok = np.full((2, 2), "ok", object)

    def scene(name: str, x0: float, when: str) -> SceneSpec:
        return SceneSpec(str(tmp_path / f"{name}.tif"), "EPSG:32632", Affine(10, 0, x0, 0, -10, 5_350_000),
                         (128, 128), ok, probs, acquired=when, item_id=name, sha256=name[0] * 64)

    a = write_job(tmp_path / "a", [scene("a", 500_000, "2023-01-01T00:00:00Z")], CLASSES)
    # two later tiles, the second shifted by one window: they overlap by half
    b = write_job(tmp_path / "b", [scene("b1", 500_000, "2024-01-01T00:00:00Z"),
                                   scene("b2", 500_640, "2024-01-01T00:00:00Z")], CLASSES)
    code, text = run_cli(str(a), str(b), "--out", str(tmp_path / "c"), "--no-progress", "--no-report")
    assert code == 0, text
    rows = pq.read_table(tmp_path / "c" / "changes.parquet", columns=["item_after", "area_ha"]).to_pylist()
    assert len(rows) == 8  # every window of both tiles has its row
    assert sum(r["area_ha"] for r in rows) == pytest.approx(3 * 2 * 40.96)  # 1920 m x 1280 m, once
    assert sum(r["area_ha"] for r in rows if r["item_after"] == "b2") == pytest.approx(2 * 40.96)
