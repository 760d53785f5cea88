"""Writing a job's outputs: the prediction table, and per scene a class raster and a
confidence raster (Cloud-Optimized GeoTIFFs in the scene's CRS that end at the scene's
edges), the windows as RFC 7946 GeoJSON and a quicklook PNG.
Every file is written to a temporary name beside it and then ``os.replace``d; a write that
fails (a full disk) raises `OutputWriteError` naming the file.
"""

from __future__ import annotations

import contextlib
import errno
import json
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from rasterio.errors import RasterioError

from inference.geo import ring_geometries, to_lonlat
from inference.palette import colour_table
from inference.plan import ScenePlan
from inference.quicklook import Canvas, write_quicklook
from vision.atomic import atomic_path, write_bytes_atomic
from vision.contracts.predictions import string_scalar
from vision.errors import VisionError
from vision.raster import gdal_env

#: Class raster value of windows that were not classified (nodata or error).
CLASS_NODATA = 255
#: Output-raster cells written per block (bounds memory for very large scenes).
_BLOCK_CELLS = 1 << 22


class OutputWriteError(VisionError):
    """A job's output could not be written (disk full, permissions, I/O error).

    Attributes:
        path: the file being written.
        no_space: the disk (or quota) is full.
    """

    def __init__(self, path: Path, exc: BaseException):
        reason = getattr(exc, "strerror", None) or str(exc)
        self.no_space = getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or \
            "No space left" in str(exc) or "Disk quota" in str(exc)
        self.path = path
        what = "disk full" if self.no_space else "write failed"
        super().__init__(f"{what} while writing {path}: {reason}")


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn a failed write of ``path`` (an `OSError`, or GDAL's `RasterioError`) into an
    `OutputWriteError`."""
    try:
        yield
    except OutputWriteError:
        raise
    except (OSError, RasterioError) as exc:
        raise OutputWriteError(path, exc) from exc


def write_table_atomic(path: Path, table: pa.Table) -> None:
    """Write a Parquet table (zstd) atomically."""
    with writing(path), atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def sort_predictions(table: pa.Table) -> pa.Table:
    """Normalised row order: by path, then window position (whole files first)."""
    return table.sort_by([("path", "ascending"), ("row_off", "ascending"),
                          ("col_off", "ascending")])


def scene_rows(table: pa.Table, path: str) -> pa.Table:
    return table.filter(pc.equal(table["path"], string_scalar(path)))


def scene_output_names(scene: ScenePlan) -> dict[str, str]:
    """The files written for a scene, by kind (what the manifest lists as the job's)."""
    return {
        "classes": f"{scene.stem}.classes.tif",
        "confidence": f"{scene.stem}.confidence.tif",
        "geojson": f"{scene.stem}.geojson",
        "quicklook": f"{scene.stem}.quicklook.png",
    }


def _grids(scene: ScenePlan, rows: pa.Table, n_classes: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Class and confidence per window (``rows x cols`` of the grid), and the class nodata."""
    grid = scene.grid
    dtype = np.uint8 if n_classes < CLASS_NODATA else np.uint16
    nodata = CLASS_NODATA if dtype == np.uint8 else 65535
    cls = np.full((grid.rows, grid.cols), nodata, dtype=dtype)
    conf = np.full((grid.rows, grid.cols), np.nan, dtype=np.float32)
    ok = rows.filter(pc.equal(rows["status"], string_scalar("ok")))
    if ok.num_rows:
        i = _values(ok["row_off"], np.int32) // grid.stride[0]
        j = _values(ok["col_off"], np.int32) // grid.stride[1]
        cls[i, j] = _values(ok["label"], np.int32)
        conf[i, j] = _values(ok["confidence"], np.float32)
    return cls, conf, nodata


def _values(col: pa.ChunkedArray, dtype: type[np.generic]) -> np.ndarray:
    """A null-free numeric column as numpy, from its buffers (``to_numpy`` imports pandas,
    0.25 s of a core: see `vision.contracts.predictions.column`)."""
    if col.null_count:
        raise ValueError("_values needs a column without nulls")
    parts = [np.frombuffer(c.buffers()[1], dtype=dtype)[c.offset: c.offset + len(c)]
             for c in col.chunks]
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def write_scene_outputs(scene: ScenePlan, rows: pa.Table, out_dir: Path,
                        classes: Sequence[str], canvas: Canvas,
                        background: Executor | None = None) -> Future[None] | None:
    """Write a scene's rasters, GeoJSON and quicklook (`scene_output_names`); ``canvas``
    holds the quicklook's pixels of the scene.

    With ``background``, the quicklook (mostly PNG encoding, which releases the GIL) is
    written there while the rest is written here; its future is returned, and its
    ``result()`` raises what writing it raised.

    Raises:
        OutputWriteError: a file could not be written.
    """
    names = scene_output_names(scene)
    cls, conf, nodata = _grids(scene, rows, len(classes))
    ql = out_dir / names["quicklook"]

    def quicklook() -> None:
        with writing(ql):
            write_quicklook(ql, canvas, cls, nodata, classes)

    job = background.submit(quicklook) if background is not None else None
    tags = {f"class_{k}": c for k, c in enumerate(classes)}
    _write_cog(out_dir / names["classes"], scene, cls, nodata, "NEAREST", "class", tags,
               colour_table(classes) if cls.dtype == np.uint8 else None)
    _write_cog(out_dir / names["confidence"], scene, conf, float("nan"), "AVERAGE",
               "confidence", None, None)
    gj = out_dir / names["geojson"]
    with writing(gj):
        write_bytes_atomic(gj, _rfc7946(scene, _features(scene, rows)).encode())
    if job is None:
        quicklook()
    return job


def _write_cog(path: Path, scene: ScenePlan, grid_values: np.ndarray, nodata: float,
               resampling: str, description: str, tags: dict[str, str] | None,
               colours: dict[int, tuple[int, int, int, int]] | None) -> None:
    """Write a one-band COG of the window grid's values over the scene's extent (tiled,
    deflate, overviews where it is big enough), block of rows by block of rows."""
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as rio_copy
    from rasterio.windows import Window

    grid = scene.grid
    height, width = grid.raster_shape()
    rows_idx, cols_idx = grid.raster_index(0), grid.raster_index(1)
    profile = {"driver": "GTiff", "width": width, "height": height, "count": 1,
               "dtype": grid_values.dtype.name, "crs": scene.info.crs,
               "transform": grid.raster_transform(scene.info.affine), "nodata": nodata,
               "tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "DEFLATE"}
    if width < 256 or height < 256:
        del profile["tiled"], profile["blockxsize"], profile["blockysize"]
    step = max(1, _BLOCK_CELLS // max(1, width))
    with writing(path), gdal_env(), MemoryFile() as mem:
        with mem.open(**profile) as ds:
            for r0 in range(0, height, step):
                r1 = min(height, r0 + step)
                block = grid_values[np.ix_(rows_idx[r0:r1], cols_idx)]
                ds.write(block, 1, window=Window(0, r0, width, r1 - r0))
            if tags:
                ds.update_tags(1, **tags)
            if colours:
                ds.write_colormap(1, colours)
            ds.set_band_description(1, description)
        with mem.open() as src, atomic_path(path) as tmp:
            rio_copy(src, str(tmp), driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=256,
                     OVERVIEW_RESAMPLING=resampling)


def _features(scene: ScenePlan, rows: pa.Table) -> list[dict[str, Any]]:
    """One feature per window, its polygon clipped to the scene, in the scene's CRS (the
    properties are shared by both GeoJSON files)."""
    d = rows.select(["row_off", "col_off", "height", "width", "status", "label", "class_name",
                     "confidence", "flagged", "error"]).to_pydict()
    h_max, w_max = scene.info.height, scene.info.width
    feats = []
    for k in range(rows.num_rows):
        r, c = d["row_off"][k], d["col_off"][k]
        if r is None:
            continue
        feats.append({
            "window": (r, c, min(r + d["height"][k], h_max), min(c + d["width"][k], w_max)),
            "properties": {
                "row_off": r, "col_off": c, "status": d["status"][k], "label": d["label"][k],
                "class_name": d["class_name"][k], "confidence": d["confidence"][k],
                "flagged": d["flagged"][k], "error": d["error"][k],
            },
        })
    return feats


def _rings(scene: ScenePlan, feats: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Closed rings of the clipped windows in the scene's CRS: ``n x 5`` x and y."""
    if not feats:
        return np.zeros((0, 5)), np.zeros((0, 5))
    w = np.array([f["window"] for f in feats], np.float64)  # r0, c0, r1, c1
    r0, c0, r1, c1 = w[:, :1], w[:, 1:2], w[:, 2:3], w[:, 3:4]
    cols = np.hstack([c0, c1, c1, c0, c0])
    rws = np.hstack([r0, r0, r1, r1, r0])
    a = scene.info.affine
    return a.a * cols + a.b * rws + a.c, a.d * cols + a.e * rws + a.f


def _rfc7946(scene: ScenePlan, feats: list[dict[str, Any]]) -> str:
    xs, ys = _rings(scene, feats)
    cx, cy = scene.info.affine @ (scene.info.width / 2, scene.info.height / 2)
    # The scene's centre goes with the corners: one transform call.
    lon, lat = to_lonlat(scene.info.crs, np.append(xs.ravel(), cx), np.append(ys.ravel(), cy))
    centre = float(lon[-1])
    geoms, bbox = ring_geometries(lon[:-1].reshape(xs.shape), lat[:-1].reshape(ys.shape),
                                  centre if np.isfinite(centre) else 0.0)
    doc: dict[str, Any] = {"type": "FeatureCollection", "name": scene.stem}
    if bbox is not None:
        doc["bbox"] = bbox
    doc["features"] = [{"type": "Feature", "properties": f["properties"], "geometry": g}
                       for f, g in zip(feats, geoms, strict=True)]
    return json.dumps(doc)
