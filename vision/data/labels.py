"""Vector labels: points, polygons and multipolygons in any CRS, read with pyogrio.

A label file (GeoJSON, GeoPackage or ESRI Shapefile) holds one feature per labelled place;
the class is the value of its ``class_field``. `read_labels` reads it whole and checks every
feature; a feature that cannot be used is never dropped silently: it becomes a
`LabelProblem` (which feature, which class, why) that `vision data check` and the training
run's lineage list. What is checked here, before any scene is opened:

- ``geometry``: null, empty, a line (not a place), or invalid (`shapely.validation.explain_validity`),
  or with coordinates that are not finite;
- ``class``: no class value, or a value that is not one of the declared classes.

Where a label lies relative to the scenes (outside every scene, a CRS that overlaps none,
smaller than one window) is `vision.data.sampling`'s business.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS
from shapely.geometry.base import BaseGeometry
from shapely.validation import explain_validity

from vision.errors import ConfigError
from vision.vector import layer_crs, vector_file

MAX_LABEL_BYTES = 1024 * 2**20
MAX_LABEL_FEATURES = 5_000_000
#: Geometry types a label may have.
POINT_TYPES = ("Point", "MultiPoint")
AREA_TYPES = ("Polygon", "MultiPolygon")

LABEL_DRIVERS = ("GeoJSON", "GPKG", "ESRI Shapefile")


class LabelFileError(ConfigError):
    """A label file cannot be read at all (missing, of another format, without a CRS)."""


@dataclass(frozen=True)
class LabelFeature:
    """One usable label.

    Attributes:
        index: 0-based position in its file.
        id: the value of the id field, else ``#index``.
        label: the class name.
        geometry: a (multi)point or (multi)polygon in the file's CRS.
        source: the file's name (for messages and the ``label_source`` group).
    """

    index: int
    id: str
    label: str
    geometry: BaseGeometry
    source: str

    @property
    def is_point(self) -> bool:
        return self.geometry.geom_type in POINT_TYPES


@dataclass(frozen=True)
class LabelProblem:
    """A label that was not used, and why.

    Attributes:
        source: the label file (or manifest, or STAC item) it came from.
        feature: its id (``#index`` without an id field).
        label: its class value, when it has one.
        kind: ``geometry``, ``class``, ``crs``, ``outside``, ``too-small``, ``no-window``,
            ``windows-skipped`` (see `vision.data.sampling`), ``scene`` (its scene was refused).
        reason: in words, with the numbers.
    """

    source: str
    feature: str
    label: str | None
    kind: str
    reason: str

    def to_obj(self) -> dict[str, Any]:
        return {"source": self.source, "feature": self.feature, "label": self.label, "kind": self.kind,
                "reason": self.reason}


@dataclass
class LabelSet:
    """A label file, read: the usable features and the refused ones.

    Attributes:
        path: the file.
        crs: its CRS (GeoJSON without one: WGS 84, as RFC 7946 says).
        features: usable features, in file order.
        problems: refused features, in file order.
        values: every class value seen (usable or not), for messages.
    """

    path: str
    crs: CRS
    features: list[LabelFeature] = field(default_factory=list)
    problems: list[LabelProblem] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.path).name


def label_driver(p: Path) -> str:
    """``GeoJSON``, ``GPKG`` or ``ESRI Shapefile``, from the first bytes of the file.

    Raises:
        LabelFileError: none of these, or not a regular file below `MAX_LABEL_BYTES`.
    """
    return vector_file(p, drivers=LABEL_DRIVERS, what="label file", max_bytes=MAX_LABEL_BYTES, error=LabelFileError)[1]


def _class_value(v: Any) -> str | None:
    """A class value as text: ``3.0`` -> ``"3"``; ``None``/empty/NaN -> ``None``."""
    if v is None:
        return None
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(float(v)):
            return None
        if float(v).is_integer():
            return str(int(v))
    if isinstance(v, bytes):
        v = v.decode("utf-8", errors="replace")
    text = str(v).strip()
    return text or None


def read_labels(path: str | Path, class_field: str, classes: Sequence[str] | None = None,
                id_field: str | None = None) -> LabelSet:
    """Read and check a label file.

    Args:
        path: a GeoJSON, GeoPackage or Shapefile.
        class_field: the attribute holding each feature's class.
        classes: the classes a value may take; ``None`` accepts every value.
        id_field: an attribute naming each feature (for messages and the lineage); default
            the 0-based index (``#12``).

    Raises:
        LabelFileError: the file is missing, too large, unreadable, of another format,
            without a CRS (GeoPackage, Shapefile), or without ``class_field``/``id_field``.
    """
    import pyogrio

    p = Path(path)
    driver = label_driver(p)
    try:
        info = pyogrio.read_info(p)
    except Exception as exc:  # pyogrio raises DataSourceError and others for a bad file
        raise LabelFileError(f"{p}: unreadable label file ({exc})") from exc
    if info.get("driver") != driver:
        raise LabelFileError(f"{p}: read as {info.get('driver')!r}, expected {driver}")
    if int(info.get("features") or 0) > MAX_LABEL_FEATURES:
        raise LabelFileError(f"{p}: more than {MAX_LABEL_FEATURES} features")
    names = [str(n) for n in info.get("fields", [])]
    for what, f in (("class_field", class_field), ("id field", id_field)):
        if f is not None and f not in names:
            raise LabelFileError(f"{p}: no attribute {f!r} for the {what} (attributes: {names})")
    columns = [class_field] + ([id_field] if id_field and id_field != class_field else [])
    try:
        meta, _fids, geoms, values = pyogrio.raw.read(p, columns=columns)
    except Exception as exc:
        raise LabelFileError(f"{p}: unreadable label file ({exc})") from exc
    crs = layer_crs(p, meta, driver, hint="e.g. with QGIS 'Assign projection'", error=LabelFileError)
    cls_values = list(values[0]) if len(values) else [None] * len(geoms if geoms is not None else [])
    ids = list(values[columns.index(id_field)]) if id_field else [None] * len(cls_values)
    out = LabelSet(str(p), crs)
    allowed = set(classes) if classes is not None else None
    for k, wkb in enumerate(geoms if geoms is not None else []):
        fid = _class_value(ids[k]) or f"#{k}"
        label = _class_value(cls_values[k])
        problem = geometry_problem(wkb)
        if problem is None and label is None:
            problem = ("class", f"no {class_field!r} value")
        elif problem is None and allowed is not None and label not in allowed:
            shown = sorted(allowed)
            problem = ("class", f"class {label!r} is not one of the {len(shown)} classes "
                                f"({', '.join(shown[:12])}{', ...' if len(shown) > 12 else ''})")
        if problem is not None:
            out.problems.append(LabelProblem(p.name, fid, label, *problem))
            continue
        assert label is not None
        out.features.append(LabelFeature(k, fid, label, shapely.from_wkb(wkb), p.name))
    return out


def geometry_problem(wkb: bytes | None) -> tuple[str, str] | None:
    """``("geometry", why)`` when a feature's geometry cannot be a label, else ``None``."""
    try:
        g = shapely.from_wkb(wkb) if wkb is not None else None
    except shapely.errors.GEOSException as exc:
        return "geometry", f"unreadable geometry ({exc})"
    if g is None or g.is_empty:
        return "geometry", "no geometry (null or empty)"
    if g.geom_type not in (*POINT_TYPES, *AREA_TYPES):
        return "geometry", f"a {g.geom_type}: a label is a point, polygon or multipolygon"
    coords = shapely.get_coordinates(g)
    if not np.isfinite(coords).all():
        return "geometry", "coordinates are not finite"
    if not g.is_valid:
        return "geometry", f"invalid geometry: {explain_validity(g)} (fix it, e.g. with QGIS 'Fix geometries')"
    if g.geom_type in AREA_TYPES and g.area <= 0:
        return "geometry", "a polygon of zero area"
    return None


def problems_by_kind(problems: Sequence[LabelProblem]) -> dict[str, int]:
    """How many problems of each kind, in first-seen order."""
    out: dict[str, int] = {}
    for q in problems:
        out[q.kind] = out.get(q.kind, 0) + 1
    return out
