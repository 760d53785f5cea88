"""inference.aoi_summary: hectares per area and class, and not assessed, from a prediction table
of a real-grid scene (29RKH, UTM 29N) and of a geographic scene; they add up to each area's
area; overlapping windows and overlapping scenes are counted once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import shapely
from affine import Affine
from rich.console import Console

from inference.aoi import AreasOfInterest
from inference.aoi_summary import SceneGrid, cell_rects, render_summary, summarise, write_summary
from inference.tiling import TileGrid
from tests.inference.test_aoi import (
    PENTAGON_UTM,
    SIZE,
    T29,
    UTM29,
    grid_windows,
    scene_header,
    to_ll,
    write_geojson,
    write_scene,
)
from vision import geo
from vision.contracts.predictions import new_row, rows_to_table

CLASSES = ["AnnualCrop", "Forest", "SeaLake"]
STATUS_CYCLE = ["ok", "ok", "nodata", "ok", "cloudy", "ok", "error", "ok"]


def table_for(path: str, crs: str, t: Affine, windows: np.ndarray, aois: AreasOfInterest,
              h: int, w: int) -> pa.Table:
    """The rows the runner writes for the windows it keeps: a mix of ok (three classes),
    nodata, cloudy and error."""
    sel = aois.select(crs, t, h, w, windows)
    rows = []
    for k in np.flatnonzero(sel.keep).tolist():
        r, c, hh, ww = (int(v) for v in windows[k])
        status = STATUS_CYCLE[(r // 16 + 3 * (c // 16)) % len(STATUS_CYCLE)]
        values = dict(row_off=r, col_off=c, height=hh, width=ww, crs=crs, aoi_id=sel.aoi_id(k))
        if status == "ok":
            values.update(label=k % 3, class_name=CLASSES[k % 3])
        elif status == "error":
            values["error"] = "read failed"
        rows.append(new_row(path, status, "0" * 64, **values))
    rows.append(new_row("chip.jpg", "ok", "1" * 64, class_name="Forest", label=1))  # a whole file: no window
    return rows_to_table(rows)


def check_adds_up(a: dict, window_ha: float) -> None:
    classes = sum(v["hectares"] for v in a["classes"].values())
    not_assessed = sum(v["hectares"] for v in a["not_assessed"].values())
    assert a["assessed_ha"] == pytest.approx(classes, abs=1e-3)
    assert a["not_assessed_ha"] == pytest.approx(not_assessed, abs=1e-3)
    assert a["total_ha"] == pytest.approx(classes + not_assessed, abs=1e-3)
    assert abs(classes + not_assessed + a["uncovered_ha"] - a["area_ha"]) < window_ha
    assert all(a["not_assessed"][s]["windows"] > 0 for s in ("nodata", "cloudy", "error"))


@pytest.mark.parametrize("stride", [16, 8, 12])
def test_hectares_add_up_to_the_area_in_utm(tmp_path: Path, stride: int) -> None:
    scene = write_scene(tmp_path / "scene.tif")
    multi = shapely.MultiPolygon([shapely.box(201111.1, 2776543.2, 204567.8, 2781234.5),
                                  shapely.box(219876.5, 2797654.3, 228765.4, 2799876.5)])  # east part past the scene
    p = write_geojson(tmp_path / "a.geojson", [(to_ll(PENTAGON_UTM), {"id": "pentagon"}),
                                               (to_ll(multi), {"id": "multi"})])
    aois = AreasOfInterest.load(p)
    crs, t, h, w = scene_header(scene)
    grid = TileGrid(h, w, (16, 16), (stride, stride))
    table = table_for(str(scene), crs, t, grid_windows(grid), aois, h, w)
    s = summarise(table, aois, {str(scene): SceneGrid(crs, t, grid)}, classes=CLASSES)
    window_ha = 16 * 100 * 16 * 100 / 1e4
    pent, mult = s["aois"]
    assert s["ignored_rows"] == 1 and s["unmatched"] == [] and s["id_field"] == "id"
    # the pentagon, drawn in UTM, is all inside the scene: its area is the UTM one
    assert pent["area_ha"] == pytest.approx(PENTAGON_UTM.area / 1e4, rel=1e-4)
    assert pent["total_ha"] == pytest.approx(pent["area_ha"], abs=window_ha) and pent["uncovered_ha"] < window_ha
    check_adds_up(pent, window_ha)
    # the multipolygon: its east part reaches past the scene, and is "under no window"
    inside = multi.intersection(geo.footprint(UTM29, T29, SIZE, SIZE)).area / 1e4
    assert mult["total_ha"] == pytest.approx(inside, rel=1e-4)
    # (measured in an equal-area projection: it lies in no scene)
    outside = to_ll(multi).difference(to_ll(geo.footprint(UTM29, T29, SIZE, SIZE)))
    assert mult["uncovered_ha"] == pytest.approx(geo.area_hectares(outside, "EPSG:4326"), rel=1e-3)
    check_adds_up(mult, window_ha)
    # windows: every row whose window meets the area (a window over both counts in both)
    ids = table.column("aoi_id").to_pylist()
    assert pent["windows"] >= ids.count("pentagon") > 0 and mult["windows"] >= ids.count("multi") > 0
    assert sum(v["windows"] for v in pent["classes"].values()) + \
        sum(v["windows"] for v in pent["not_assessed"].values()) == pent["windows"]
    assert list(pent["classes"]) == sorted(CLASSES, key=lambda c: -pent["classes"][c]["hectares"])


def test_a_geographic_scene_agrees_with_utm_within_one_percent(tmp_path: Path) -> None:
    ll = write_scene(tmp_path / "ll.tif", "EPSG:4326", Affine(0.001, 0, -11.95, 0, -0.001, 25.30), 250)
    aoi = to_ll(PENTAGON_UTM)
    aois = AreasOfInterest.load(write_geojson(tmp_path / "a.geojson", [(aoi, {"id": "p"})]))
    crs, t, h, w = scene_header(ll)
    grid = TileGrid(h, w, (16, 16), (8, 8))
    table = table_for(str(ll), crs, t, grid_windows(grid), aois, h, w)
    (a,) = summarise(table, aois, {str(ll): SceneGrid(crs, t, grid)}, classes=CLASSES)["aois"]
    utm_ha = geo.reproject(aoi, "EPSG:4326", UTM29).area / 1e4
    assert a["area_ha"] == pytest.approx(utm_ha, rel=0.01)
    assert a["total_ha"] == pytest.approx(utm_ha, rel=0.01)
    window_ha = geo.area_hectares(shapely.box(-11.95, 25.284, -11.934, 25.30), "EPSG:4326")
    check_adds_up(a, window_ha)


def test_overlapping_scenes_count_the_ground_once(tmp_path: Path) -> None:
    """Two scenes, the second shifted half a scene east: the pentagon's hectares still add up
    to its area, though windows of both scenes cover its middle."""
    one = write_scene(tmp_path / "one.tif")
    two = write_scene(tmp_path / "two.tif", transform=T29 * Affine.translation(125, 0))
    aois = AreasOfInterest.load(write_geojson(tmp_path / "a.geojson", [(to_ll(PENTAGON_UTM), {"id": "p"})]))
    tables, scenes = [], {}
    for s in (one, two):
        crs, t, h, w = scene_header(s)
        grid = TileGrid(h, w, (16, 16), (16, 16))
        tables.append(table_for(str(s), crs, t, grid_windows(grid), aois, h, w))
        scenes[str(s)] = SceneGrid(crs, t, grid)
    (a,) = summarise(pa.concat_tables(tables), aois, scenes)["aois"]
    assert a["scenes"] == [str(one), str(two)]
    assert a["area_ha"] == pytest.approx(PENTAGON_UTM.area / 1e4, rel=1e-4)
    check_adds_up(a, 256.0)
    assert a["windows"] > len(tables[0]) - 1  # both scenes' windows count as windows


def test_cells_tile_the_scene_exactly() -> None:
    for size, stride, extent in [(16, 16, 250), (16, 8, 250), (16, 12, 250), (16, 5, 97), (64, 64, 40)]:
        grid = TileGrid(extent, extent, (size, size), (stride, stride))
        w = grid_windows(grid)
        cells = cell_rects(grid, w[:, 0], w[:, 1])
        assert (cells[:, 2] * cells[:, 3]).sum() == pytest.approx(extent * extent)
        boxes = shapely.box(cells[:, 1], cells[:, 0], cells[:, 1] + cells[:, 3], cells[:, 0] + cells[:, 2])
        assert shapely.union_all(boxes).area == pytest.approx(extent * extent)
        # and each cell lies inside its window (clipped to the scene)
        assert np.all(cells[:, 0] >= w[:, 0]) and np.all(cells[:, 0] + cells[:, 2] <= np.minimum(w[:, 0] + w[:, 2],
                                                                                                  extent))


def test_written_json_and_the_table_at_the_end(tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "scene.tif")
    aois = AreasOfInterest.load(write_geojson(tmp_path / "a.geojson", [
        (to_ll(PENTAGON_UTM), {"id": "[bold red]district 7[/bold red]"}),
        (shapely.box(150.9, -34.0, 151.3, -33.7), {"id": "sydney"})]))
    crs, t, h, w = scene_header(scene)
    grid = TileGrid(h, w, (16, 16), (16, 16))
    table = table_for(str(scene), crs, t, grid_windows(grid), aois, h, w)
    s = summarise(table, aois, {str(scene): SceneGrid(crs, t, grid)}, classes=[*CLASSES, "Highway"])
    (tmp_path / "job").mkdir()
    out = write_summary(tmp_path / "job" / "aoi_summary.json", s)
    back = json.loads(out.read_text())
    assert back == json.loads(json.dumps(s)) and back["unmatched"] == ["sydney"]
    assert back["aois"][0]["classes"]["Highway"] == {"windows": 0, "hectares": 0.0}
    assert back["aois"][1]["area_ha"] > 0 and back["aois"][1]["windows"] == 0
    assert back["aois"][1]["uncovered_ha"] == back["aois"][1]["area_ha"]
    console = Console(record=True, width=160)
    render_summary(s, console)
    text = console.export_text()
    assert "[bold red]district 7[/bold red]" in text and "cloudy (not assessed)" in text
    assert "under no window" in text and "AnnualCrop" in text and "Highway" not in text
    console = Console(record=True, width=160)
    render_summary(s, console, max_shown=1)
    assert "1 more areas in aoi_summary.json" in console.export_text()


@pytest.mark.parametrize("crs, t", [(UTM29, T29), ("EPSG:4326", Affine(0.001, 0, -11.95, 0, -0.001, 25.30)),
                                    ("EPSG:3857", Affine(10, 0, -1.3e6, 0, -10, 2.9e6))])
def test_cells_inside_an_area_are_measured_as_if_intersected(crs: str, t: Affine) -> None:
    """The shortcut for cells wholly inside an area (`vision.geo.polygon_hectares`) gives the
    hectares `intersection_hectares` gives."""
    grid = TileGrid(100, 100, (16, 16), (8, 8))
    w = grid_windows(grid)
    cells = geo.window_polygons(t, cell_rects(grid, w[:, 0], w[:, 1]))  # type: ignore[arg-type]
    around = geo.footprint(crs, t, 100, 100).buffer(abs(t.a))
    np.testing.assert_allclose(geo.polygon_hectares(cells, crs), geo.intersection_hectares(cells, around, crs),
                               rtol=1e-6)
    assert geo.polygon_hectares(cells[:0], crs).shape == (0,)


def test_hectares_of_an_area_across_the_antimeridian() -> None:
    """A lon/lat scene from 170° to 190° E and an area at -176..-174° (its 184..186°): the
    summary measures the part over the scene, equal-area, and leaves nothing uncovered."""
    fiji = geo.Aoi("fiji", shapely.box(-176.0, -15.0, -174.0, -14.0))
    aois = AreasOfInterest(path="f.geojson", crs=geo.WGS84, aois=(fiji,))
    t = Affine(0.01, 0, 170.0, 0, -0.01, -10.0)
    grid = TileGrid(1000, 2000, (50, 50), (25, 25))
    table = table_for("fiji.tif", "EPSG:4326", t, grid_windows(grid), aois, 1000, 2000)
    (a,) = summarise(table, aois, {"fiji.tif": SceneGrid("EPSG:4326", t, grid)})["aois"]
    true_ha = geo.area_hectares(fiji.geometry, "EPSG:4326")
    assert a["total_ha"] == pytest.approx(true_ha, rel=1e-3) and a["uncovered_ha"] < 1.0
