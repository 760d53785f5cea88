"""Small labelled scenes written at test time: a georeferenced GeoTIFF, labels in any CRS
and format (pyogrio), a STAC item with a scene classification layer."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import rasterio
import shapely
from pyproj import Transformer
from rasterio.transform import from_origin

CRS = "EPSG:32632"
X0, Y0, PIXEL = 500_000.0, 5_600_000.0, 10.0


def write_scene(path: Path, width: int = 256, height: int = 256, bands: int = 3, dtype: str = "uint8",
                seed: int = 0, x0: float = X0, y0: float = Y0, nodata: float | None = None,
                fill: dict[tuple[int, int, int, int], float] | None = None, crs: str = CRS,
                descriptions: Sequence[str] | None = ("B04", "B03", "B02"), pixel: float = PIXEL,
                tags: dict[str, str] | None = None) -> Path:
    """A GeoTIFF scene of random values 1..200; ``fill`` sets ``(row, col, h, w)`` blocks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.random.default_rng(seed).integers(1, 200, (bands, height, width)).astype(dtype)
    for (r, c, h, w), v in (fill or {}).items():
        data[:, r:r + h, c:c + w] = v
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=bands, dtype=dtype, crs=crs,
                       transform=from_origin(x0, y0, pixel, pixel), nodata=nodata, tiled=True, blockxsize=64,
                       blockysize=64) as ds:
        ds.write(data)
        if descriptions is not None and len(descriptions) == bands:
            ds.descriptions = tuple(descriptions)
        if tags:
            ds.update_tags(**tags)
    return path


def pixel_box(row: int, col: int, h: int, w: int, x0: float = X0, y0: float = Y0) -> shapely.Polygon:
    """The box of a pixel window of `write_scene`'s grid, in its CRS."""
    return shapely.box(x0 + col * PIXEL, y0 - (row + h) * PIXEL, x0 + (col + w) * PIXEL, y0 - row * PIXEL)


def pixel_point(row: float, col: float, x0: float = X0, y0: float = Y0) -> shapely.Point:
    return shapely.Point(x0 + col * PIXEL, y0 - row * PIXEL)


def to_crs(geoms: Sequence[Any], dst: str, src: str = CRS) -> list[Any]:
    tr = Transformer.from_crs(src, dst, always_xy=True)
    return [shapely.transform(g, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1]))) for g in geoms]


def write_labels(path: Path, geoms: Sequence[Any], classes: Sequence[Any], crs: str = CRS,
                 ids: Sequence[str] | None = None, geometry_type: str | None = None) -> Path:
    """A label file (driver by suffix: .geojson, .gpkg, .shp) with ``class`` (and ``key``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    driver = {".geojson": "GeoJSON", ".gpkg": "GPKG", ".shp": "ESRI Shapefile"}[path.suffix]
    fields = ["class"]
    data = [np.array(list(classes), dtype=object)]
    if ids is not None:
        fields.append("key")
        data.append(np.array(list(ids), dtype=object))
    wkb = np.array([None if g is None else shapely.to_wkb(g) for g in geoms], dtype=object)
    types = {g.geom_type for g in geoms if g is not None}
    gtype = geometry_type or (types.pop() if len(types) == 1 else "Unknown")
    pyogrio.raw.write(path, wkb, data, fields, driver=driver, crs=crs or None, geometry_type=gtype)
    return path


def write_scl_item(folder: Path, cloudy: tuple[int, int, int, int], size: int = 128, seed: int = 0) -> Path:
    """A STAC item with an 8-bit visual (TCI) asset and an SCL asset whose ``cloudy`` window
    is class 9 (cloud, high probability); returns the item JSON."""
    folder.mkdir(parents=True, exist_ok=True)
    write_scene(folder / "TCI.tif", size, size, seed=seed, descriptions=None)
    scl = np.full((1, size, size), 4, dtype="uint8")  # vegetation
    r, c, h, w = cloudy
    scl[:, r:r + h, c:c + w] = 9
    with rasterio.open(folder / "SCL.tif", "w", driver="GTiff", width=size, height=size, count=1, dtype="uint8",
                       crs=CRS, transform=from_origin(X0, Y0, PIXEL, PIXEL)) as ds:
        ds.write(scl)
    lon0, lat0 = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True).transform(X0, Y0)
    item = {
        "type": "Feature", "stac_version": "1.0.0", "id": "S2X_TEST", "stac_extensions": [],
        "geometry": {"type": "Point", "coordinates": [lon0, lat0]}, "bbox": [lon0, lat0 - 0.02, lon0 + 0.02, lat0],
        "properties": {"datetime": "2020-02-19T11:00:00Z", "constellation": "sentinel-2",
                       "s2:product_type": "S2MSI2A", "s2:processing_baseline": "02.14"},
        "links": [],
        "assets": {
            "visual": {"href": "./TCI.tif", "type": "image/tiff; application=geotiff", "roles": ["visual"],
                       "eo:bands": [{"name": "B04", "common_name": "red"}, {"name": "B03", "common_name": "green"},
                                    {"name": "B02", "common_name": "blue"}]},
            "scl": {"href": "./SCL.tif", "type": "image/tiff; application=geotiff", "roles": ["data"],
                    "title": "Scene classification map (SCL)"},
        },
    }
    p = folder / "item.json"
    p.write_text(json.dumps(item))
    return p
