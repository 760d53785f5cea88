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

from inference.cog import (
    raster_categories,
    raster_layout,
    window_grids,
    write_categories,
    write_class_cog,
    write_cog,
)
from inference.geo import ring_geometries, to_lonlat
from inference.palette import NOT_ASSESSED_NAMES
from inference.plan import ScenePlan
from inference.quicklook import Canvas, write_quicklook
from vision.atomic import atomic_path, write_bytes_atomic
from vision.contracts.predictions import STATUS_OK, string_scalar
from vision.errors import VisionError

#: Class raster value of windows without data (the raster's nodata value; cloudy and failed
#: windows have values of their own: `inference.palette.status_values`).
CLASS_NODATA = 255
#: Folder of the job's STAC catalog: an item per scene and ``catalog.json``.
STAC_DIR = "stac"


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


def scene_files(scene: ScenePlan) -> dict[str, str]:
    """The files `write_scene_outputs` writes for a scene, by kind."""
    return {
        "classes": f"{scene.stem}.classes.tif",
        "classes_aux": f"{scene.stem}.classes.tif.aux.xml",
        "confidence": f"{scene.stem}.confidence.tif",
        "geojson": f"{scene.stem}.geojson",
        "quicklook": f"{scene.stem}.quicklook.png",
    }


def scene_output_names(scene: ScenePlan) -> dict[str, str]:
    """Every file written for a scene, by kind (what the manifest lists as the job's): its
    `scene_files` and its STAC item (written with the job's catalog at the end of the job,
    `inference.stac_items`)."""
    return {**scene_files(scene), "stac": f"{STAC_DIR}/{scene.stem}.json"}


def write_scene_outputs(scene: ScenePlan, rows: pa.Table, out_dir: Path,
                        classes: Sequence[str], canvas: Canvas,
                        background: Executor | None = None) -> Future[None] | None:
    """Write a scene's rasters (and the class raster's categories), GeoJSON and quicklook
    (`scene_files`); ``canvas`` holds the quicklook's pixels of the scene.

    With ``background``, the quicklook (mostly PNG encoding, which releases the GIL) is
    written there while the rest is written here; its future is returned, and its
    ``result()`` raises what writing it raised.

    Raises:
        OutputWriteError: a file could not be written.
    """
    names = scene_output_names(scene)
    cls, conf, top = window_grids(scene, rows, len(classes))
    layout = raster_layout(scene)
    ql = out_dir / names["quicklook"]

    def quicklook() -> None:
        with writing(ql):
            write_quicklook(ql, canvas, cls, top, classes)

    job = background.submit(quicklook) if background is not None else None
    path = out_dir / names["classes"]
    with writing(path):
        write_class_cog(path, scene, layout, cls, top, classes)
    aux = out_dir / names["classes_aux"]
    with writing(aux):
        write_categories(aux, raster_categories(classes, top))
    path = out_dir / names["confidence"]
    with writing(path):
        write_cog(path, scene, layout, conf, float("nan"), "AVERAGE", "confidence", None, None)
    gj = out_dir / names["geojson"]
    with writing(gj):
        write_bytes_atomic(gj, _rfc7946(scene, _features(scene, rows)).encode())
    if job is None:
        quicklook()
    return job


def _features(scene: ScenePlan, rows: pa.Table) -> list[dict[str, Any]]:
    """One feature per window, its polygon clipped to the scene, in the scene's CRS.

    ``assessed`` is false, and ``not_assessed`` says why (e.g. ``cloudy (not assessed)``),
    for a window without a model answer: a cloudy window is no class and no "crop absent".
    """
    d = rows.select(["row_off", "col_off", "height", "width", "status", "label", "class_name",
                     "confidence", "flagged", "error", "cloud_fraction", "aoi_id"]).to_pydict()
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
                "assessed": d["status"][k] == STATUS_OK,
                "not_assessed": NOT_ASSESSED_NAMES.get(d["status"][k]),
                "cloud_fraction": d["cloud_fraction"][k], "aoi_id": d["aoi_id"][k],
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
