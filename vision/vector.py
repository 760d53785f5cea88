"""Vector files that GDAL is handed (label files, AOIs), checked the same way for each use.

A file is recognised by its first bytes, never by its name alone, so GDAL never opens a file
of another kind (a VRT or a CSV that names other files); it must be a regular file below a
size bound; and a layer's CRS is read with one rule: GeoJSON without one is WGS 84 (RFC
7946), any other format must declare it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pyproj import CRS
from pyproj.exceptions import CRSError

from vision.errors import VisionError

GPKG_MAGIC = b"SQLite format 3\x00"
SHP_MAGIC = b"\x00\x00\x27\x0a"
GEOJSON_NAME = "GeoJSON"
# GDAL driver name -> the name a person knows the format by.
FORMAT_NAMES = {"GeoJSON": "GeoJSON", "GPKG": "GeoPackage", "ESRI Shapefile": "Shapefile (.shp)"}


def _sniff(p: Path, drivers: Sequence[str], what: str, error: type[VisionError]) -> str:
    with p.open("rb") as f:
        head = f.read(64)
    if "GPKG" in drivers and head.startswith(GPKG_MAGIC):
        return "GPKG"
    if "ESRI Shapefile" in drivers and head.startswith(SHP_MAGIC) and p.suffix.lower() == ".shp":
        return "ESRI Shapefile"
    if GEOJSON_NAME in drivers and head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{"):
        return GEOJSON_NAME
    names = [FORMAT_NAMES[d] for d in drivers]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    raise error(f"{p}: not a {listed} {what}")


def vector_file(
    path: str | Path, *, drivers: Sequence[str], what: str, max_bytes: int, error: type[VisionError]
) -> tuple[Path, str]:
    """The path and GDAL driver of a vector file that may be handed to GDAL.

    Args:
        drivers: the GDAL drivers accepted, among `FORMAT_NAMES`.
        what: the file's role in messages (``"label file"``, ``"AOI file"``).
        error: the error raised, with a message naming the file.

    Raises:
        error: the file is missing, not a regular file, larger than ``max_bytes``, or of
            none of the accepted formats.
    """
    p = Path(path)
    if not p.is_file():
        raise error(f"{p}: {what} not found")
    if p.stat().st_size > max_bytes:
        raise error(f"{p}: {what} larger than {max_bytes >> 20} MiB")
    return p, _sniff(p, drivers, what, error)


def layer_crs(p: Path, meta: dict[str, Any], driver: str, *, hint: str, error: type[VisionError]) -> CRS:
    """The CRS of a layer read with ``pyogrio.raw.read`` (``meta``); GeoJSON defaults to WGS 84.

    Raises:
        error: a GeoPackage or Shapefile without a CRS (``hint`` says how to set one), or a
            CRS pyproj cannot use.
    """
    crs_text = meta.get("crs")
    if not crs_text:
        if driver != GEOJSON_NAME:
            raise error(f"{p}: the layer has no CRS; set one ({hint})")
        crs_text = "EPSG:4326"
    try:
        return CRS.from_user_input(crs_text)
    except CRSError as exc:
        raise error(f"{p}: unusable CRS {crs_text!r} ({exc})") from exc
