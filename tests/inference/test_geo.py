"""RFC 7946 footprints: longitude/latitude, normalised longitudes, antimeridian cuts."""

from __future__ import annotations

import numpy as np
import pytest

from inference.geo import is_geographic, ring_geometries, to_lonlat, wrap_bounds, wrap_east, wrap_west

from .rfc7946 import ring_area


def _ring(x0: float, y0: float, x1: float, y1: float) -> tuple[np.ndarray, np.ndarray]:
    """A clockwise (north-up raster order) closed ring."""
    return (np.array([[x0, x1, x1, x0, x0]], float), np.array([[y1, y1, y0, y0, y1]], float))


def test_wrapping() -> None:
    assert wrap_west(180.0) == -180.0 and wrap_east(180.0) == 180.0
    assert wrap_west(181.5) == pytest.approx(-178.5) and wrap_east(-180.0) == 180.0
    assert wrap_bounds(179.5, 180.5) == pytest.approx((179.5, -179.5))  # across: west > east
    assert wrap_bounds(-10, 20) == (-10, 20) and wrap_bounds(-200, 200) == (-180, 180)


def test_polygons_are_counterclockwise_and_rounded() -> None:
    (g,), bbox = ring_geometries(*_ring(10.0, 20.0, 10.123456789, 20.5))
    assert g is not None and g["type"] == "Polygon"
    ring = g["coordinates"][0]
    assert ring_area(ring) > 0 and ring[0] == ring[-1]
    assert {x for x, _ in ring} == {10.0, 10.1234568}
    assert bbox == [10.0, 20.0, 10.1234568, 20.5]


def test_a_ring_across_the_antimeridian_is_cut_in_two() -> None:
    (g,), bbox = ring_geometries(*_ring(179.9, -1.0, 180.3, 1.0), centre_lon=180.0)
    assert g is not None and g["type"] == "MultiPolygon"
    west, east = (poly[0] for poly in g["coordinates"])
    assert {x for x, _ in west} == {179.9, 180.0} and {x for x, _ in east} == {-180.0, -179.7}
    assert all(ring_area(r) > 0 for r in (west, east))
    assert bbox == pytest.approx([179.9, -1.0, -179.7, 1.0])


def test_the_bbox_joins_windows_on_both_sides() -> None:
    lon = np.vstack([_ring(179.0, 0, 179.5, 1)[0], _ring(-179.5, 0, -179.0, 1)[0]])
    lat = np.vstack([_ring(179.0, 0, 179.5, 1)[1]] * 2)
    geoms, bbox = ring_geometries(lon, lat, centre_lon=-180.0)
    assert [g["type"] for g in geoms if g] == ["Polygon", "Polygon"]
    assert bbox == pytest.approx([179.0, 0.0, -179.0, 1.0])


def test_points_without_longitude_latitude() -> None:
    lon, lat = to_lonlat("EPSG:32618", np.array([1e12, 500000.0]), np.array([0.0, 0.0]))
    assert np.isnan(lon[0]) and lon[1] == pytest.approx(-75.0)
    geoms, bbox = ring_geometries(np.full((1, 5), np.nan), np.zeros((1, 5)))
    assert geoms == [None] and bbox is None


def test_is_geographic() -> None:
    assert is_geographic("EPSG:4326") and not is_geographic("EPSG:32618")
    assert not is_geographic(None) and not is_geographic("not a crs")
