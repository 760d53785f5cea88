"""Where the training windows of a labelled scene are: geometry only, no pixel read.

Labels are brought into each scene's pixel space (column, row) once; windows are the
model's input size and lie on the scene's pixel grid:

- a **point** gives the window centred on it;
- a **polygon** gives the windows lying at least ``min_inside`` (default 0.75) inside the
  polygons of its class (neighbouring polygons of one class count together), on a grid
  (``stride`` pixels apart, the window size by default, centred in the polygon's extent) or
  at random positions (``jitter``), at most ``max_per_polygon`` of them (a seeded choice);
- **background** windows (optional) lie on a grid over the whole scene, at least
  ``background_buffer_m`` from every label, at most ``background_max`` per scene.

A window reaching past the scene's edge is skipped and counted (``edge``). A polygon that
gives no window is ``too-small`` when it is smaller than ``min_inside`` of one window, else
``no-window`` (too thin, or a shape no window fits in). What the pixels say (nodata, clouds)
is decided when they are read (`vision.data.scenes`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import shapely
import shapely.affinity
from affine import Affine
from shapely.geometry.base import BaseGeometry

from vision.data.labels import LabelFeature

Mode = Literal["grid", "jitter"]
#: A label's key: (index of its file among the label files, index of the feature in it).
FeatureKey = tuple[int, int]
_SNAP = 1e-3  # px: reprojection round trips (EPSG:4326 and back) are far below this


@dataclass(frozen=True)
class SamplingOptions:
    """How windows are placed and which are kept (recipe keys of the same names).

    Attributes:
        size: window ``(height, width)`` in pixels: the model's input size.
        min_inside: share of a window that must lie inside its class's polygons.
        max_per_polygon: most windows per polygon (``None``: all).
        mode: ``grid`` or ``jitter``.
        stride: grid step in pixels (default: the window size, windows do not overlap).
        background: class name of background windows; ``None`` for none.
        background_buffer_m: least distance of a background window from any label.
        background_max: most background windows per scene.
        max_nodata: largest share of invalid pixels a window may have (0: none).
        max_cloud: largest cloud fraction a window may have (as inference's ``--max-cloud``).
        seed: for jitter and the random choices.
    """

    size: tuple[int, int] = (64, 64)
    min_inside: float = 0.75
    max_per_polygon: int | None = None
    mode: Mode = "grid"
    stride: int | None = None
    background: str | None = None
    background_buffer_m: float = 100.0
    background_max: int = 1000
    max_nodata: float = 0.0
    max_cloud: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        h, w = self.size
        if h < 1 or w < 1:
            raise ValueError(f"window size must be positive, not {self.size}")
        if not 0 < self.min_inside <= 1:
            raise ValueError(f"min_inside must be in (0, 1], not {self.min_inside}")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"stride must be at least 1 pixel, not {self.stride}")

    def to_obj(self) -> dict[str, Any]:
        return {"size": list(self.size), "min_inside": self.min_inside, "max_per_polygon": self.max_per_polygon,
                "mode": self.mode, "stride": self.stride, "background": self.background,
                "background_buffer_m": self.background_buffer_m, "background_max": self.background_max,
                "max_nodata": self.max_nodata, "max_cloud": self.max_cloud, "seed": self.seed}


@dataclass(frozen=True)
class Candidate:
    """A window to read: where, for which label.

    Attributes:
        scene: index of the scene.
        row, col: the window's offsets on the scene's grid.
        label: class name.
        feature: the label's key (``None`` for background windows).
        feature_id: the label's id (``background`` for background windows).
        source: the label file's name.
    """

    scene: int
    row: int
    col: int
    label: str
    feature: FeatureKey | None
    feature_id: str
    source: str


@dataclass(frozen=True)
class WindowSkip:
    """A window not used, and why (``edge``, ``nodata``, ``cloudy``, ``buffer``, ``duplicate``)."""

    candidate: Candidate
    kind: str
    reason: str


@dataclass
class SceneSampling:
    """The windows of one scene, and what became of its labels there.

    Attributes:
        candidates: windows inside the scene, in label order.
        skipped: windows past the scene's edge.
        seen: labels that overlap the scene.
        notes: for labels that gave no window here, ``(kind, reason)``.
    """

    candidates: list[Candidate] = field(default_factory=list)
    skipped: list[WindowSkip] = field(default_factory=list)
    seen: set[FeatureKey] = field(default_factory=set)
    notes: dict[FeatureKey, tuple[str, str]] = field(default_factory=dict)


def to_pixels(geom: BaseGeometry, transform: Affine) -> BaseGeometry:
    """A geometry in a grid's pixel space: x = column, y = row (rotated grids too)."""
    inv = ~transform
    return shapely.affinity.affine_transform(geom, [inv.a, inv.b, inv.d, inv.e, inv.c, inv.f])


def _floor(v: float) -> int:
    return math.floor(v + _SNAP)


def _ceil(v: float) -> int:
    return math.ceil(v - _SNAP)


def _starts(lo: int, hi: int, size: int, stride: int) -> list[int]:
    """Window offsets along one axis of the extent ``[lo, hi)``: a grid centred in it, or one
    window centred on it when it is smaller than a window."""
    span = hi - lo
    n = max(1, (span - size) // stride + 1) if span >= size else 1
    spare = span - size - (n - 1) * stride
    first = lo + math.floor(spare / 2 + 0.5) if spare >= 0 else lo - math.floor(-spare / 2 + 0.5)
    return [first + k * stride for k in range(n)]


def _boxes(rows: np.ndarray, cols: np.ndarray, h: int, w: int) -> np.ndarray:
    return shapely.box(cols, rows, cols + w, rows + h)


class _ClassAreas:
    """Per class, the label polygons of one scene (pixel space) for "how much of this window
    lies inside the class" (overlapping polygons of a class are counted once)."""

    def __init__(self, polygons: Sequence[tuple[str, BaseGeometry]]):
        self.by_class: dict[str, list[BaseGeometry]] = {}
        for label, g in polygons:
            self.by_class.setdefault(label, []).append(g)
        self.trees = {c: shapely.STRtree(gs) for c, gs in self.by_class.items()}

    def inside(self, label: str, own: BaseGeometry, boxes: np.ndarray, h: int, w: int) -> np.ndarray:
        if not len(boxes):
            return np.zeros(0)
        geoms = self.by_class[label]
        extent = shapely.box(*shapely.total_bounds(boxes))
        hits = self.trees[label].query(extent, predicate="intersects")
        if len(hits) <= 1:
            area = shapely.area(shapely.intersection(boxes, own))
        else:
            local = shapely.union_all(shapely.intersection(np.asarray(geoms, dtype=object)[hits], extent))
            shapely.prepare(local)
            area = shapely.area(shapely.intersection(boxes, local))
        return np.asarray(area, dtype=np.float64) / float(h * w)


def sample_scene(scene: int, width: int, height: int, transform: Affine, gsd_m: float,
                 features: Sequence[tuple[FeatureKey, LabelFeature, BaseGeometry]],
                 opts: SamplingOptions) -> SceneSampling:
    """The candidate windows of one scene.

    Args:
        scene: the scene's index (recorded in each `Candidate`).
        width, height, transform: the scene's grid.
        gsd_m: its pixel size in metres (for ``background_buffer_m`` and messages).
        features: labels overlapping the scene: key, feature, geometry in the scene's CRS.
        opts: the sampling options.
    """
    h, w = opts.size
    stride = opts.stride or 0
    out = SceneSampling()
    frame = shapely.box(0, 0, width, height)
    px = [(key, f, to_pixels(g, transform)) for key, f, g in features]
    areas = _ClassAreas([(f.label, g) for _, f, g in px if not f.is_point])
    min_area = opts.min_inside * h * w
    for key, f, g in px:
        if not g.intersects(frame) or (not f.is_point and shapely.intersection(g, frame).area <= 0):
            continue
        out.seen.add(key)
        if f.is_point:
            points = [p for p in getattr(g, "geoms", [g]) if frame.covers(p)]
            found = [(math.floor(p.y - h / 2 + 0.5), math.floor(p.x - w / 2 + 0.5)) for p in points]
        else:
            found, best = _polygon_windows(g, frame, areas, f.label, opts, h, w, stride,
                                           np.random.default_rng([opts.seed, key[0], key[1], scene]))
            if not found and g.area < min_area:
                m2 = g.area * gsd_m * gsd_m
                out.notes[key] = ("too-small", f"{m2:,.0f} m² ({g.area:,.0f} px), less than {opts.min_inside:g} of one "
                                               f"{h}x{w} window ({min_area * gsd_m * gsd_m:,.0f} m²)")
                continue
            if not found:
                out.notes[key] = ("no-window", f"no {h}x{w} window lies {opts.min_inside:.0%} inside it "
                                               f"(at best {best:.0%})")
                continue
        for row, col in found:
            cand = Candidate(scene, row, col, f.label, key, f.id, f.source)
            if row < 0 or col < 0 or row + h > height or col + w > width:
                out.skipped.append(WindowSkip(cand, "edge", f"window {row},{col} {h}x{w} reaches past the scene's "
                                                            f"edge ({width}x{height} px)"))
            else:
                out.candidates.append(cand)
    return out


def _polygon_windows(g: BaseGeometry, frame: BaseGeometry, areas: _ClassAreas, label: str, opts: SamplingOptions,
                     h: int, w: int, stride: int, rng: np.random.Generator) -> tuple[list[tuple[int, int]], float]:
    """The windows of one polygon that lie ``min_inside`` inside its class, and the best share."""
    c0, r0, c1, r1 = shapely.intersection(g, frame).bounds
    lo_r, hi_r, lo_c, hi_c = _floor(r0), _ceil(r1), _floor(c0), _ceil(c1)
    if opts.mode == "grid":
        rows = _starts(lo_r, hi_r, h, stride or h)
        cols = _starts(lo_c, hi_c, w, stride or w)
        rr, cc = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))
        limit = None
    else:
        n = opts.max_per_polygon or max(1, len(_starts(lo_r, hi_r, h, h)) * len(_starts(lo_c, hi_c, w, w)))
        tries = 20 * n
        rr = rng.integers(min(lo_r, hi_r - h), max(lo_r, hi_r - h) + 1, tries)
        cc = rng.integers(min(lo_c, hi_c - w), max(lo_c, hi_c - w) + 1, tries)
        limit = n
    share = areas.inside(label, g, _boxes(rr, cc, h, w), h, w)
    ok = np.flatnonzero(share >= opts.min_inside - 1e-9)
    best = float(share.max()) if len(share) else 0.0
    found = list(dict.fromkeys((int(rr[k]), int(cc[k])) for k in ok))
    if limit is not None:
        found = found[:limit]
    if opts.max_per_polygon is not None and len(found) > opts.max_per_polygon:
        keep = np.sort(rng.permutation(len(found))[:opts.max_per_polygon])
        found = [found[k] for k in keep]
    return found, best


def background_windows(scene: int, width: int, height: int, transform: Affine, gsd_m: float,
                       labels: Sequence[BaseGeometry], opts: SamplingOptions) -> list[Candidate]:
    """Background windows of one scene: on a grid, at least ``background_buffer_m`` from every
    label (``labels`` in the scene's CRS), at most ``background_max`` (a seeded choice)."""
    if opts.background is None or opts.background_max <= 0:
        return []
    h, w = opts.size
    rows = np.arange(0, height - h + 1, h)
    cols = np.arange(0, width - w + 1, w)
    if not len(rows) or not len(cols):
        return []
    rr, cc = (a.ravel() for a in np.meshgrid(rows, cols, indexing="ij"))
    boxes = _boxes(rr, cc, h, w)
    if labels:
        tree = shapely.STRtree([to_pixels(g, transform) for g in labels])
        near = tree.query(boxes, predicate="dwithin", distance=opts.background_buffer_m / gsd_m)
        far = np.ones(len(boxes), dtype=bool)
        far[np.unique(near[0])] = False
        rr, cc = rr[far], cc[far]
    if len(rr) > opts.background_max:
        keep = np.sort(np.random.default_rng([opts.seed, scene, 7]).permutation(len(rr))[:opts.background_max])
        rr, cc = rr[keep], cc[keep]
    return [Candidate(scene, int(r), int(c), opts.background, None, "background", "background")
            for r, c in zip(rr, cc, strict=True)]
