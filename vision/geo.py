"""Ground geometry: pixel sizes in metres, the GSD rule, areas of interest, hectares, and
RFC 7946 bounds.

- `pixel_size_m`: a raster's pixel size on the ground, for projected CRSs of any linear unit
  and for geographic CRSs (geodesic distances at the raster's centre).
- `decide_gsd`: read resampled to the model's ground sampling distance when the input's
  differs by more than 10 %; refuse an input coarser than the model by more than 2x (no
  resampling can invent the detail the model relies on) unless overridden.
- `read_aoi`: areas of interest from GeoJSON or GeoPackage (pyogrio; any CRS; polygons and
  multipolygons), each feature checked (`shapely.validation.explain_validity`).
- `aoi_in_scene`, `assign_windows`, `intersection_hectares`: which windows of a grid an AOI
  covers (first match wins), and how many hectares of each window fall inside it.
- `wgs84_bounds`: a window's WGS 84 bounds, west > east when it crosses the antimeridian.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
import shapely
import shapely.affinity
from affine import Affine
from pyproj import CRS, Geod, Transformer
from pyproj.exceptions import CRSError, ProjError
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from vision.errors import InputError
from vision.vector import layer_crs, vector_file

GEOD = Geod(ellps="WGS84")
WGS84 = CRS.from_epsg(4326)
#: Resample when the input's GSD differs from the model's by more than this share.
GSD_TOLERANCE = 0.10
#: Refuse inputs coarser than the model by more than this factor (unless overridden).
MAX_COARSER = 2.0
#: Projected CRSs whose nominal metres are within this share of the ground's are taken as
#: they are (UTM, national grids); others (Web Mercator away from the equator) are measured.
NOMINAL_TOLERANCE = 0.01
MAX_AOI_FEATURES = 100_000
MAX_AOI_BYTES = 256 * 2**20

Window = tuple[int, int, int, int]  # row_off, col_off, height, width


class GsdMismatch(InputError, ValueError):
    """An input's ground sampling distance is too far from the model's to be bridged."""


class AoiError(InputError, ValueError):
    """An area-of-interest file cannot be used (unreadable, empty, no CRS, bad id field)."""


def _crs(crs: Any) -> CRS:
    return crs if isinstance(crs, CRS) else _crs_from_text(crs if isinstance(crs, str) else str(crs))


# Parsing a CRS and building its transformer to WGS 84 cost ~200 us, measuring a pixel ~10 us:
# a folder of georeferenced chips shares a few CRSs, so both are kept per CRS text (pyproj's
# CRS and Transformer are thread-safe since 3.1; chips are probed in a thread pool).
@lru_cache(maxsize=64)
def _crs_from_text(text: str) -> CRS:
    return CRS.from_user_input(text)


@lru_cache(maxsize=64)
def _text_to_lonlat(text: str) -> Transformer | None:
    return _new_to_lonlat(_crs_from_text(text))


def _new_to_lonlat(crs: CRS) -> Transformer | None:
    try:
        return Transformer.from_crs(crs, WGS84, always_xy=True)
    except (CRSError, ProjError):
        return None


def _to_lonlat(crs: Any) -> Transformer | None:
    """A transformer to WGS 84 longitude/latitude (``None`` where there is none); cached per
    CRS text (a `CRS` object, whose hash costs a WKT export, is not cached)."""
    if isinstance(crs, CRS):
        return _new_to_lonlat(crs)
    return _text_to_lonlat(crs if isinstance(crs, str) else str(crs))


def _unit_factor(crs: CRS) -> float:
    """Metres per unit of a projected CRS's first axis."""
    axis = crs.axis_info[0] if crs.axis_info else None
    return float(axis.unit_conversion_factor) if axis is not None and axis.unit_conversion_factor else 1.0


def pixel_size_m(crs: Any, transform: Affine | Sequence[float], width: int, height: int) -> tuple[float, float]:
    """The ground size ``(x, y)`` in metres of a pixel at the raster's centre.

    Projected CRSs: the pixel size times the metres per CRS unit, unless that nominal size
    differs from the geodesic one by more than `NOMINAL_TOLERANCE` (Web Mercator away from the
    equator), when the geodesic size is used. Geographic CRSs: geodesic distances across the
    centre pixel on the WGS 84 ellipsoid.
    """
    c = _crs(crs)
    t = transform if isinstance(transform, Affine) else Affine(*transform[:6])
    nominal = (math.hypot(t.a, t.d), math.hypot(t.b, t.e))
    geodesic = _geodesic_pixel(_to_lonlat(crs), t, width, height)
    if c.is_projected:
        f = _unit_factor(c)
        nom = (nominal[0] * f, nominal[1] * f)
        if geodesic is None or all(abs(n / g - 1) <= NOMINAL_TOLERANCE for n, g in zip(nom, geodesic, strict=True)):
            return nom
    if geodesic is None:
        raise ValueError(f"cannot measure pixels of CRS {c.name!r} on the ground")
    return geodesic


def _geodesic_pixel(to_ll: Transformer | None, t: Affine, width: int, height: int) -> tuple[float, float] | None:
    if to_ll is None:
        return None
    cc, cr = width / 2.0, height / 2.0
    pts = [t @ (cc - 0.5, cr), t @ (cc + 0.5, cr), t @ (cc, cr - 0.5), t @ (cc, cr + 0.5)]
    lon, lat = to_ll.transform([p[0] for p in pts], [p[1] for p in pts])
    if not all(math.isfinite(v) for v in [*lon, *lat]):
        return None
    dx = GEOD.inv(lon[0], lat[0], lon[1], lat[1])[2]
    dy = GEOD.inv(lon[2], lat[2], lon[3], lat[3])[2]
    return (float(dx), float(dy)) if dx > 0 and dy > 0 else None


def crs_resolution(crs: Any, transform: Affine | Sequence[float], width: int, height: int,
                   metres: float) -> tuple[float, float]:
    """The pixel size in CRS units ``(x, y)`` that is ``metres`` on the ground at the centre."""
    t = transform if isinstance(transform, Affine) else Affine(*transform[:6])
    gx, gy = pixel_size_m(crs, t, width, height)
    return abs(t.a) * metres / gx, abs(t.e) * metres / gy


GsdMode = Literal["model", "native"]


@dataclass(frozen=True)
class GsdDecision:
    """How an input's pixel size is reconciled with the model's GSD.

    Attributes:
        input_m, model_m: ground sampling distances (``model_m`` ``None``: not recorded).
        ratio: ``input_m / model_m`` (> 1: the input is coarser).
        resample: read windows resampled to ``target_m``.
        target_m: the GSD windows are read at.
        note: for the manifest (a mismatch kept with ``native``, an override, ...).
    """

    input_m: float
    model_m: float | None
    ratio: float | None
    resample: bool
    target_m: float
    note: str = ""

    def to_obj(self) -> dict[str, Any]:
        return {"input_m": self.input_m, "model_m": self.model_m, "ratio": self.ratio,
                "resample": self.resample, "target_m": self.target_m, "note": self.note}


def decide_gsd(input_m: float, model_m: float | None, mode: GsdMode = "model", tolerance: float = GSD_TOLERANCE,
               max_coarser: float = MAX_COARSER, allow_coarse: bool = False,
               override: str = "override to run anyway") -> GsdDecision:
    """Decide at which GSD an input is read for a model.

    Args:
        input_m: the input's pixel size in metres (the larger axis of `pixel_size_m`).
        model_m: the model's training GSD, ``None`` when the model does not record it.
        mode: ``model`` resamples to the model's GSD when they differ by more than
            ``tolerance``; ``native`` keeps the pixels as they are and records the mismatch.
        allow_coarse: run an input coarser than the model by more than ``max_coarser``.
        override: how the caller's user overrides the refusal (ends its message).

    Raises:
        GsdMismatch: the input is coarser than the model by more than ``max_coarser``.
    """
    if not (math.isfinite(input_m) and input_m > 0):
        raise GsdMismatch(f"the input's pixel size {input_m!r} m is not a positive number")
    if model_m is None:
        return GsdDecision(input_m, None, None, False, input_m,
                           "the model does not record its GSD: pixels read as they are")
    ratio = input_m / model_m
    if ratio > max_coarser:
        msg = (f"the input's pixels are {input_m:.3g} m, {ratio:.2g}x coarser than the {model_m:g} m the model "
               f"was trained on (more than {max_coarser:g}x): resampling cannot restore the detail it relies on")
        if not allow_coarse:
            raise GsdMismatch(f"{msg}; use imagery of about {model_m:g} m, or {override}")
        coarse_note = f"{msg}; run anyway (overridden)"
    else:
        coarse_note = ""
    if abs(ratio - 1.0) <= tolerance:
        return GsdDecision(input_m, model_m, ratio, False, input_m, coarse_note)
    if mode == "native":
        note = (f"pixels kept at {input_m:.3g} m (--gsd native) for a model trained at {model_m:g} m "
                f"({ratio:.3g}x): each window covers {ratio:.3g}x the model's ground extent per side")
        return GsdDecision(input_m, model_m, ratio, False, input_m, "; ".join(n for n in (coarse_note, note) if n))
    note = f"read resampled from {input_m:.3g} m to the model's {model_m:g} m"
    return GsdDecision(input_m, model_m, ratio, True, float(model_m), "; ".join(n for n in (coarse_note, note) if n))


# -- areas of interest --------------------------------------------------------------------


@dataclass(frozen=True)
class Aoi:
    """One area of interest: an id and a (multi)polygon in the file's CRS."""

    id: str
    geometry: BaseGeometry


@dataclass(frozen=True)
class AoiProblem:
    """A feature of an AOI file that was refused (its id, or ``#index``) and why."""

    feature: str
    reason: str


@dataclass(frozen=True)
class AoiSet:
    """The usable areas of an AOI file, in its CRS, and the features refused.

    Attributes:
        path: the file.
        crs: the file's CRS (GeoJSON without one: WGS 84, RFC 7946).
        aois: the valid polygons, in file order (the order of "first match").
        problems: refused features (reported by the caller; the others are used).
    """

    path: str
    crs: CRS
    aois: tuple[Aoi, ...]
    problems: tuple[AoiProblem, ...] = ()

    @property
    def ids(self) -> list[str]:
        return [a.id for a in self.aois]


AOI_DRIVERS = ("GeoJSON", "GPKG")


def read_aoi(path: str | Path, id_field: str | None = None, strict: bool = False) -> AoiSet:
    """Read areas of interest from a GeoJSON or GeoPackage file.

    Each feature must be a valid, non-empty Polygon or MultiPolygon. Its id is the value of
    ``id_field`` (which must exist, be set and be unique), else its 0-based index in the file.

    Args:
        strict: refuse the whole file when any feature is refused (else they are listed in
            `AoiSet.problems` and the others are used).

    Raises:
        AoiError: the file is missing, unreadable, of another format, empty, without a CRS
            (GeoPackage), without ``id_field``, with duplicate ids, or (``strict``) has a
            refused feature; with no usable feature at all.
    """
    import pyogrio

    p, driver = vector_file(path, drivers=AOI_DRIVERS, what="AOI file", max_bytes=MAX_AOI_BYTES, error=AoiError)
    try:
        info = pyogrio.read_info(p)
        if int(info.get("features") or 0) > MAX_AOI_FEATURES:
            raise AoiError(f"{p}: more than {MAX_AOI_FEATURES} features")
        meta, _fids, geoms, fields = pyogrio.raw.read(p, columns=[id_field] if id_field else [])
    except AoiError:
        raise
    except Exception as exc:  # pyogrio raises DataSourceError, FieldError, ... for a bad file
        raise AoiError(f"{p}: unreadable AOI file ({exc})") from exc
    if info.get("driver") != driver:
        raise AoiError(f"{p}: read as {info.get('driver')!r}; only GeoJSON and GeoPackage are accepted")
    if geoms is None or len(geoms) == 0:
        raise AoiError(f"{p}: no features: an AOI file needs at least one polygon")
    crs = layer_crs(p, meta, driver, hint="e.g. EPSG:4326", error=AoiError)
    if id_field:
        names = list(meta.get("fields", []))
        if id_field not in names:
            raise AoiError(f"{p}: no field {id_field!r} (fields: {names})")
        ids = [None if v is None else str(v) for v in fields[0]]
    else:
        ids = [str(i) for i in range(len(geoms))]
    aois, problems = _check_features(p, geoms, ids)
    if problems and strict:
        raise AoiError(f"{p}: " + "; ".join(f"feature {q.feature}: {q.reason}" for q in problems))
    if not aois:
        raise AoiError(f"{p}: no usable area: " + "; ".join(f"feature {q.feature}: {q.reason}" for q in problems))
    return AoiSet(str(p), crs, tuple(aois), tuple(problems))


def _check_features(p: Path, geoms: Sequence[Any], ids: Sequence[str | None]) -> tuple[list[Aoi], list[AoiProblem]]:
    aois: list[Aoi] = []
    problems: list[AoiProblem] = []
    seen: set[str] = set()
    for k, (wkb, fid) in enumerate(zip(geoms, ids, strict=True)):
        name = fid if fid is not None else f"#{k}"
        if fid is None:
            problems.append(AoiProblem(name, "its id field is empty"))
            continue
        if fid in seen:
            raise AoiError(f"{p}: id {fid!r} is used by more than one feature; ids must be unique")
        seen.add(fid)
        g = shapely.from_wkb(wkb) if wkb is not None else None
        if g is None or g.is_empty:
            problems.append(AoiProblem(name, "no geometry (null or empty)"))
        elif g.geom_type not in ("Polygon", "MultiPolygon"):
            problems.append(AoiProblem(name, f"a {g.geom_type}, not a Polygon or MultiPolygon"))
        elif not g.is_valid:
            problems.append(AoiProblem(name, f"invalid geometry: {explain_validity(g)} "
                                             "(fix it, e.g. with QGIS 'Fix geometries')"))
        elif not all(math.isfinite(v) for v in g.bounds):
            problems.append(AoiProblem(name, "coordinates are not finite"))
        else:
            aois.append(Aoi(fid, g))
    return aois, problems


def _densify(geom: BaseGeometry) -> BaseGeometry:
    """Add vertices so that straight edges bend correctly when reprojected."""
    minx, miny, maxx, maxy = geom.bounds
    step = max(maxx - minx, maxy - miny) / 64.0
    return shapely.segmentize(geom, step) if step > 0 else geom


def reproject(geom: BaseGeometry, src: Any, dst: Any) -> BaseGeometry:
    """A geometry in another CRS (edges densified first)."""
    s, d = _crs(src), _crs(dst)
    if s == d:
        return geom
    tr = Transformer.from_crs(s, d, always_xy=True)
    return shapely.transform(_densify(geom), lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))


def footprint(crs: Any, transform: Affine | Sequence[float], width: int, height: int) -> BaseGeometry:
    """A grid's outline, as a polygon in its CRS."""
    t = transform if isinstance(transform, Affine) else Affine(*transform[:6])
    return shapely.Polygon([t @ (0, 0), t @ (width, 0), t @ (width, height), t @ (0, height)])


def aoi_in_scene(aoi: Aoi, aoi_crs: Any, scene_crs: Any, scene_footprint: BaseGeometry) -> BaseGeometry | None:
    """The part of an AOI over a scene, in the scene's CRS; ``None`` where it overlaps none.

    The footprint is taken into the AOI's CRS first and the AOI clipped there, so a polygon in
    another hemisphere is never projected into a CRS where it has no finite coordinates.
    """
    a_crs, s_crs = _crs(aoi_crs), _crs(scene_crs)
    fp = reproject(scene_footprint, s_crs, a_crs)
    shift = 0.0
    if a_crs.is_geographic and fp.bounds[2] - fp.bounds[0] > 180:
        # The footprint crosses the antimeridian: unwrap its longitudes to 0..360 and test
        # the AOI there too.
        fp = shapely.transform(fp, lambda xy: np.column_stack([np.where(xy[:, 0] < 0, xy[:, 0] + 360, xy[:, 0]),
                                                               xy[:, 1]]))
        shift = 360.0
    part = aoi.geometry.intersection(fp)
    if shift:
        moved = shapely.affinity.translate(aoi.geometry, xoff=shift).intersection(fp)
        part = part.union(moved)
    if part.is_empty or part.area == 0:
        return None
    out = reproject(part, a_crs, s_crs).intersection(scene_footprint)
    return None if out.is_empty or out.area == 0 else out


def window_polygons(transform: Affine | Sequence[float], windows: Sequence[Window]) -> np.ndarray:
    """The windows' outlines in the grid's CRS (rotated transforms too), as shapely polygons."""
    t = transform if isinstance(transform, Affine) else Affine(*transform[:6])
    w = np.asarray(windows, dtype=np.float64).reshape(-1, 4)
    r0, c0, r1, c1 = w[:, 0], w[:, 1], w[:, 0] + w[:, 2], w[:, 1] + w[:, 3]
    cols = np.stack([c0, c1, c1, c0, c0], axis=1)
    rows = np.stack([r0, r0, r1, r1, r0], axis=1)
    xs = t.a * cols + t.b * rows + t.c
    ys = t.d * cols + t.e * rows + t.f
    return shapely.polygons(np.stack([xs, ys], axis=2))


def assign_windows(polygons: np.ndarray, areas: Sequence[tuple[str, BaseGeometry]]) -> list[str | None]:
    """For each window, the id of the first area it overlaps (touching is not overlapping)."""
    out: list[str | None] = [None] * len(polygons)
    if not len(polygons):
        return out
    tree = shapely.STRtree(polygons)
    for aoi_id, geom in areas:
        shapely.prepare(geom)
        hits = tree.query(geom, predicate="intersects")
        for k in hits:
            if out[k] is None and not shapely.touches(polygons[k], geom):
                out[k] = aoi_id
    return out


def _needs_equal_area(crs: CRS) -> bool:
    if crs.is_geographic:
        return True
    name = (crs.coordinate_operation.method_name if crs.coordinate_operation else "").lower()
    return "mercator" in name and "transverse" not in name


def intersection_hectares(polygons: np.ndarray, geom: BaseGeometry, crs: Any) -> np.ndarray:
    """Hectares of each window polygon inside ``geom`` (both in ``crs``).

    Areas are computed in the CRS when it is projected (times its unit squared), else (a
    geographic CRS, or Mercator, whose scale varies with latitude) in a Lambert azimuthal
    equal-area CRS centred on the geometry.
    """
    c = _crs(crs)
    parts = shapely.intersection(polygons, geom)
    if _needs_equal_area(c):
        ll = reproject(geom, c, WGS84).centroid
        laea = CRS.from_proj4(f"+proj=laea +lat_0={ll.y} +lon_0={ll.x} +datum=WGS84 +units=m")
        tr = Transformer.from_crs(c, laea, always_xy=True)
        parts = shapely.transform(shapely.segmentize(parts, max(1e-9, _step(c))),
                                  lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        return np.asarray(shapely.area(parts), dtype=np.float64) / 1e4
    f = _unit_factor(c)
    return np.asarray(shapely.area(parts), dtype=np.float64) * f * f / 1e4


def _step(crs: CRS) -> float:
    return 0.01 if crs.is_geographic else 1000.0


def area_hectares(geom: BaseGeometry, crs: Any) -> float:
    """Hectares of a polygon (see `intersection_hectares` for the CRS used)."""
    env = shapely.box(*geom.bounds)
    return float(intersection_hectares(np.asarray([env]), geom, crs)[0])


def wgs84_bounds(crs: Any, transform: Affine | Sequence[float], window: Window) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` of a pixel window in WGS 84, as RFC 7946 wants: when the
    window crosses the antimeridian, ``west > east``."""
    t = transform if isinstance(transform, Affine) else Affine(*transform[:6])
    poly = window_polygons(t, [window])[0]
    minx, miny, maxx, maxy = poly.bounds
    c = _crs(crs)
    if c == WGS84 or (c.is_geographic and c.equals(WGS84, ignore_axis_order=True)):
        return minx, miny, maxx, maxy
    tr = Transformer.from_crs(c, WGS84, always_xy=True)
    w, s, e, n = tr.transform_bounds(minx, miny, maxx, maxy, densify_pts=21)
    return float(w), float(s), float(e), float(n)


def polygon_hectares(polygons: np.ndarray, crs: Any) -> np.ndarray:
    """Hectares of each polygon (in ``crs``) by the rule of `intersection_hectares`, without
    intersecting them with anything: for cells known to lie wholly inside an area."""
    c = _crs(crs)
    polys = np.asarray(polygons)
    if not len(polys):
        return np.zeros(0, dtype=np.float64)
    if _needs_equal_area(c):  # the equal-area projection's centre does not change areas
        return intersection_hectares(polys, shapely.box(*shapely.total_bounds(polys)), c)
    f = _unit_factor(c)
    return np.asarray(shapely.area(polys), dtype=np.float64) * f * f / 1e4
