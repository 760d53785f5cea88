"""Each scene's windows as a raster on disk: one cell per window (pass 2 over a job's table).

A job's scene becomes a float32 GeoTIFF in the change run's work folder, on the scene's window
grid (`SceneGrid.cell_transform`, in the scene's CRS), with the bands ``B_*``: the row's status
code (`inference.change.rules.SRC_*`), its class index, the cell's own row and column (so that
a nearest-neighbour reprojection says which earlier window a later one was matched to), its
cloud fraction, its AOI (index into `Job.aoi_ids`, -1 for none), and the calibrated
probability of every class. NaN is "nothing": a cell without a row reads NaN in every band,
and the file is sparse (tiles without rows are never written), so its size and the time to
write it follow the rows, not the grid's area. Rows are written tile by tile (256 x 256 cells:
read, filled, written back), so memory holds a batch of rows and a tile whatever the area; the
alignment (`inference.change.align`) then reads or reprojects windows of these rasters.

Rows are checked as they are written: a window given twice, a class index outside the
model's classes, or an ``ok`` row whose probabilities are missing, of the wrong length or not
finite is refused (the first) or becomes an error row (not assessed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import rasterio
from rasterio.windows import Window

from inference.change.arrow import codes, float_lists, numeric
from inference.change.jobs import BATCH_ROWS, Job, JobReadError, SceneGrid
from inference.change.rules import SRC_ERROR, SRC_OK, STATUS_CODES
from vision.raster import gdal_env

#: Band numbers (1-based) of a cell raster; probabilities follow from `B_PROBS`.
B_STATUS, B_LABEL, B_ROW, B_COL, B_CLOUD, B_AOI, B_PROBS = 1, 2, 3, 4, 5, 6, 7
META_BANDS = [B_STATUS, B_LABEL, B_ROW, B_COL, B_CLOUD, B_AOI]
TILE = 256


def prob_bands(n_classes: int) -> list[int]:
    return list(range(B_PROBS, B_PROBS + n_classes))


def tiles(rows: int, cols: int, size: int = TILE) -> Iterator[tuple[int, int, int, int]]:
    """``(i0, i1, j0, j1)`` rectangles of at most ``size x size`` cells covering a grid."""
    for i0 in range(0, rows, size):
        for j0 in range(0, cols, size):
            yield i0, min(rows, i0 + size), j0, min(cols, j0 + size)


class CellRasters:
    """The cell rasters of one job, in ``folder`` (removed with the run's work folder)."""

    def __init__(self, job: Job, folder: Path):
        self.job = job
        self.folder = folder
        self.k = len(job.classes)
        self.aoi_index = {a: k for k, a in enumerate(job.aoi_ids)}
        self.paths = {s.index: folder / f"scene{s.index:05d}.tif" for s in job.scenes}

    def _create(self, scene: SceneGrid) -> None:
        """An empty cell raster: sparse (tiles without rows are never written, and read as
        NaN, i.e. no window), so its cost follows the rows, not the grid's area."""
        profile: dict[str, Any] = {
            "driver": "GTiff", "width": scene.cols, "height": scene.rows, "count": B_PROBS - 1 + self.k,
            "dtype": "float32", "crs": scene.crs, "transform": scene.cell_transform, "nodata": np.nan,
            "tiled": True, "blockxsize": min(TILE, _ceil16(scene.cols)), "blockysize": min(TILE, _ceil16(scene.rows)),
            "SPARSE_OK": "TRUE", "BIGTIFF": "IF_SAFER"}
        self.folder.mkdir(parents=True, exist_ok=True)
        with gdal_env(), rasterio.open(self.paths[scene.index], "w", **profile):
            pass

    def build(self, on_rows: Callable[[int], None] | None = None) -> None:
        """Pass 2: write every window row of the job's table onto its scene's cell raster."""
        for s in self.job.scenes:
            self._create(s)
        by_path = {s.path: s for s in self.job.scenes}
        cols = ["path", "row_off", "col_off", "status", "label", "probs"]
        cols += [c for c in ("cloud_fraction", "aoi_id") if c in self.job.columns]
        pf = pq.ParquetFile(self.job.predictions)
        handles: dict[int, rasterio.io.DatasetWriter] = {}
        try:
            with gdal_env():
                for s in self.job.scenes:
                    handles[s.index] = rasterio.open(self.paths[s.index], "r+")
                for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=cols):
                    self._write_batch(batch, by_path, handles)
                    if on_rows is not None:
                        on_rows(batch.num_rows)
        except JobReadError:
            raise
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise JobReadError(f"{self.job.given}: predictions.parquet cannot be read ({exc})") from exc
        finally:
            for ds in handles.values():
                ds.close()

    def _write_batch(self, batch: object, by_path: dict[str, SceneGrid],
                     handles: dict[int, rasterio.io.DatasetWriter]) -> None:
        n = batch.num_rows  # type: ignore[attr-defined]
        col = batch.column  # type: ignore[attr-defined]
        r = numeric(col("row_off"), np.int64, fill=-1)
        c = numeric(col("col_off"), np.int64, fill=-1)
        pcode, pnames = codes(col("path"))
        scode, snames = codes(col("status"))
        lut = np.array([STATUS_CODES.get(s, SRC_ERROR) for s in snames] or [SRC_ERROR], np.int8)
        status = np.where(scode >= 0, lut[np.maximum(scode, 0)], SRC_ERROR).astype(np.int8)
        label = numeric(col("label"), np.int64, fill=-1)
        probs, ok_len = float_lists(col("probs"), self.k)
        cloud = (numeric(col("cloud_fraction"), np.float32, fill=np.nan)
                 if "cloud_fraction" in self.job.columns else np.full(n, np.nan, np.float32))
        aoi = np.full(n, -1, np.float32)
        if "aoi_id" in self.job.columns:
            acode, anames = codes(col("aoi_id"))
            lut_a = np.array([self.aoi_index[str(a)] for a in anames] or [-1], np.float32)
            aoi = np.where(acode >= 0, lut_a[np.maximum(acode, 0)], -1).astype(np.float32)
        ok = status == SRC_OK
        good = ok_len & (label >= 0) & (label < self.k) & np.isfinite(probs).all(axis=1)
        status[ok & ~good] = SRC_ERROR  # an ok row the change code cannot use is not assessed
        label = np.where(status == SRC_OK, label, -1)
        probs[status != SRC_OK] = np.nan  # only assessed windows feed the interpolation
        for u in np.unique(pcode[(r >= 0) & (pcode >= 0)]):
            scene = by_path[pnames[u]]
            m = (pcode == u) & (r >= 0)
            i, j = r[m] // scene.stride[0], c[m] // scene.stride[1]
            self._write_scene(scene, handles[scene.index], i, j, status[m], label[m], cloud[m], aoi[m], probs[m])

    def _write_scene(self, scene: SceneGrid, ds: rasterio.io.DatasetWriter, i: np.ndarray, j: np.ndarray,
                     status: np.ndarray, label: np.ndarray, cloud: np.ndarray, aoi: np.ndarray,
                     probs: np.ndarray) -> None:
        tile_id = (i // TILE) * ((scene.cols + TILE - 1) // TILE) + j // TILE
        order = np.argsort(tile_id, kind="stable")
        bounds = np.flatnonzero(np.diff(tile_id[order])) + 1
        for sel in np.split(order, bounds):
            ti, tj = i[sel[0]] // TILE, j[sel[0]] // TILE
            i0, j0 = int(ti * TILE), int(tj * TILE)
            h, w = min(TILE, scene.rows - i0), min(TILE, scene.cols - j0)
            win = Window(j0, i0, w, h)
            block = ds.read(window=win)
            li, lj = i[sel] - i0, j[sel] - j0
            flat = li * w + lj
            if np.isfinite(block[B_STATUS - 1][li, lj]).any() or len(np.unique(flat)) != len(flat):
                k = int(sel[0])
                raise JobReadError(f"{self.job.given}: {scene.path}: a window (row_off "
                                   f"{int(i[k]) * scene.stride[0]}, col_off {int(j[k]) * scene.stride[1]} or "
                                   "near it) has more than one row")
            block[B_ROW - 1] = np.arange(i0, i0 + h, dtype=np.float32)[:, None]
            block[B_COL - 1] = np.arange(j0, j0 + w, dtype=np.float32)[None, :]
            block[B_STATUS - 1][li, lj] = status[sel]
            block[B_LABEL - 1][li, lj] = label[sel]
            block[B_CLOUD - 1][li, lj] = cloud[sel]
            block[B_AOI - 1][li, lj] = aoi[sel]
            block[B_PROBS - 1:, li, lj] = probs[sel].T
            ds.write(block, window=win)


def _ceil16(n: int) -> int:
    return max(16, -(-n // 16) * 16)
