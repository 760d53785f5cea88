"""The files of a change folder, written chunk by chunk as the windows are compared:
``changes.parquet``, one change COG per later scene, ``changes.geojson`` and the
``change_summary.json`` totals.

- ``<stem>.change.tif``: one pixel per later window (the window grid's transform, the scene's
  CRS), uint8 codes `vision.contracts.changes.CHANGE_CODES` (255 where no window) with a colour
  table and the code names as tags.
- ``changes.geojson`` (RFC 7946: WGS 84 longitude/latitude, no ``crs`` member): one polygon per
  window whose transition is a change (appeared, disappeared, changed), with both dates'
  classes, probabilities, times and items. A window across the antimeridian is split into a
  MultiPolygon.
- ``change_summary.json``: per AOI (or the whole area), windows and hectares of every outcome,
  hectares per class of interest, and of first appearance per date. Hectares are those of each
  window's cell (its stride-sized share, so overlapping windows are not counted twice) inside
  the scene, the AOI, and not already counted for an earlier scene of the later job; measured
  in the scene's projected CRS, or in an equal-area projection for geographic and Mercator
  CRSs (`vision.geo.intersection_hectares`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
import shapely
import shapely.affinity
from pyproj import Transformer
from rasterio.windows import Window

from inference.change.arrow import from_numpy, table_rows
from inference.change.jobs import Job, SceneGrid
from inference.change.rules import OUT_OK, OUT_UNCERTAIN
from inference.change.table import Chunk, window_bounds
from vision.atomic import atomic_path
from vision.contracts.changes import (
    APPEARED,
    CHANGE_CODES,
    CHANGE_COLOURS,
    CHANGE_RASTER_NODATA,
    CHANGE_SCHEMA,
    CHANGE_TRANSITIONS,
    CHANGED,
    DISAPPEARED,
    PERSISTED,
    STATUS_NOT_ASSESSED,
    STATUS_UNCERTAIN,
    TRANSITIONS,
)
from vision.raster import gdal_env

OUTCOMES: tuple[str, ...] = (*TRANSITIONS, STATUS_UNCERTAIN, STATUS_NOT_ASSESSED)
_T = {t: k for k, t in enumerate(TRANSITIONS)}
ALL_AREA = "(all)"


def outcome_codes(chunk: Chunk) -> np.ndarray:
    """Per window, its `CHANGE_CODES` value."""
    out = chunk.outcome
    code = np.where(out.status == OUT_OK, out.transition, CHANGE_CODES[STATUS_NOT_ASSESSED])
    return np.where(out.status == OUT_UNCERTAIN, CHANGE_CODES[STATUS_UNCERTAIN], code).astype(np.uint8)


def stem_for(scene: SceneGrid, taken: set[str]) -> str:
    """A file stem for a later scene's change raster (its item id, made safe and unique)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in scene.item_id).strip("._") or "scene"
    stem, k = safe[:120], 1
    while stem in taken:
        k += 1
        stem = f"{safe[:110]}-{k}"
    taken.add(stem)
    return stem


class ChangeRaster:
    """A later scene's change raster, written window by window, made a COG at the end."""

    def __init__(self, scene: SceneGrid, folder: Path, stem: str):
        self.scene, self.path = scene, folder / f"{stem}.change.tif"
        self.tmp = folder / f".{stem}.change.work.tif"
        profile = {"driver": "GTiff", "width": scene.cols, "height": scene.rows, "count": 1, "dtype": "uint8",
                   "crs": scene.crs, "transform": scene.cell_transform, "nodata": CHANGE_RASTER_NODATA}
        with gdal_env():
            self.ds = rasterio.open(self.tmp, "w", **profile)
            for r0 in range(0, scene.rows, 256):
                h = min(256, scene.rows - r0)
                self.ds.write(np.full((h, scene.cols), CHANGE_RASTER_NODATA, np.uint8), 1,
                              window=Window(0, r0, scene.cols, h))

    def write(self, i0: int, i1: int, j0: int, j1: int, i: np.ndarray, j: np.ndarray, code: np.ndarray) -> None:
        block = np.full((i1 - i0, j1 - j0), CHANGE_RASTER_NODATA, np.uint8)
        block[i - i0, j - j0] = code
        with gdal_env():
            self.ds.write(block, 1, window=Window(j0, i0, j1 - j0, i1 - i0))

    def finish(self) -> Path:
        from rasterio.shutil import copy as rio_copy

        names = {v: k for k, v in CHANGE_CODES.items()}
        with gdal_env():
            self.ds.write_colormap(1, {**{v: CHANGE_COLOURS[k] for k, v in CHANGE_CODES.items()},
                                       CHANGE_RASTER_NODATA: (0, 0, 0, 0)})
            self.ds.update_tags(1, **{f"class_{v}": names[v] for v in sorted(names)})
            self.ds.set_band_description(1, "change")
            self.ds.close()
            with atomic_path(self.path) as tmp:
                rio_copy(str(self.tmp), str(tmp), driver="COG", COMPRESS="DEFLATE", BLOCKSIZE=256,
                         OVERVIEW_RESAMPLING="NEAREST")
        self.tmp.unlink()
        return self.path


def _ring_lonlat(tr: Transformer, minx: np.ndarray, miny: np.ndarray, maxx: np.ndarray,
                 maxy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes and latitudes of the windows' rings (``n x 9``: corners and edge midpoints)."""
    xs = np.stack([minx, (minx + maxx) / 2, maxx, maxx, maxx, (minx + maxx) / 2, minx, minx, minx], 1)
    ys = np.stack([maxy, maxy, maxy, (miny + maxy) / 2, miny, miny, miny, (miny + maxy) / 2, maxy], 1)
    lon, lat = tr.transform(xs.ravel(), ys.ravel())
    return np.asarray(lon).reshape(xs.shape), np.asarray(lat).reshape(xs.shape)


def rfc7946_geometry(lon: np.ndarray, lat: np.ndarray) -> dict[str, Any]:
    """A ring in WGS 84 as an RFC 7946 Polygon, or a MultiPolygon split at the antimeridian."""
    if lon.max() - lon.min() <= 180:
        return {"type": "Polygon", "coordinates": [[[round(float(x), 7), round(float(y), 7)]
                                                    for x, y in zip(lon, lat, strict=True)]]}
    unwrapped = shapely.Polygon(np.column_stack([np.where(lon < 0, lon + 360, lon), lat]))
    west = unwrapped.intersection(shapely.box(-180, -90, 180, 90))
    east = shapely.affinity.translate(unwrapped.intersection(shapely.box(180, -90, 540, 90)), xoff=-360)
    parts = [g for g in (west, east) if not g.is_empty and g.area > 0]
    return {"type": "MultiPolygon", "coordinates": [
        [[[round(x, 7), round(y, 7)] for x, y in p.exterior.coords]] for p in parts]}


class GeoJsonWriter:
    """Streams the change features into ``changes.geojson``."""

    def __init__(self, path: Path, name: str):
        self.path = path
        self.f: TextIO = path.open("w", encoding="utf-8")
        self.f.write(json.dumps({"type": "FeatureCollection", "name": name})[:-1] + ', "features": [\n')
        self.n = 0
        self.bbox = [np.inf, np.inf, -np.inf, -np.inf]

    def add(self, chunk: Chunk, table: pa.Table) -> None:
        change = np.isin(chunk.outcome.transition, [_T[t] for t in CHANGE_TRANSITIONS]) & \
            (chunk.outcome.status == OUT_OK)
        if not change.any():
            return
        s = chunk.scene
        idx = np.flatnonzero(change)
        rows: list[dict[str, Any]] = table_rows(table.take(from_numpy(idx, pa.int64())), [
            "change_id", "transition", "class_before", "class_after", "p_before", "p_after",
            "acquired_before", "acquired_after", "item_before", "item_after", "aoi_id", "area_ha",
            "row_off", "col_off", "first_appeared"])
        r, c = chunk.i[idx].astype(np.int64) * s.stride[0], chunk.j[idx].astype(np.int64) * s.stride[1]
        minx, miny, maxx, maxy = window_bounds(s.transform, r, c, s.size[0], s.size[1])
        tr = Transformer.from_crs(s.crs, "EPSG:4326", always_xy=True)
        lon, lat = _ring_lonlat(tr, minx, miny, maxx, maxy)
        for k, props in enumerate(rows):
            for key in ("acquired_before", "acquired_after", "first_appeared"):
                props[key] = props[key].isoformat().replace("+00:00", "Z") if props[key] else None
            for key in ("p_before", "p_after"):
                props[key] = round(props[key], 4) if props[key] is not None else None
            props["area_ha"] = round(props["area_ha"], 4)
            feat = {"type": "Feature", "id": props["change_id"], "properties": props,
                    "geometry": rfc7946_geometry(lon[k], lat[k])}
            self.f.write((",\n" if self.n else "") + json.dumps(feat))
            self.n += 1
        w, so, e, n = float(lon.min()), float(lat.min()), float(lon.max()), float(lat.max())
        self.bbox = [min(self.bbox[0], w), min(self.bbox[1], so), max(self.bbox[2], e), max(self.bbox[3], n)]

    def close(self) -> None:
        bbox = [round(v, 7) for v in self.bbox] if self.n else None
        self.f.write("\n]" + (f', "bbox": {json.dumps(bbox)}' if bbox else "") + "}\n")
        self.f.close()


class Summary:
    """Windows and hectares per AOI and outcome, per class of interest, per first-appearance date."""

    def __init__(self, jobs: list[Job], interest: list[str]):
        self.jobs = jobs
        self.interest = interest
        self.windows: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0))
        self.hectares: dict[str, dict[str, float]] = defaultdict(lambda: dict.fromkeys(OUTCOMES, 0.0))
        self.by_class: dict[str, dict[str, dict[str, float]]] = defaultdict(
            lambda: {c: dict.fromkeys((APPEARED, DISAPPEARED, PERSISTED, CHANGED), 0.0) for c in interest})
        self.first: dict[str, dict[int, float]] = defaultdict(dict)
        self.declared: list[str] = []

    def add(self, chunk: Chunk) -> None:
        out = chunk.outcome
        name = np.where(out.status == OUT_OK, out.transition,
                        np.where(out.status == OUT_UNCERTAIN, len(TRANSITIONS), len(TRANSITIONS) + 1))
        keys = np.array([a if a is not None else ALL_AREA for a in chunk.aoi], dtype=object)
        classes = self.jobs[0].classes
        b, a = chunk.dates[0], chunk.dates[-1]
        for key in np.unique(keys) if len(keys) else []:
            m = keys == key
            counts = np.bincount(name[m], minlength=len(OUTCOMES))
            ha = np.bincount(name[m], weights=chunk.area_ha[m], minlength=len(OUTCOMES))
            for k, o in enumerate(OUTCOMES):
                self.windows[key][o] += int(counts[k])
                self.hectares[key][o] += float(ha[k])
            for t, lab in ((APPEARED, a.label), (DISAPPEARED, b.label), (PERSISTED, a.label), (CHANGED, a.label)):
                sel = m & (out.status == OUT_OK) & (out.transition == _T[t])
                for lk in np.unique(lab[sel]):
                    cname = classes[int(lk)]
                    if cname in self.by_class[key]:
                        self.by_class[key][cname][t] += float(chunk.area_ha[sel & (lab == lk)].sum())
            for d in np.unique(chunk.traj.first_appeared[m]):
                if d >= 0:
                    sel = m & (chunk.traj.first_appeared == d)
                    self.first[key][int(d)] = self.first[key].get(int(d), 0.0) + float(chunk.area_ha[sel].sum())

    def to_obj(self, date_labels: list[str]) -> dict[str, Any]:
        def entry(key: str) -> dict[str, Any]:
            ha = self.hectares[key]
            return {
                "aoi_id": None if key == ALL_AREA else key,
                "windows": dict(self.windows[key]),
                "hectares": {**{k: round(v, 4) for k, v in ha.items()}, "total": round(sum(ha.values()), 4)},
                "hectares_by_class": {c: {t: round(v, 4) for t, v in d.items()}
                                      for c, d in self.by_class[key].items()},
                "hectares_first_appeared": {date_labels[d]: round(v, 4) for d, v in sorted(self.first[key].items())},
            }

        keys = sorted(set(self.windows) | set(self.declared), key=lambda k: (k == ALL_AREA, k))
        return {"areas": [entry(k) for k in keys]}


class ParquetOut:
    """``changes.parquet``, a row group per chunk."""

    def __init__(self, path: Path):
        self.path = path
        self.writer = pq.ParquetWriter(path, CHANGE_SCHEMA, compression="zstd")
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        if table.num_rows:
            self.writer.write_table(table)
            self.rows += table.num_rows

    def close(self) -> None:
        self.writer.close()
