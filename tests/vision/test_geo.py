"""vision.geo: pixel sizes in metres, the GSD rule, areas of interest (GeoJSON, GeoPackage),
windows in an AOI, hectares, RFC 7946 bounds."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine

from vision.geo import (
    AoiError,
    GsdMismatch,
    aoi_in_scene,
    area_hectares,
    assign_windows,
    crs_resolution,
    decide_gsd,
    footprint,
    intersection_hectares,
    pixel_size_m,
    read_aoi,
    reproject,
    wgs84_bounds,
    window_polygons,
)

UTM29 = "EPSG:32629"
T29 = Affine(100.0, 0.0, 199980.0, 0.0, -100.0, 2800020.0)  # the 29RKH 100 m grid


def _geojson(path: Path, features: list[dict[str, object]], crs: str | None = None) -> Path:
    fc: dict[str, object] = {"type": "FeatureCollection", "features": features}
    if crs:
        fc["crs"] = {"type": "name", "properties": {"name": crs}}
    path.write_text(json.dumps(fc))
    return path


def _feature(geom: shapely.Geometry, **props: object) -> dict[str, object]:
    return {"type": "Feature", "properties": props, "geometry": json.loads(shapely.to_geojson(geom))}


def test_pixel_sizes_in_metres(data_dir: Path) -> None:
    assert pixel_size_m(UTM29, T29, 1098, 1098) == (100.0, 100.0)
    with rasterio.open(data_dir / "scenes" / "rasterio_cogeo.tif") as ds:  # Web Mercator at 37.7 N
        gx, gy = pixel_size_m(ds.crs, ds.transform, ds.width, ds.height)
    assert gx == pytest.approx(0.597 * math.cos(math.radians(37.67)), rel=0.01) and gy == pytest.approx(gx, rel=0.01)
    # geographic: 0.0001 degree at 52 N
    gx, gy = pixel_size_m("EPSG:4326", Affine(1e-4, 0, 5.0, 0, -1e-4, 52.0), 10, 10)
    assert gx == pytest.approx(6.87, rel=0.01) and gy == pytest.approx(11.13, rel=0.01)
    # a projected CRS in US survey feet (NAD83 / New York Long Island)
    fx, _ = pixel_size_m("EPSG:2263", Affine(1.0, 0, 1000000, 0, -1.0, 200000), 10, 10)
    assert fx == pytest.approx(0.3048, rel=1e-3)
    # the CRS resolution that is 10 m on the ground there
    rx, _ = crs_resolution("EPSG:3857", Affine(0.597, 0, 14321000, 0, -0.597, 4533000), 1024, 1024, 10.0)
    assert rx == pytest.approx(10.0 / math.cos(math.radians(37.67)), rel=0.01)


def test_the_gsd_rule() -> None:
    assert not decide_gsd(10.5, 10.0).resample  # within 10 %
    d = decide_gsd(0.47, 10.0)
    assert d.resample and d.target_m == 10.0 and "resampled" in d.note
    n = decide_gsd(0.47, 10.0, mode="native")
    assert not n.resample and n.target_m == 0.47 and "--gsd native" in n.note
    assert decide_gsd(19.0, 10.0).resample  # coarser, but bridgeable
    with pytest.raises(GsdMismatch, match=r"3x coarser than the 10 m .*more than 2x"):
        decide_gsd(30.0, 10.0)
    forced = decide_gsd(30.0, 10.0, allow_coarse=True)
    assert forced.resample and "overridden" in forced.note
    assert "does not record" in decide_gsd(30.0, None).note
    with pytest.raises(GsdMismatch):
        decide_gsd(float("nan"), 10.0)


def test_aoi_geojson_in_4326_with_an_id_field(tmp_path: Path) -> None:
    sq = shapely.box(-11.5, 24.5, -11.3, 24.7)
    multi = shapely.MultiPolygon([shapely.box(-11.2, 24.5, -11.1, 24.6), shapely.box(-11.05, 24.5, -11.0, 24.6)])
    p = _geojson(tmp_path / "a.geojson", [_feature(sq, name="square"), _feature(multi, name="pair")])
    aois = read_aoi(p, id_field="name")
    assert aois.ids == ["square", "pair"] and aois.crs.to_epsg() == 4326 and aois.problems == ()
    assert read_aoi(p).ids == ["0", "1"]  # without a field: the feature index
    with pytest.raises(AoiError, match=r"no field 'district'"):
        read_aoi(p, id_field="district")


def test_aoi_geopackage_in_utm(tmp_path: Path) -> None:
    p = tmp_path / "a.gpkg"
    geoms = np.array([shapely.to_wkb(shapely.box(300000, 2700000, 310000, 2710000))], dtype=object)
    pyogrio.raw.write(p, geoms, [np.array(["D1"], dtype=object)], ["district"], driver="GPKG",
                      geometry_type="Polygon", crs=UTM29)
    aois = read_aoi(p, id_field="district")
    assert aois.ids == ["D1"] and aois.crs.to_epsg() == 32629
    assert area_hectares(aois.aois[0].geometry, aois.crs) == pytest.approx(10_000.0)


def test_bad_aoi_features_are_named_with_the_reason(tmp_path: Path) -> None:
    bowtie = shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1), (0, 0)])
    p = _geojson(tmp_path / "bad.geojson", [_feature(shapely.box(0, 0, 1, 1), id="ok"), _feature(bowtie, id="bow"),
                                            _feature(shapely.Point(0, 0), id="pt")])
    aois = read_aoi(p, id_field="id")
    assert aois.ids == ["ok"]
    reasons = {q.feature: q.reason for q in aois.problems}
    assert "Self-intersection" in reasons["bow"] and "Point" in reasons["pt"]
    with pytest.raises(AoiError, match=r"feature bow: invalid geometry: Self-intersection"):
        read_aoi(p, id_field="id", strict=True)
    with pytest.raises(AoiError, match="no usable area"):
        read_aoi(_geojson(tmp_path / "only_bad.geojson", [_feature(bowtie)]))


@pytest.mark.parametrize("content, message", [
    ('{"type": "FeatureCollection", "features": []}', "no features"),
    ("<VRTDataset/>", "not a GeoJSON or GeoPackage"),
    ("{broken", "unreadable AOI file"),
])
def test_unusable_aoi_files(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "x.geojson").write_text(content)
    with pytest.raises(AoiError, match=message):
        read_aoi(tmp_path / "x.geojson")


def test_duplicate_ids_and_missing_files(tmp_path: Path) -> None:
    p = _geojson(tmp_path / "d.geojson", [_feature(shapely.box(0, 0, 1, 1), id="a"),
                                          _feature(shapely.box(1, 1, 2, 2), id="a")])
    with pytest.raises(AoiError, match="more than one feature"):
        read_aoi(p, id_field="id")
    with pytest.raises(AoiError, match="not found"):
        read_aoi(tmp_path / "absent.gpkg")


def test_windows_in_an_aoi_and_their_hectares() -> None:
    """An AOI in EPSG:4326 over part of 29RKH: the windows it covers, first match, hectares."""
    fp = footprint(UTM29, T29, 1098, 1098)
    aoi_ll = reproject(shapely.box(250000, 2700000, 290000, 2750000), UTM29, "EPSG:4326")
    from vision.geo import Aoi

    part = aoi_in_scene(Aoi("a", aoi_ll), "EPSG:4326", UTM29, fp)
    assert part is not None and part.area == pytest.approx(40000 * 50000, rel=1e-3)
    # one reaching past the scene's bottom edge (y 2,690,220) is clipped to it
    edge = Aoi("e", reproject(shapely.box(250000, 2650000, 290000, 2700000), UTM29, "EPSG:4326"))
    clipped = aoi_in_scene(edge, "EPSG:4326", UTM29, fp)
    assert clipped is not None and clipped.area == pytest.approx(40000 * 9780, rel=2e-3)
    windows = [(i, j, 64, 64) for i in range(0, 1098, 64) for j in range(0, 1098, 64)]
    polys = window_polygons(T29, windows)
    ids = assign_windows(polys, [("a", part), ("b", shapely.box(0, 0, 1e7, 1e7))])
    brute = ["a" if p.intersects(part) and p.intersection(part).area > 0 else "b" for p in polys]
    assert ids == brute and ids.count("a") > 0
    ha = intersection_hectares(polys, part, UTM29)
    # the windows' shares add up to the AOI: 40 km x 50 km = 200,000 ha
    assert ha.sum() == pytest.approx(200_000, rel=2e-3)
    assert ha.max() == pytest.approx(6400 * 6400 / 1e4, rel=1e-9)  # a whole 6.4 km window


def test_touching_is_not_overlapping() -> None:
    polys = window_polygons(Affine(10, 0, 0, 0, -10, 100), [(0, 0, 10, 10), (0, 10, 10, 10)])
    right = shapely.box(100, 0, 200, 100)  # shares the first window's right edge
    assert assign_windows(polys, [("r", right)]) == [None, "r"]


def test_an_aoi_in_another_hemisphere_overlaps_nothing() -> None:
    from vision.geo import Aoi

    fp = footprint(UTM29, T29, 1098, 1098)
    sydney = Aoi("sydney", shapely.box(150.9, -34.0, 151.3, -33.7))
    assert aoi_in_scene(sydney, "EPSG:4326", UTM29, fp) is None


def test_hectares_in_a_geographic_crs_are_equal_area() -> None:
    # 1 x 1 degree at the equator: 12,309 km2 on the WGS 84 ellipsoid
    cell = shapely.box(0, 0, 1, 1)
    assert area_hectares(cell, "EPSG:4326") == pytest.approx(1_230_900, rel=3e-3)
    # and at 60 N about half of that
    assert area_hectares(shapely.box(0, 60, 1, 61), "EPSG:4326") == pytest.approx(613_800, rel=5e-3)


def test_wgs84_bounds_across_the_antimeridian() -> None:
    w, s, e, n = wgs84_bounds("EPSG:32660", Affine(100, 0, 700000, 0, -100, 5000000), (0, 0, 2000, 2000))
    assert w > e and 179 < w < 180 and -180 < e < -177 and s < n
    w, s, e, n = wgs84_bounds(UTM29, T29, (0, 0, 1098, 1098))
    assert w < e and w == pytest.approx(-11.979, abs=1e-3) and n == pytest.approx(25.305, abs=1e-3)
    assert wgs84_bounds("EPSG:4326", Affine(0.1, 0, 10, 0, -0.1, 50), (0, 0, 10, 10)) == pytest.approx((10, 49, 11, 50))
