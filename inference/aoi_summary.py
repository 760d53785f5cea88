"""``aoi_summary.json``: per area of interest and class, windows and hectares, and the hectares
not assessed (nodata, cloudy, error), from a job's prediction table.

How hectares are counted (so that they add up to the area's):

- Each window owns its *cell* (`inference.tiling`: the stride-sized part centred on it, the
  first and last cells of a row or column stretched to the scene's edges), so overlapping
  windows (stride < window) never count the same ground twice, and the cells of a scene tile
  it exactly. A window's hectares in an area are those of its cell inside the area.
- Where scenes overlap, each piece of ground is counted for the first scene (in the order
  given: the plan's) whose footprint covers it; a later scene's windows there still count as
  windows, with the hectares left to the first.
- A window counts in every area its interior meets (the row's ``aoi_id`` is the first of them,
  ARCHITECTURE.md §5), so an area's numbers do not depend on the order of the file.
- Areas are measured in the scene's projected CRS, or, for geographic (and Mercator) scenes, in
  a Lambert azimuthal equal-area projection centred on the area (`vision.geo.
  intersection_hectares`). An area's ``area_ha`` is the sum of its parts so measured in each
  scene, plus its part outside every scene measured the same way in the AOI file's CRS.

So, per area: ``sum(classes hectares) + sum(not_assessed hectares) + uncovered_ha ==
area_ha``, where ``uncovered_ha`` is the ground under no window row of the table (outside
every scene, or windows missing from the table).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import shapely
import shapely.affinity
from affine import Affine
from pyproj import CRS
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from shapely.geometry.base import BaseGeometry

from inference.aoi import AreasOfInterest, clip_to_scene, meeting
from inference.tiling import TileGrid
from vision import geo
from vision.atomic import write_json_atomic
from vision.contracts.predictions import NOT_ASSESSED, STATUS_OK
from vision.geo import Aoi

SUMMARY_VERSION = 1
#: Areas shown in the table at the end of a run (all of them are in the JSON).
MAX_SHOWN = 20
_COLUMNS = ("path", "row_off", "col_off", "height", "width", "status", "class_name")


@dataclass(frozen=True)
class SceneGrid:
    """What the summary needs of a scene: its CRS, the transform of the grid its windows are
    in, and the grid (scene size, window size, stride)."""

    crs: Any
    transform: Affine | tuple[float, ...]
    grid: TileGrid

    @property
    def affine(self) -> Affine:
        t = self.transform
        return t if isinstance(t, Affine) else Affine(*t[:6])


def cell_rects(grid: TileGrid, row_off: np.ndarray, col_off: np.ndarray) -> np.ndarray:
    """``(row_off, col_off, height, width)`` of each window's cell (float pixels), as
    `TileGrid.cell_index` draws them."""
    out = np.empty((len(row_off), 4), dtype=np.float64)
    for axis, off in ((0, row_off), (1, col_off)):
        size, stride = grid.size[axis], grid.stride[axis]
        n, extent = (grid.rows, grid.height) if axis == 0 else (grid.cols, grid.width)
        k = np.asarray(off, dtype=np.int64) // stride
        lo = (size - stride) / 2 + k * stride
        hi = lo + stride
        lo = np.where(k == 0, 0.0, lo)
        hi = np.where(k >= n - 1, float(extent), hi)
        out[:, axis] = lo
        out[:, axis + 2] = hi - lo
    return out


def cell_hectares(cells: np.ndarray, geom: BaseGeometry, crs: Any) -> np.ndarray:
    """`vision.geo.intersection_hectares` of each cell in ``geom``, without intersecting the
    cells wholly inside it with its many vertices (`vision.geo.polygon_hectares`)."""
    out = np.zeros(len(cells))
    shapely.prepare(geom)
    inside = shapely.contains_properly(geom, cells)
    if inside.any():
        out[inside] = geo.polygon_hectares(cells[inside], crs)
    if (~inside).any():
        out[~inside] = geo.intersection_hectares(cells[~inside], geom, crs)
    return out


def footprint_in(fp: BaseGeometry, crs: Any, base: Any) -> BaseGeometry:
    """A scene's footprint in the AOI file's CRS; in lon/lat, one across the antimeridian is
    unwrapped past 180° and, like one reaching past ±180°, also shifted by 360° to where the
    areas' coordinates are."""
    out = geo.reproject(fp, crs, base)
    b = base if isinstance(base, CRS) else CRS.from_user_input(str(base))
    if not b.is_geographic:
        return out
    if out.bounds[2] - out.bounds[0] > 180:
        out = shapely.transform(out, lambda xy: np.column_stack([np.where(xy[:, 0] < 0, xy[:, 0] + 360, xy[:, 0]),
                                                                 xy[:, 1]]))
    minx, _, maxx, _ = out.bounds
    shifted = [shapely.affinity.translate(out, xoff=d) for d, past in ((-360.0, maxx > 180), (360.0, minx < -180))
               if past]
    return shapely.union_all([out, *shifted]) if shifted else out


def _keys(status: np.ndarray, class_name: np.ndarray) -> np.ndarray:
    """Per row: its class (``ok``) or ``\\0status`` (not assessed)."""
    names = np.array(["?" if c is None else str(c) for c in class_name], dtype=object)
    return np.where(status == STATUS_OK, names, np.array(["\0" + str(s) for s in status], dtype=object))


class _Tally:
    def __init__(self, classes: Sequence[str]):
        self.rows: dict[str, list[float]] = {c: [0, 0.0] for c in classes}
        self.na: dict[str, list[float]] = {s: [0, 0.0] for s in NOT_ASSESSED}
        self.area = 0.0
        self.windows = 0
        self.scenes: list[str] = []

    def add(self, keys: np.ndarray, hectares: np.ndarray) -> None:
        self.windows += len(keys)
        for key in np.unique(keys).tolist() if len(keys) else []:
            m = keys == key
            target = self.na if key.startswith("\0") else self.rows
            slot = target.setdefault(key.lstrip("\0"), [0, 0.0])
            slot[0] += int(m.sum())
            slot[1] += float(hectares[m].sum())

    def to_obj(self, aoi_id: str) -> dict[str, Any]:
        assessed = sum(v[1] for v in self.rows.values())
        not_assessed = sum(v[1] for v in self.na.values())
        total = assessed + not_assessed
        return {
            "aoi_id": aoi_id, "area_ha": round(self.area, 4), "windows": self.windows,
            "assessed_ha": round(assessed, 4), "not_assessed_ha": round(not_assessed, 4),
            "total_ha": round(total, 4), "uncovered_ha": round(max(0.0, self.area - total), 4),
            "classes": {c: {"windows": int(v[0]), "hectares": round(v[1], 4)}
                        for c, v in sorted(self.rows.items(), key=lambda kv: -kv[1][1])},
            "not_assessed": {s: {"windows": int(v[0]), "hectares": round(v[1], 4)} for s, v in self.na.items()},
            "scenes": self.scenes,
        }


def summarise(table: pa.Table, aois: AreasOfInterest, scenes: Mapping[str, SceneGrid],
              classes: Sequence[str] = ()) -> dict[str, Any]:
    """The ``aoi_summary.json`` object of a job (see the module's docstring for the rules).

    Args:
        table: the job's prediction table (at least the columns path, row_off, col_off,
            height, width, status, class_name); rows without a window (whole files) and rows
            of scenes not in ``scenes`` are left out (counted in ``ignored_rows``).
        aois: the job's areas of interest.
        scenes: per scene ``path`` (as in the table), its grid, in the plan's order.
        classes: the model's classes, listed (with zeros) even where no window has them.
    """
    t = table.select(list(_COLUMNS))
    windowed = t.filter(pc.is_valid(t.column("row_off")))
    used = 0
    tallies = [_Tally(classes) for _ in aois.aois]
    done: list[BaseGeometry] = []  # earlier footprints, in the AOI file's CRS
    paths = windowed.column("path")
    for path, s in scenes.items():
        fp = geo.footprint(s.crs, s.affine, s.grid.width, s.grid.height)
        fp_aoi = footprint_in(fp, s.crs, aois.crs)
        rows = windowed.filter(pc.equal(paths, pa.scalar(path, pa.string())))
        used += rows.num_rows
        wins = np.stack([rows.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                         for c in ("row_off", "col_off", "height", "width")], axis=1) if rows.num_rows else \
            np.zeros((0, 4))
        keys = _keys(rows.column("status").to_numpy(zero_copy_only=False),
                     rows.column("class_name").to_numpy(zero_copy_only=False))
        cells = geo.window_polygons(s.affine, cell_rects(s.grid, wins[:, 0], wins[:, 1]))  # type: ignore[arg-type]
        earlier = shapely.union_all(done) if done else None
        for (k, part) in aois.parts(s.crs, s.affine, s.grid.height, s.grid.width):
            a, tally = aois.aois[k], tallies[k]
            tally.scenes.append(path)
            counted: BaseGeometry | None = part
            if earlier is not None:
                own = a.geometry.difference(earlier)
                counted = clip_to_scene(Aoi(a.id, own), aois.crs, s.crs, fp) if not own.is_empty else None
            hit = meeting(wins, s.affine, part)
            ha = np.zeros(len(hit))
            if counted is not None:
                tally.area += geo.area_hectares(counted, s.crs)
                if len(hit):
                    ha = cell_hectares(cells[hit], counted, s.crs)
            tally.add(keys[hit], ha)
        done.append(fp_aoi)
    covered = shapely.union_all(done) if done else None
    for a, tally in zip(aois.aois, tallies, strict=True):
        outside = a.geometry.difference(covered) if covered is not None else a.geometry
        if not outside.is_empty and outside.area > 0:
            tally.area += geo.area_hectares(outside, aois.crs)
    return {
        "version": SUMMARY_VERSION, "aoi_file": aois.path, "crs": aois.crs.to_string(),
        "id_field": aois.id_field,
        "hectares": "each window's stride cell inside the area, counted once (first scene); measured in the "
                    "scene's projected CRS, or an equal-area projection for geographic scenes",
        "aois": [tl.to_obj(a.id) for a, tl in zip(aois.aois, tallies, strict=True)],
        "problems": [str(e) for e in aois.problems], "unmatched": aois.unmatched(),
        "ignored_rows": t.num_rows - used,
    }


def write_summary(path: str | Path, summary: dict[str, Any]) -> Path:
    """Write ``aoi_summary.json`` atomically; returns its path."""
    p = Path(path)
    write_json_atomic(p, summary)
    return p


def _ha(v: float) -> str:
    return f"{v:,.1f}"


def render_summary(summary: dict[str, Any], console: Console, max_shown: int = MAX_SHOWN) -> None:
    """The table printed at the end of a run: per area, its classes and what was not assessed
    (every string from the AOI file or the model escaped)."""
    table = Table(title="areas of interest (hectares)", show_lines=False)
    for name, justify in (("AOI", "left"), ("class / not assessed", "left"), ("windows", "right"),
                          ("hectares", "right"), ("share", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    shown = summary["aois"][:max_shown]
    for a in shown:
        area = a["area_ha"] or 1.0
        first = True
        for name, v in a["classes"].items():
            if v["windows"] or v["hectares"]:
                table.add_row(escape(a["aoi_id"]) if first else "", escape(name), f"{v['windows']:,}",
                              _ha(v["hectares"]), f"{100 * v['hectares'] / area:.1f} %")
                first = False
        for name, v in a["not_assessed"].items():
            if v["windows"] or v["hectares"]:
                table.add_row(escape(a["aoi_id"]) if first else "", f"[dim]{escape(name)} (not assessed)[/dim]",
                              f"{v['windows']:,}", _ha(v["hectares"]), f"{100 * v['hectares'] / area:.1f} %")
                first = False
        if a["uncovered_ha"] > 0.005 * area:
            table.add_row(escape(a["aoi_id"]) if first else "", "[dim]under no window[/dim]", "",
                          _ha(a["uncovered_ha"]), f"{100 * a['uncovered_ha'] / area:.1f} %")
            first = False
        table.add_row(escape(a["aoi_id"]) if first else "", "[bold]area[/bold]", f"{a['windows']:,}",
                      f"[bold]{_ha(a['area_ha'])}[/bold]", "", end_section=True)
    console.print(table)
    rest = len(summary["aois"]) - len(shown)
    if rest > 0:
        console.print(f"  ({rest} more areas in aoi_summary.json)", highlight=False)
