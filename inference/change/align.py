"""Aligning every date's windows onto the latest job's grid, one chunk of windows at a time.

For each scene of the latest job and each chunk of its window grid (256 x 256 windows), every
earlier job's values are taken from its cell rasters (`inference.change.cells`):

- **same grid** (same CRS, same window transform, size and stride): the same cells, read
  directly: the earlier window *is* the later window;
- **another grid or CRS**: ``rasterio.warp.reproject`` of the earlier cell raster onto the
  chunk's cells, nearest neighbour for the status, class and window index (so the row names
  the earlier window it was matched to), bilinear for the probabilities (NaN outside assessed
  windows, so they never blend in), exact transforms (``tolerance=0``). GDAL reads only the
  blocks the chunk needs, so memory does not grow with the area.

Where several scenes of an earlier job cover a window (overlapping tiles), an assessed window
wins over a not-assessed one, and the first scene (in path order) among equals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject
from rasterio.windows import Window
from shapely.geometry.base import BaseGeometry

from inference.change.cells import (
    B_AOI,
    B_CLOUD,
    B_COL,
    B_LABEL,
    B_ROW,
    B_STATUS,
    META_BANDS,
    CellRasters,
    prob_bands,
)
from inference.change.jobs import Job, SceneGrid
from inference.change.rules import SRC_MISSING, SRC_OK
from vision import geo
from vision.raster import gdal_env


@dataclass
class DateValues:
    """One date's values on a chunk of the later grid (flat arrays, row-major).

    Attributes:
        status: source status codes (``SRC_*``).
        label: class index (-1 where not ok).
        p: probability of ``label``; p_interest: summed probability of the classes of interest.
        cloud: cloud fraction (NaN where unknown).
        aoi: index into the job's ``aoi_ids`` (-1: none).
        scene: index of the job's scene the values came from (-1: none).
        src_i, src_j: the matched window of that scene (row and column in its window grid).
        same_grid: whether that scene is on the later grid.
    """

    status: np.ndarray
    label: np.ndarray
    p: np.ndarray
    p_interest: np.ndarray
    cloud: np.ndarray
    aoi: np.ndarray
    scene: np.ndarray
    src_i: np.ndarray
    src_j: np.ndarray
    same_grid: np.ndarray


def same_grid(a: SceneGrid, b: SceneGrid) -> bool:
    """Whether two scenes' windows coincide (same CRS, window transform, size and stride)."""
    if a.size != b.size or a.stride != b.stride or not crs_equal(a.crs, b.crs):
        return False
    ta, tb = a.cell_transform, b.cell_transform
    scale = max(abs(ta.a), abs(ta.e))
    return all(abs(x - y) <= 1e-6 * scale for x, y in zip(ta[:6], tb[:6], strict=True))


def crs_equal(a: str, b: str) -> bool:
    return a == b or CRS.from_user_input(a) == CRS.from_user_input(b)


def footprint(scene: SceneGrid) -> BaseGeometry:
    """The scene's outline in its CRS (shapely polygon)."""
    return geo.footprint(scene.crs, scene.transform, scene.shape[1], scene.shape[0])


def overlap(a: SceneGrid, b: SceneGrid) -> bool:
    """Whether scene ``a`` overlaps scene ``b`` (in ``b``'s CRS), with a positive area."""
    fa = geo.reproject(footprint(a), a.crs, b.crs)
    inter = fa.intersection(footprint(b))
    return not inter.is_empty and inter.area > 0


class Aligner:
    """Reads every date's values for chunks of the latest job's scenes.

    Args:
        jobs: oldest first; the last is the later grid.
        cells: the jobs' cell rasters, in the same order.
        interest: `inference.change.rules.interest_mask`.
    """

    def __init__(self, jobs: list[Job], cells: list[CellRasters], interest: np.ndarray):
        self.jobs, self.cells, self.interest = jobs, cells, interest
        self.later = jobs[-1]
        #: per later scene index: per earlier date, [(scene, same_grid)] overlapping it
        self.sources: dict[int, list[list[tuple[SceneGrid, bool]]]] = {}
        for s in self.later.scenes:
            self.sources[s.index] = [[(e, same_grid(e, s)) for e in job.scenes if overlap(e, s)]
                                     for job in jobs[:-1]]
        self._open: dict[tuple[int, int], rasterio.io.DatasetReader] = {}
        self._env = gdal_env()
        self._env.__enter__()

    def close(self) -> None:
        for ds in self._open.values():
            ds.close()
        self._open.clear()
        self._env.__exit__(None, None, None)

    def __enter__(self) -> Aligner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def covering(self, date: int) -> bool:
        """Whether any scene of job ``date`` overlaps any scene of the later job."""
        return any(self.sources[s.index][date] for s in self.later.scenes)

    def _ds(self, date: int, scene: SceneGrid) -> rasterio.io.DatasetReader:
        key = (date, scene.index)
        if key not in self._open:
            self._open[key] = rasterio.open(self.cells[date].paths[scene.index])
        return self._open[key]

    def chunk(self, later: SceneGrid, i0: int, i1: int, j0: int, j1: int) -> list[DateValues]:
        """Every date's values (oldest first, the later job last) on cells ``[i0:i1, j0:j1]``."""
        h, w = i1 - i0, j1 - j0
        k = len(self.later.classes)
        out = []
        for date in range(len(self.jobs)):
            meta = np.full((len(META_BANDS), h, w), np.nan, np.float32)
            probs = np.full((k, h, w), np.nan, np.float32)
            scene_of = np.full((h, w), -1, np.int32)
            same_of = np.zeros((h, w), bool)
            last = date == len(self.jobs) - 1
            sources = [(later, True)] if last else self.sources[later.index][date]
            for src, same in sources:
                m, p = (self._direct(date, src, i0, i1, j0, j1) if same
                        else self._warp(date, src, later, i0, j0, h, w))
                rank_new = _rank(m[0])
                take = rank_new > _rank(meta[0])
                if take.any():
                    meta[:, take] = m[:, take]
                    probs[:, take] = p[:, take]
                    scene_of[take] = src.index
                    same_of[take] = same
            out.append(self._values(meta, probs, scene_of, same_of))
        return out

    def _direct(self, date: int, src: SceneGrid, i0: int, i1: int, j0: int, j1: int
                ) -> tuple[np.ndarray, np.ndarray]:
        k = len(self.later.classes)
        meta = np.full((len(META_BANDS), i1 - i0, j1 - j0), np.nan, np.float32)
        probs = np.full((k, i1 - i0, j1 - j0), np.nan, np.float32)
        a0, a1, b0, b1 = max(i0, 0), min(i1, src.rows), max(j0, 0), min(j1, src.cols)
        if a1 > a0 and b1 > b0:
            ds = self._ds(date, src)
            win = Window(b0, a0, b1 - b0, a1 - a0)
            meta[:, a0 - i0: a1 - i0, b0 - j0: b1 - j0] = ds.read(META_BANDS, window=win)
            probs[:, a0 - i0: a1 - i0, b0 - j0: b1 - j0] = ds.read(prob_bands(k), window=win)
        return meta, probs

    def _warp(self, date: int, src: SceneGrid, later: SceneGrid, i0: int, j0: int, h: int, w: int
              ) -> tuple[np.ndarray, np.ndarray]:
        k = len(self.later.classes)
        ds = self._ds(date, src)
        dst_t: Affine = later.cell_transform @ Affine.translation(j0, i0)
        dst_crs = CRS.from_user_input(later.crs)
        meta = np.full((len(META_BANDS), h, w), np.nan, np.float32)
        reproject(rasterio.band(ds, META_BANDS), meta, src_transform=ds.transform, src_crs=ds.crs,
                  src_nodata=np.nan, dst_transform=dst_t, dst_crs=dst_crs, dst_nodata=np.nan,
                  resampling=Resampling.nearest, tolerance=0)
        probs = np.full((k, h, w), np.nan, np.float32)
        reproject(rasterio.band(ds, prob_bands(k)), probs, src_transform=ds.transform, src_crs=ds.crs,
                  src_nodata=np.nan, dst_transform=dst_t, dst_crs=dst_crs, dst_nodata=np.nan,
                  resampling=Resampling.bilinear, tolerance=0)
        return meta, probs

    def _values(self, meta: np.ndarray, probs: np.ndarray, scene_of: np.ndarray,
                same_of: np.ndarray) -> DateValues:
        n = meta.shape[1] * meta.shape[2]
        status = meta[B_STATUS - 1].reshape(n)
        status = np.where(np.isfinite(status), status, SRC_MISSING).astype(np.int8)
        label = meta[B_LABEL - 1].reshape(n)
        label = np.where(np.isfinite(label) & (status == SRC_OK), label, -1).astype(np.int16)
        pr = probs.reshape(probs.shape[0], n)
        idx = np.arange(n)
        p = np.where(label >= 0, pr[np.maximum(label, 0), idx], np.nan).astype(np.float32)
        with np.errstate(invalid="ignore"):
            p_int = np.where(label >= 0, np.nansum(pr[self.interest], axis=0), np.nan).astype(np.float32)
        src_i = meta[B_ROW - 1].reshape(n)
        src_j = meta[B_COL - 1].reshape(n)
        src_i = np.where(np.isfinite(src_i), src_i, -1).astype(np.int32)
        src_j = np.where(np.isfinite(src_j), src_j, -1).astype(np.int32)
        scene = scene_of.reshape(n).copy()
        scene[status == SRC_MISSING] = -1
        aoi = meta[B_AOI - 1].reshape(n)
        aoi = np.where(np.isfinite(aoi), aoi, -1).astype(np.int32)
        return DateValues(status, label, p, p_int, meta[B_CLOUD - 1].reshape(n).astype(np.float32),
                          aoi, scene, src_i, src_j, same_of.reshape(n))


def _rank(status: np.ndarray) -> np.ndarray:
    """Preference among sources: assessed 2, not assessed 1, no window 0."""
    s = np.where(np.isfinite(status), status, SRC_MISSING)  # NaN: no window
    return np.where(s == SRC_OK, 2, np.where(s > SRC_MISSING, 1, 0))
