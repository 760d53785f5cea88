"""Writing a job's outputs: the prediction table, and per scene a class raster, a confidence
raster (Cloud-Optimized GeoTIFFs on the window grid, in the scene's CRS) and a GeoJSON of
the windows. Every file is written to a temporary name beside it and then ``os.replace``d.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from inference.plan import ScenePlan
from inference.predict import Row
from inference.readers import window_bounds
from vision.raster import gdal_env

#: The columns of ``predictions.parquet`` (ARCHITECTURE.md §3), in order.
PREDICTION_SCHEMA = pa.schema([
    ("path", pa.string()),
    ("row_off", pa.int32()),
    ("col_off", pa.int32()),
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("crs", pa.string()),
    ("minx", pa.float64()),
    ("miny", pa.float64()),
    ("maxx", pa.float64()),
    ("maxy", pa.float64()),
    ("status", pa.string()),
    ("label", pa.int32()),
    ("class_name", pa.string()),
    ("confidence", pa.float32()),
    ("probs", pa.list_(pa.float32())),
    ("flagged", pa.bool_()),
    ("error", pa.string()),
    ("input_sha256", pa.string()),
    ("model_name", pa.string()),
    ("model_version", pa.string()),
    ("model_sha256", pa.string()),
])

#: Class raster value of windows that were not classified (nodata or error).
CLASS_NODATA = 255

TMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path``, moved onto it when the block succeeds.

    The temporary name starts with a dot and ends in ``.tmp`` so that an interrupted run's
    leftovers are recognised (and removed) by the next run.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}{TMP_SUFFIX}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_bytes_atomic(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: Path, obj: Any) -> None:
    write_bytes_atomic(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def rows_to_table(rows: Sequence[Row]) -> pa.Table:
    """The prediction table of ``rows``, built column by column from buffers (`column`)."""
    return pa.Table.from_arrays([column([r.get(f.name) for r in rows], f.type)
                                 for f in PREDICTION_SCHEMA], schema=PREDICTION_SCHEMA)


def _utf8(value: Any) -> bytes:
    if not isinstance(value, str):
        raise TypeError(f"a string column got {type(value).__name__} {value!r}")
    return value.encode()


def string_scalar(value: str) -> pa.Scalar:
    """A string scalar for compute functions (a Python ``str`` there goes through pandas too)."""
    return column([value], pa.string())[0]


_NUMPY_TYPES = {pa.int32(): np.int32, pa.int64(): np.int64, pa.float32(): np.float32,
                pa.float64(): np.float64}


def column(values: Sequence[Any], type_: pa.DataType) -> pa.Array:
    """An Arrow array of ``values`` (``None`` is null) for the prediction table's types:
    strings, 32/64-bit ints and floats, booleans, lists of float32.

    Built from numpy buffers rather than with ``pa.array``: any ``pa.array`` call makes
    pyarrow import pandas to ask whether its input is a pandas object, 0.25 s of one core
    per job, a fifth of a 1024 x 1024 scene's run. (``Table.from_pylist`` would also cost
    0.5 ms a row.) The result equals ``pa.array(values, type_)``.

    Raises:
        TypeError: a type outside that set, or a string column holding a non-string.
    """
    n = len(values)
    nulls = np.fromiter((v is None for v in values), bool, n)
    n_null = int(nulls.sum())
    validity = pa.py_buffer(np.packbits(~nulls, bitorder="little")) if n_null else None
    if pa.types.is_string(type_):
        data = [b"" if v is None else _utf8(v) for v in values]
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(np.fromiter(map(len, data), np.int64, n), out=offsets[1:])
        return pa.Array.from_buffers(type_, n, [validity, pa.py_buffer(offsets),
                                                pa.py_buffer(b"".join(data))], null_count=n_null)
    if pa.types.is_boolean(type_):
        bits = np.packbits(np.fromiter((bool(v) for v in values), bool, n), bitorder="little")
        return pa.Array.from_buffers(type_, n, [validity, pa.py_buffer(bits)], null_count=n_null)
    if pa.types.is_list(type_) and type_.value_type == pa.float32():
        items = [np.asarray(v, np.float32).ravel() for v in values if v is not None]
        lengths = np.zeros(n, np.int64)
        lengths[~nulls] = [len(a) for a in items]
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate(items) if items else np.zeros(0, np.float32)
        child = pa.Array.from_buffers(pa.float32(), len(flat), [None, pa.py_buffer(flat)])
        return pa.Array.from_buffers(type_, n, [validity, pa.py_buffer(offsets)],
                                     null_count=n_null, children=[child])
    if type_ not in _NUMPY_TYPES:
        raise TypeError(f"no column builder for {type_}")
    arr = np.array([0 if v is None else v for v in values], dtype=_NUMPY_TYPES[type_])
    return pa.Array.from_buffers(type_, n, [validity, pa.py_buffer(arr)], null_count=n_null)


def write_table_atomic(path: Path, table: pa.Table) -> None:
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
