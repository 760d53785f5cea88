"""A checker of the RFC 7946 rules a `vision infer` GeoJSON must follow (a test helper)."""

from __future__ import annotations

from typing import Any


def _positions(geometry: dict[str, Any]) -> list[list[list[float]]]:
    """The linear rings of a Polygon or MultiPolygon."""
    if geometry["type"] == "Polygon":
        return list(geometry["coordinates"])
    assert geometry["type"] == "MultiPolygon", geometry["type"]
    return [ring for poly in geometry["coordinates"] for ring in poly]


def ring_area(ring: list[list[float]]) -> float:
    """Twice the signed area (positive: counterclockwise)."""
    return sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:], strict=False))


def assert_rfc7946(doc: dict[str, Any]) -> None:
    """Fail unless ``doc`` is an RFC 7946 FeatureCollection of (Multi)Polygons: no ``crs``
    member anywhere, longitudes within ±180 and latitudes within ±90, closed rings of at
    least four positions, exterior rings counterclockwise, a bbox of four numbers in range
    (west > east only across the antimeridian) that holds every position."""
    assert doc["type"] == "FeatureCollection"
    assert "crs" not in doc
    west, south, east, north = doc["bbox"]
    assert -180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= north <= 90
    for f in doc["features"]:
        assert f["type"] == "Feature" and "crs" not in f and isinstance(f["properties"], dict)
        if f["geometry"] is None:
            continue
        for ring in _positions(f["geometry"]):
            assert len(ring) >= 4 and ring[0] == ring[-1]
            assert ring_area(ring) > 0, "exterior ring not counterclockwise"
            for x, y in ring:
                assert -180 <= x <= 180 and -90 <= y <= 90, (x, y)
                assert south - 1e-7 <= y <= north + 1e-7
                if west <= east:
                    assert west - 1e-7 <= x <= east + 1e-7, (x, west, east)
                else:  # across the antimeridian
                    assert x >= west - 1e-7 or x <= east + 1e-7, (x, west, east)
