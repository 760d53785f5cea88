"""Areas of interest for `vision infer --aoi FILE`: which windows of a scene to read, and the
``aoi_id`` of each.

- `AreasOfInterest.load` reads a GeoJSON or GeoPackage file (`vision.geo.read_aoi`: pyogrio,
  any CRS, polygons and multipolygons). The id of each area is the value of ``--aoi-field``;
  without it, of the first field named ``id``, else ``name`` (exact spelling first, then any
  case), else the feature's 0-based index in the file. A feature that is not a valid, non-empty
  (multi)polygon is refused with an `AoiFeatureError` (in `AreasOfInterest.problems`: the job
  runs with the other areas and reports each refusal); an unusable file raises `AoiError`.
- `AreasOfInterest.select` takes one scene's CRS, transform, size and window rectangles and
  returns a `WindowSelection`: a boolean mask of the windows whose interior meets an area
  (touching is not meeting; the part of an edge window past the scene does not count), and
  each kept window's area (the first in file order, ARCHITECTURE.md §5). The test is
  vectorised (shapely 2: the windows in an R-tree, each area prepared, a bounding-box
  pre-filter in pixel space), so the caller never builds or reads the windows it drops.
- `AreasOfInterest.no_overlap_error`, after every scene has been selected: the areas that
  overlap no input, as one `AoiOverlapError` naming them (an area in another hemisphere).

The hectares per area and class (``aoi_summary.json``) are in `inference.aoi_summary`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
import shapely.affinity
from affine import Affine
from pyproj import CRS
from shapely.geometry.base import BaseGeometry

from vision import geo
from vision.geo import Aoi, AoiError

#: Fields tried, in order, for the areas' ids when ``--aoi-field`` is not given.
DEFAULT_ID_FIELDS = ("id", "name")
#: Areas named in one error message (the rest are counted).
MAX_NAMED = 20

__all__ = ["DEFAULT_ID_FIELDS", "AoiError", "AoiFeatureError", "AoiOverlapError", "AreasOfInterest",
           "WindowSelection"]


class AoiFeatureError(AoiError):
    """One feature of an AOI file is not a valid, non-empty Polygon or MultiPolygon."""

    def __init__(self, path: str, feature: str, reason: str):
        super().__init__(_one_line(f"--aoi {path}: feature {feature}: {reason}"))
        self.path, self.feature, self.reason = path, feature, reason


class AoiOverlapError(AoiError):
    """Areas of interest that overlap none of the job's inputs."""

    def __init__(self, path: str, ids: Sequence[str]):
        named = ", ".join(repr(i) for i in ids[:MAX_NAMED])
        more = f" and {len(ids) - MAX_NAMED} more" if len(ids) > MAX_NAMED else ""
        noun = "area overlaps" if len(ids) == 1 else "areas overlap"
        super().__init__(_one_line(f"--aoi {path}: {len(ids)} {noun} no input: {named}{more} "
                                   "(check the file's CRS and that the inputs cover them)"))
        self.path, self.ids = path, tuple(ids)


def _one_line(text: str) -> str:
    return " ".join(text.splitlines())


@dataclass(frozen=True)
class WindowSelection:
    """The windows of one scene that meet an area of interest.

    Attributes:
        keep: per window (in the order given), whether it meets an area: read only those.
        aoi_index: per window, the index in `AreasOfInterest.ids` of the first area it meets,
            -1 where none.
        ids: the areas' ids (`AreasOfInterest.ids`), for `aoi_id`.
    """

    keep: np.ndarray
    aoi_index: np.ndarray
    ids: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.keep)

    @property
    def n_kept(self) -> int:
        return int(self.keep.sum())

    def aoi_id(self, k: int) -> str | None:
        """The ``aoi_id`` of window ``k`` (``None`` for a window that is not kept)."""
        i = int(self.aoi_index[k])
        return self.ids[i] if i >= 0 else None

    def aoi_ids(self) -> list[str | None]:
        """The ``aoi_id`` of every window."""
        return [self.ids[i] if i >= 0 else None for i in self.aoi_index.tolist()]


@dataclass
class AreasOfInterest:
    """The usable areas of an AOI file, and which of them the job's scenes have met.

    Attributes:
        path: the file, as given.
        crs: its CRS (GeoJSON without one: WGS 84).
        aois: the usable areas, in file order.
        id_field: the field the ids come from (``None``: the feature index).
        problems: the refused features, one error each (the job reports them and exits 1).
    """

    path: str
    crs: CRS
    aois: tuple[Aoi, ...]
    id_field: str | None = None
    problems: tuple[AoiFeatureError, ...] = ()
    _matched: set[int] = field(default_factory=set, repr=False)
    _parts: dict[tuple[Any, ...], list[tuple[int, BaseGeometry]]] = field(default_factory=dict, repr=False)
    _moved: dict[str, tuple[Aoi, ...]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def load(cls, path: str | Path, id_field: str | None = None) -> AreasOfInterest:
        """Read an AOI file (GeoJSON or GeoPackage, any CRS).

        Args:
            id_field: the field holding each area's id (values set and unique); default: the
                first of `DEFAULT_ID_FIELDS` the file has, else the feature index.

        Raises:
            AoiError: the file is missing, unreadable, not GeoJSON/GeoPackage, empty, without a
                CRS (GeoPackage), without ``id_field``, with duplicate ids, or has no usable
                feature; one line naming the file.
        """
        p = str(path)
        chosen = id_field or _default_field(Path(p))
        try:
            found = geo.read_aoi(p, id_field=chosen)
        except AoiError as exc:
            hint = "" if id_field or not chosen else f" (ids from field {chosen!r}; choose another with --aoi-field)"
            raise AoiError(_one_line(f"--aoi {exc}{hint}")) from exc
        except Exception as exc:  # a CRS pyproj cannot parse, a broken WKB, ...: still one line
            raise AoiError(_one_line(f"--aoi {p}: unreadable AOI file ({type(exc).__name__}: {exc})")) from exc
        problems = tuple(AoiFeatureError(p, q.feature, q.reason) for q in found.problems)
        return cls(p, found.crs, found.aois, chosen, problems)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(a.id for a in self.aois)

    def parts(self, crs: Any, transform: Affine | Sequence[float], height: int,
              width: int) -> list[tuple[int, BaseGeometry]]:
        """The areas over a scene: ``(index, the area's part inside the scene, in its CRS)``,
        in file order; remembered per scene grid, and the areas marked as matched."""
        t = transform if isinstance(transform, Affine) else Affine(*transform[:6])
        key = (str(crs), tuple(t)[:6], int(height), int(width))
        with self._lock:
            if key in self._parts:
                return self._parts[key]
        fp = geo.footprint(crs, t, width, height)
        out = []
        base, areas = self._areas_for(crs)
        for k in self._near(fp, crs, base, areas):
            part = clip_to_scene(areas[k], base, crs, fp)
            if part is not None:
                out.append((k, part))
        with self._lock:
            self._parts[key] = out
            self._matched.update(k for k, _ in out)
        return out

    def _areas_for(self, crs: Any) -> tuple[CRS, tuple[Aoi, ...]]:
        """The areas in the CRS a scene is clipped in: the file's, except that areas in a
        projected CRS are first taken to a geographic scene's CRS (a lon/lat footprint as wide
        as the world has no coordinates in, say, a UTM zone; the areas always have lon/lat)."""
        scene_crs = crs if isinstance(crs, CRS) else CRS.from_user_input(str(crs))
        if self.crs.is_geographic or not scene_crs.is_geographic:
            return self.crs, self.aois
        key = scene_crs.to_wkt()
        with self._lock:
            if key not in self._moved:
                self._moved[key] = tuple(Aoi(a.id, geo.reproject(a.geometry, self.crs, scene_crs))
                                         for a in self.aois)
            return scene_crs, self._moved[key]

    def _near(self, fp: BaseGeometry, crs: Any, base: CRS, areas: Sequence[Aoi]) -> list[int]:
        """The areas whose bounding box meets the footprint's in the ``base`` CRS (all of them
        when a lon/lat footprint reaches past or across ±180°: `clip_to_scene` decides)."""
        minx, miny, maxx, maxy = geo.reproject(fp, crs, base).bounds
        if base.is_geographic and (maxx - minx > 180 or maxx > 180 or minx < -180):
            return list(range(len(areas)))
        bounds = np.array([a.geometry.bounds for a in areas]).reshape(-1, 4)
        near = (bounds[:, 0] <= maxx) & (bounds[:, 2] >= minx) & (bounds[:, 1] <= maxy) & (bounds[:, 3] >= miny)
        return np.flatnonzero(near).tolist()

    def select(self, crs: Any, transform: Affine | Sequence[float], height: int, width: int,
               windows: Sequence[tuple[int, int, int, int]] | np.ndarray) -> WindowSelection:
        """Which windows of a scene meet an area, and the first area each meets.

        Args:
            crs: the scene's CRS (EPSG code, WKT or `pyproj.CRS`).
            transform: the affine transform of the grid the windows are in.
            height, width: the grid's size in pixels.
            windows: ``(row_off, col_off, height, width)`` per window, in pixels of that grid.
        """
        w = np.asarray(windows, dtype=np.float64).reshape(-1, 4)
        index = np.full(len(w), -1, dtype=np.int32)
        parts = self.parts(crs, transform, height, width)
        if len(w) and parts:
            t = transform if isinstance(transform, Affine) else Affine(*transform[:6])
            index = first_match(w, t, [g for _, g in parts], np.asarray([k for k, _ in parts]))
        return WindowSelection(index >= 0, index, self.ids)

    def unmatched(self) -> list[str]:
        """The areas that no selected scene overlaps (so far), in file order."""
        with self._lock:
            return [a.id for k, a in enumerate(self.aois) if k not in self._matched]

    def no_overlap_error(self) -> AoiOverlapError | None:
        """After every scene was selected: the areas over no input as one error, or ``None``."""
        ids = self.unmatched()
        return AoiOverlapError(self.path, ids) if ids else None

    def to_manifest(self) -> dict[str, Any]:
        """What the manifest records about the AOI file."""
        return {"path": self.path, "crs": self.crs.to_string(), "id_field": self.id_field,
                "ids": list(self.ids), "problems": [str(e) for e in self.problems],
                "unmatched": self.unmatched()}


def clip_to_scene(area: Aoi, area_crs: CRS, scene_crs: Any, fp: BaseGeometry) -> BaseGeometry | None:
    """The part of an area over a scene's footprint, in the scene's CRS (``None``: none).

    In the scene's own CRS no reprojection is needed: the area is clipped as it is and, for
    lon/lat footprints reaching past ±180°, shifted by ±360° too. Otherwise
    `vision.geo.aoi_in_scene` (which takes a footprint wider than 180° in lon/lat for one
    across the antimeridian, so is not used for a world-wide scene in the area's CRS).
    """
    s_crs = scene_crs if isinstance(scene_crs, CRS) else CRS.from_user_input(str(scene_crs))
    if not area_crs.equals(s_crs):
        return geo.aoi_in_scene(area, area_crs, s_crs, fp)
    shifts = [0.0]
    if s_crs.is_geographic:
        minx, _, maxx, _ = fp.bounds
        shifts += [360.0] * (maxx > 180) + [-360.0] * (minx < -180)
    part = shapely.union_all([shapely.affinity.translate(area.geometry, xoff=d).intersection(fp) for d in shifts])
    return None if part.is_empty or part.area == 0 else part


def _default_field(p: Path) -> str | None:
    """The first of `DEFAULT_ID_FIELDS` among the file's fields (``None``: use the index)."""
    import pyogrio

    if not p.is_file():
        return None  # read_aoi says "not found"
    try:
        names = [str(n) for n in pyogrio.read_info(p).get("fields", [])]
    except Exception:  # an unreadable file: read_aoi says why
        return None
    for want in DEFAULT_ID_FIELDS:
        if want in names:
            return want
        folded = [n for n in names if n.lower() == want]
        if folded:
            return folded[0]
    return None


def window_boxes(windows: np.ndarray) -> np.ndarray:
    """``(row_off, col_off, height, width)`` rows as boxes in pixel space (x = column,
    y = row)."""
    return shapely.box(windows[:, 1], windows[:, 0], windows[:, 1] + windows[:, 3], windows[:, 0] + windows[:, 2])


def to_pixels(geom: BaseGeometry, transform: Affine) -> BaseGeometry:
    """A geometry in a grid's CRS taken to its pixel space (column, row)."""
    inv = ~transform
    return shapely.transform(geom, lambda xy: np.column_stack([inv.a * xy[:, 0] + inv.b * xy[:, 1] + inv.c,
                                                               inv.d * xy[:, 0] + inv.e * xy[:, 1] + inv.f]))


def meets(boxes: np.ndarray, geom: BaseGeometry) -> np.ndarray:
    """Whether each box's interior meets the (prepared) geometry's: intersects, not touches."""
    shapely.prepare(geom)
    hit = shapely.intersects(geom, boxes)
    if hit.any():
        hit[hit] = ~shapely.touches(geom, boxes[hit])
    return np.asarray(hit, dtype=bool)


def meeting(windows: np.ndarray, transform: Affine, geom: BaseGeometry, among: np.ndarray | None = None) -> np.ndarray:
    """Indices of the windows (rows of ``(row_off, col_off, height, width)``, optionally only
    those in ``among``) whose interior meets a geometry in the grid's CRS.

    The geometry is taken to pixel space (an affine map keeps every intersection), where the
    windows are axis-aligned boxes: a window outside its bounding box is dropped by comparing
    numbers, and boxes are built only for the windows left.
    """
    pg = to_pixels(geom, transform)
    minx, miny, maxx, maxy = pg.bounds
    r0, c0 = windows[:, 0], windows[:, 1]
    near = (c0 + windows[:, 3] > minx) & (c0 < maxx) & (r0 + windows[:, 2] > miny) & (r0 < maxy)
    if among is not None:
        near &= among
    cand = np.flatnonzero(near)
    return cand[meets(window_boxes(windows[cand]), pg)] if len(cand) else cand


def first_match(windows: np.ndarray, transform: Affine, geoms: Sequence[BaseGeometry],
                labels: np.ndarray) -> np.ndarray:
    """Per window, the label of the first geometry (in the grid's CRS) whose interior it meets,
    -1 where none (`meeting`)."""
    out = np.full(len(windows), -1, dtype=np.int32)
    for g, label in zip(geoms, labels.tolist(), strict=True):
        out[meeting(windows, transform, g, among=out < 0)] = label
    return out
