"""Writing a job's outputs: the prediction table, and per scene a class raster, a confidence
raster (Cloud-Optimized GeoTIFFs on the window grid, in the scene's CRS) and a GeoJSON of
the windows. Every file is written to a temporary name beside it and then ``os.replace``d.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from inference.plan import ScenePlan
from inference.readers import window_bounds
from vision.atomic import atomic_path, write_bytes_atomic
from vision.contracts.predictions import string_scalar
from vision.raster import gdal_env

#: Class raster value of windows that were not classified (nodata or error).
CLASS_NODATA = 255

def write_table_atomic(path: Path, table: pa.Table) -> None:
    """Write a Parquet table (zstd) atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def sort_predictions(table: pa.Table) -> pa.Table:
    """Normalised row order: by path, then window position (whole files first)."""
    return table.sort_by([("path", "ascending"), ("row_off", "ascending"),
                          ("col_off", "ascending")])


def scene_rows(table: pa.Table, path: str) -> pa.Table:
    return table.filter(pc.equal(table["path"], string_scalar(path)))


def write_scene_outputs(scene: ScenePlan, rows: pa.Table, out_dir: Path,
                        classes: Sequence[str]) -> dict[str, str]:
    """Write ``<stem>.classes.tif``, ``<stem>.confidence.tif`` and ``<stem>.geojson``.

    Returns the file names, for the manifest.
    """
    grid = scene.grid
    cls = np.full((grid.rows, grid.cols), CLASS_NODATA, dtype=np.uint8 if len(classes) < 255
                  else np.uint16)
    conf = np.full((grid.rows, grid.cols), np.nan, dtype=np.float32)
    stride_r, stride_c = grid.stride
    d = rows.select(["row_off", "col_off", "status", "label", "confidence"]).to_pydict()
    for r, c, st, lab, cf in zip(d["row_off"], d["col_off"], d["status"], d["label"],
                                 d["confidence"], strict=True):
        if st == "ok":
            cls[r // stride_r, c // stride_c] = lab
            conf[r // stride_r, c // stride_c] = cf
    transform = grid.grid_transform(scene.info.affine)
    names = {
        "classes": f"{scene.stem}.classes.tif",
        "confidence": f"{scene.stem}.confidence.tif",
        "geojson": f"{scene.stem}.geojson",
    }
    nodata = CLASS_NODATA if cls.dtype == np.uint8 else 65535
    if cls.dtype != np.uint8:
        cls[cls == CLASS_NODATA] = nodata
    _write_cog(out_dir / names["classes"], cls, transform, scene.info.crs, nodata,
               "NEAREST", {i: c for i, c in enumerate(classes)})
    _write_cog(out_dir / names["confidence"], conf, transform, scene.info.crs, float("nan"),
               "AVERAGE", None)
    write_bytes_atomic(out_dir / names["geojson"], _geojson(scene, rows).encode())
    return names


def _write_cog(path: Path, array: np.ndarray, transform: Any, crs: str, nodata: float,
               resampling: str, categories: dict[int, str] | None) -> None:
    """Write a one-band COG (tiled, deflate, overviews where the grid is big enough)."""
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy

    profile = {"driver": "GTiff", "width": array.shape[1], "height": array.shape[0],
               "count": 1, "dtype": array.dtype.name, "crs": crs, "transform": transform,
               "nodata": nodata}
    with gdal_env(), MemoryFile() as mem:
        with mem.open(**profile) as ds:
            ds.write(array, 1)
            if categories is not None:
                ds.update_tags(1, **{f"class_{k}": v for k, v in categories.items()})
                ds.set_band_description(1, "class")
            else:
                ds.set_band_description(1, "confidence")
        with mem.open() as src, atomic_path(path) as tmp:
            rio_copy(src, str(tmp), driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=256,
                     OVERVIEW_RESAMPLING=resampling)


def _crs_member(crs: str) -> dict[str, Any]:
    """GeoJSON 2008 ``crs`` member: QGIS/GDAL read it (RFC 7946 allows only WGS 84, but
    the contract keeps the scene's own CRS)."""
    name = f"urn:ogc:def:crs:EPSG::{crs.split(':', 1)[1]}" if crs.startswith("EPSG:") else crs
    return {"type": "name", "properties": {"name": name}}


def _geojson(scene: ScenePlan, rows: pa.Table) -> str:
    affine = scene.info.affine
    d = rows.to_pydict()
    feats = []
    for k in range(rows.num_rows):
        if d["row_off"][k] is None:
            continue
        win = (d["row_off"][k], d["col_off"][k], d["height"][k], d["width"][k])
        r, c, h, w = win
        ring = [affine @ (c, r), affine @ (c + w, r), affine @ (c + w, r + h),
                affine @ (c, r + h), affine @ (c, r)]
        feats.append({
            "type": "Feature",
            "properties": {
                "row_off": r, "col_off": c, "status": d["status"][k], "label": d["label"][k],
                "class_name": d["class_name"][k], "confidence": d["confidence"][k],
                "flagged": d["flagged"][k], "error": d["error"][k],
            },
            "geometry": {"type": "Polygon", "coordinates": [[list(p) for p in ring]]},
        })
    bbox = window_bounds(affine, (0, 0, scene.info.height, scene.info.width))
    return json.dumps({"type": "FeatureCollection", "name": scene.stem,
                       "crs": _crs_member(scene.info.crs), "bbox": list(bbox),
                       "features": feats})
