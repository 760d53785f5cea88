"""The review page's location in latitude/longitude, also across the antimeridian."""

from __future__ import annotations

import pytest
from pyproj import Transformer

from review.web.views import wgs84_location


def test_a_utm_window_in_degrees() -> None:
    g = wgs84_location("EPSG:32632", [500000.0, 5199680.0, 500320.0, 5200000.0])
    assert g is not None
    assert g.bounds[0] == pytest.approx(9.0, abs=1e-9)  # x = 500000 is the zone's central meridian
    west, south, east, north = g.bounds
    assert west < g.lon < east and south < g.lat < north
    assert (g.lon, g.lat) == pytest.approx(
        Transformer.from_crs("EPSG:32632", "EPSG:4326", always_xy=True).transform(500160.0, 5199840.0))


@pytest.mark.parametrize("crs", ["EPSG:32601", "EPSG:32660"])
def test_a_window_across_the_antimeridian_has_west_greater_than_east(crs: str) -> None:
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(180.0, 60.0)
    g = wgs84_location(crs, [x - 5000, y - 5000, x + 5000, y + 5000])
    assert g is not None
    west, south, east, north = g.bounds
    assert west > east, "RFC 7946: a box across the antimeridian has west > east"
    assert 179.8 < west <= 180 and -180 <= east < -179.8
    assert abs(g.lon) == pytest.approx(180.0, abs=1e-6) and south < g.lat < north
    assert all(-180 <= v <= 180 for v in (west, east, g.lon))


def test_degrees_past_180_are_wrapped_and_nothing_is_made_up() -> None:
    g = wgs84_location("EPSG:4326", [179.9, 10.0, 180.1, 10.2])
    assert g is not None and g.bounds == pytest.approx([179.9, 10.0, -179.9, 10.2])
    assert abs(g.lon) == pytest.approx(180.0)
    edge = wgs84_location("EPSG:4326", [170.0, 0.0, 180.0, 10.0])
    assert edge is not None and edge.bounds[2] == 180.0, "180 itself stays east, not a crossing"
    assert wgs84_location(None, [0, 0, 1, 1]) is None
    assert wgs84_location("EPSG:32632", None) is None
    assert wgs84_location("not a CRS", [0, 0, 1, 1]) is None
    assert wgs84_location("EPSG:32632", [5, 5, 5, 5]) is None
