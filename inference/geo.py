"""Window footprints as RFC 7946 GeoJSON (WGS 84 longitude/latitude): longitudes
normalised, and polygons across the antimeridian split.

RFC 7946 asks for longitude/latitude on WGS 84 with no ``crs`` member, exterior rings
counterclockwise, and a geometry that crosses the antimeridian cut in two (§3.1.9); a
bounding box across it has its west edge greater than its east (§5.2). Window corners are
transformed exactly (GDAL); their edges are straight in the scene's CRS, and at window
scale a straight edge in longitude/latitude stays within centimetres of it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

WGS84 = "EPSG:4326"
#: Decimal places of longitude/latitude (1e-7 degree: about a centimetre).
LONLAT_DECIMALS = 7


@lru_cache(maxsize=64)
def is_geographic(crs: str | None) -> bool:
    """Whether ``crs`` (``EPSG:xxxx`` or WKT) is a geographic (longitude/latitude) CRS."""
    if not crs:
        return False
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        return bool(CRS.from_user_input(crs).is_geographic)
    except CRSError:
        return False


def wrap_west(lon: float) -> float:
    """A west edge's longitude in [-180, 180)."""
    return (lon + 180.0) % 360.0 - 180.0


def wrap_east(lon: float) -> float:
    """An east edge's longitude in (-180, 180]."""
    return 180.0 - (180.0 - lon) % 360.0


def wrap_bounds(minx: float, maxx: float) -> tuple[float, float]:
    """West and east of a longitude interval, normalised; across the antimeridian the west
    is greater than the east (as in an RFC 7946 bbox). A full turn or more is [-180, 180]."""
    if maxx - minx >= 360.0:
        return -180.0, 180.0
    return wrap_west(minx), wrap_east(maxx)


def to_lonlat(crs: str, xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in ``crs`` to longitude/latitude (same shapes); NaN where undefined (a
    point outside the projection's domain)."""
    from rasterio._err import CPLE_BaseError
    from rasterio.warp import transform

    shape = np.shape(xs)
    if crs.upper() == WGS84:
        return np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    x, y = np.ravel(xs).tolist(), np.ravel(ys).tolist()
    try:
        lon, lat = transform(crs, WGS84, x, y)
    except CPLE_BaseError:  # some point has no longitude/latitude: find which, one by one
        lon, lat = [], []
        for px, py in zip(x, y, strict=True):
            try:
                (a,), (b,) = transform(crs, WGS84, [px], [py])
            except CPLE_BaseError:
                a = b = float("nan")
            lon.append(a)
            lat.append(b)
    return np.asarray(lon, np.float64).reshape(shape), np.asarray(lat, np.float64).reshape(shape)


def _normalise_rings(lon: np.ndarray) -> np.ndarray:
    """Each ring (a row) made continuous across ±180 and shifted so that its west-most
    vertex is in [-180, 180)."""
    lon = np.unwrap(lon, period=360.0, axis=1)
    west = lon.min(axis=1, keepdims=True)
    return lon - 360.0 * np.floor((west + 180.0) / 360.0)


def _clip(ring: list[tuple[float, float]], keep_west: bool) -> list[tuple[float, float]]:
    """One side of a closed ring at longitude 180 (Sutherland-Hodgman on a half-plane)."""
    def inside(p: tuple[float, float]) -> bool:
        return p[0] <= 180.0 if keep_west else p[0] >= 180.0

    out: list[tuple[float, float]] = []
    pts = ring[:-1]
    for k, cur in enumerate(pts):
        prev = pts[k - 1]
        if inside(cur) != inside(prev):
            t = (180.0 - prev[0]) / (cur[0] - prev[0])
            out.append((180.0, prev[1] + t * (cur[1] - prev[1])))
        if inside(cur):
            out.append(cur)
    if out:
        out.append(out[0])
    return out


def _ccw(ring: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """The ring counterclockwise (RFC 7946's right-hand rule for exterior rings)."""
    area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(ring, ring[1:], strict=False))
    return ring if area >= 0 else ring[::-1]


def _position(x: float, y: float) -> list[float]:
    return [round(x, LONLAT_DECIMALS), round(y, LONLAT_DECIMALS)]


def ring_geometries(lon: np.ndarray, lat: np.ndarray, centre_lon: float = 0.0
                    ) -> tuple[list[dict[str, Any] | None], list[float] | None]:
    """RFC 7946 geometries of closed rings (``n x k`` longitudes and latitudes, first vertex
    repeated last), and their bbox.

    Each geometry is a Polygon, a MultiPolygon where its ring crosses the antimeridian, or
    ``None`` where a vertex has no longitude/latitude. The bbox ``[west, south, east,
    north]`` has west > east across the antimeridian; each ring's longitudes are taken in
    the turn nearest ``centre_lon`` (the scene's centre), so windows on both sides of the
    antimeridian join into one interval. ``None`` when no ring is defined.
    """
    ok = np.isfinite(lon).all(axis=1) & np.isfinite(lat).all(axis=1)
    lon = _normalise_rings(np.where(ok[:, None], lon, 0.0))
    lat = np.clip(np.where(ok[:, None], lat, 0.0), -90.0, 90.0)
    # Shoelace sign per ring, vectorised: reverse the clockwise ones.
    area = (lon[:, :-1] * lat[:, 1:] - lon[:, 1:] * lat[:, :-1]).sum(axis=1)
    flip = area < 0
    lon[flip], lat[flip] = lon[flip, ::-1], lat[flip, ::-1]
    lo, hi = lon.min(axis=1), lon.max(axis=1)
    crosses = hi > 180.0
    rings = np.stack([np.round(lon, LONLAT_DECIMALS), np.round(lat, LONLAT_DECIMALS)],
                     axis=2).tolist()  # one conversion for every ring
    geoms: list[dict[str, Any] | None] = []
    for k, ring in enumerate(rings):
        if not ok[k]:
            geoms.append(None)
        elif not crosses[k]:
            geoms.append({"type": "Polygon", "coordinates": [ring]})
        else:
            pts = list(zip(lon[k].tolist(), lat[k].tolist(), strict=True))
            west, east = _clip(pts, True), _clip(pts, False)
            parts = [[[_position(x, y) for x, y in _ccw(west)]],
                     [[_position(x - 360.0, y) for x, y in _ccw(east)]]]
            geoms.append({"type": "MultiPolygon", "coordinates": [p for p in parts if len(p[0]) >= 4]})
    if not ok.any():
        return geoms, None
    shift = 360.0 * np.round(((lo + hi) / 2 - centre_lon) / 360.0)
    w, e = wrap_bounds(float((lo - shift)[ok].min()), float((hi - shift)[ok].max()))
    bbox = [round(w, LONLAT_DECIMALS), round(float(lat[ok].min()), LONLAT_DECIMALS),
            round(e, LONLAT_DECIMALS), round(float(lat[ok].max()), LONLAT_DECIMALS)]
    return geoms, bbox
