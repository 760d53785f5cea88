"""Spatially separated splits, and how far apart the splits really are.

Neighbouring windows of a scene look alike (spatial autocorrelation): a random split puts
near-copies of the training windows into the test set and reports an accuracy the model will
not have on a new area (Roberts et al. 2017, *Cross-validation strategies for data with
temporal, spatial, hierarchical, or phylogenetic structure*, Ecography 40:913-929). Here:

- ``blocks``: the ground is cut into squares of ``block_m`` metres (in each scene's projected
  CRS, or the UTM zone of a geographic one); whole blocks go to test, then val, as about
  ``regions`` compact groups each, grown from random seed blocks (``seed``) until each split
  holds its share of the windows; then every training window closer than ``buffer_m``
  (default ``block_m``) to a val or test window is dropped and counted, so the smallest
  train-test distance is at least ``buffer_m`` (compact groups keep that cost low);
- ``random``: windows drawn at random, with a warning when the labels are spatially clustered
  (Clark-Evans ratio below 1) or the typical test window lies within ``block_m`` of a
  training one.

Windows whose split is preset (per-split scenes, a STAC ``ml-aoi:split``, a manifest's split
column) keep it. `nearest_m` measures, for each window of one set, the distance in metres to
the nearest window of another: the smallest train-test distance that `vision data check` and
the run's lineage report.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer

from vision.errors import ConfigError

TRAIN = "train"


@dataclass(frozen=True)
class Footprint:
    """Where a window lies: its CRS and bounds in that CRS."""

    crs: str
    minx: float
    miny: float
    maxx: float
    maxy: float


@dataclass(frozen=True)
class SplitRule:
    """A recipe's ``data.split``.

    Attributes:
        method: ``blocks`` or ``random``.
        block_m: side of a block in metres (for ``random``: the distance under which a test
            window counts as near a training one, in the warning).
        val, test: the shares of the windows.
        seed: for the draw.
        buffer_m: least train-to-val/test distance (``blocks``); ``None``: ``block_m``.
        regions: val and test are each grown as about this many compact groups of blocks.
    """

    method: str = "blocks"
    block_m: float = 2000.0
    val: float = 0.1
    test: float = 0.1
    seed: int = 0
    buffer_m: float | None = None
    regions: int = 4

    def __post_init__(self) -> None:
        if self.method not in ("blocks", "random"):
            raise ValueError(f"split method must be blocks or random, not {self.method!r}")
        if not (self.block_m > 0 and 0 <= self.val < 1 and 0 <= self.test < 1 and self.val + self.test < 1):
            raise ValueError("split: block_m > 0, val and test in [0, 1) with val + test < 1")
        if self.regions < 1:
            raise ValueError(f"split regions must be at least 1, not {self.regions}")

    @property
    def buffer(self) -> float:
        return self.block_m if self.buffer_m is None else self.buffer_m

    def to_obj(self) -> dict[str, Any]:
        return {"method": self.method, "block_m": self.block_m, "val": self.val, "test": self.test,
                "seed": self.seed, "buffer_m": self.buffer, "regions": self.regions}


@dataclass
class SplitResult:
    """Each window's split (``None``: dropped, see ``dropped``) and the split's report."""

    splits: list[str | None]
    dropped: dict[int, str] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@lru_cache(maxsize=256)
def _metric(crs: str, lon: float, lat: float) -> tuple[str, float]:
    """The metric frame of a CRS: itself and metres per unit when projected, else the UTM zone
    of ``(lon, lat)``."""
    c = CRS.from_user_input(crs)
    if c.is_projected:
        axis = c.axis_info[0] if c.axis_info else None
        f = float(axis.unit_conversion_factor) if axis is not None and axis.unit_conversion_factor else 1.0
        return c.to_wkt(), f
    zone = min(60, max(1, int((lon + 180) // 6) + 1))
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone).to_wkt(), 1.0


@lru_cache(maxsize=1024)
def _same(a: str, b: str) -> bool:
    return a == b or CRS.from_user_input(a) == CRS.from_user_input(b)


@lru_cache(maxsize=1024)
def _transformer(src: str, dst: str) -> Transformer:
    return Transformer.from_crs(CRS.from_user_input(src), CRS.from_user_input(dst), always_xy=True)


def metric_frames(fps: Sequence[Footprint]) -> list[tuple[str, float]]:
    """The metric frame of each footprint (a geographic CRS: the UTM zone of its windows' centre)."""
    centre: dict[str, tuple[float, float]] = {}
    by_crs: dict[str, list[int]] = {}
    for k, f in enumerate(fps):
        by_crs.setdefault(f.crs, []).append(k)
    for crs, idx in by_crs.items():
        c = CRS.from_user_input(crs)
        xs = np.array([(fps[k].minx + fps[k].maxx) / 2 for k in idx])
        ys = np.array([(fps[k].miny + fps[k].maxy) / 2 for k in idx])
        if c.is_projected:
            centre[crs] = (0.0, 0.0)
        else:
            lon, lat = _transformer(crs, "EPSG:4326").transform(float(np.mean(xs)), float(np.mean(ys)))
            centre[crs] = (float(lon), float(lat))
    return [_metric(f.crs, *centre[f.crs]) for f in fps]


def polygons_in(fps: Sequence[Footprint], idx: Sequence[int], frame: str) -> np.ndarray:
    """The footprints ``idx`` as polygons in ``frame`` (non-finite ones as empty)."""
    out = np.empty(len(idx), dtype=object)
    by_crs: dict[str, list[int]] = {}
    for j, k in enumerate(idx):
        by_crs.setdefault(fps[k].crs, []).append(j)
    for crs, js in by_crs.items():
        b = np.array([[fps[idx[j]].minx, fps[idx[j]].miny, fps[idx[j]].maxx, fps[idx[j]].maxy] for j in js])
        xs = np.stack([b[:, 0], b[:, 2], b[:, 2], b[:, 0]], axis=1)
        ys = np.stack([b[:, 1], b[:, 1], b[:, 3], b[:, 3]], axis=1)
        if not _same(crs, frame):
            tx, ty = _transformer(crs, frame).transform(xs.ravel(), ys.ravel())
            xs, ys = np.asarray(tx).reshape(xs.shape), np.asarray(ty).reshape(ys.shape)
        polys = shapely.polygons(np.stack([xs, ys], axis=2))
        finite = np.isfinite(xs).all(axis=1) & np.isfinite(ys).all(axis=1)
        polys[~finite] = shapely.Polygon()
        out[js] = polys
    return out


def nearest_m(fps: Sequence[Footprint], a: Sequence[int], b: Sequence[int]) -> np.ndarray:
    """For each footprint of ``a``, the distance in metres to the nearest of ``b`` (measured in
    the metric frame of the ``a`` footprint; ``inf`` when ``b`` is empty)."""
    out = np.full(len(a), np.inf)
    if not len(a) or not len(b):
        return out
    frames = metric_frames(fps)
    by_frame: dict[tuple[str, float], list[int]] = {}
    for j, k in enumerate(a):
        by_frame.setdefault(frames[k], []).append(j)
    for (frame, factor), js in by_frame.items():
        tree_polys = polygons_in(fps, b, frame)
        keep = ~shapely.is_empty(tree_polys)
        if not keep.any():
            continue
        tree = shapely.STRtree(tree_polys[keep])
        query = polygons_in(fps, [a[j] for j in js], frame)
        ok = ~shapely.is_empty(query)
        if not ok.any():
            continue
        (qi, _ti), dist = tree.query_nearest(query[ok], return_distance=True, all_matches=False)
        d = np.full(len(js), np.inf)
        pos = np.flatnonzero(ok)
        np.minimum.at(d, pos[qi], np.asarray(dist) * factor)
        out[js] = d
    return out


def clark_evans(fps: Sequence[Footprint]) -> float | None:
    """The Clark-Evans ratio of the windows' centres (nearest-neighbour distance over that of
    a random pattern of the same density in their convex hull): < 1 clustered, about 1 random,
    > 1 regular. ``None`` for fewer than 10 windows or no area. Computed in the frame of the
    largest group of windows sharing one."""
    if len(fps) < 10:
        return None
    frames = metric_frames(fps)
    groups: dict[tuple[str, float], list[int]] = {}
    for k, fr in enumerate(frames):
        groups.setdefault(fr, []).append(k)
    (frame, factor), idx = max(groups.items(), key=lambda kv: len(kv[1]))
    if len(idx) < 10:
        return None
    cent = shapely.centroid(polygons_in(fps, idx, frame))
    cent = cent[~shapely.is_empty(cent)]
    pts = shapely.points(np.unique(shapely.get_coordinates(cent), axis=0))
    area = shapely.convex_hull(shapely.multipoints(pts)).area * factor * factor
    if len(pts) < 10 or area <= 0:
        return None
    tree = shapely.STRtree(pts)
    (_q, _t), dist = tree.query_nearest(pts, return_distance=True, exclusive=True, all_matches=False)
    observed = float(np.mean(dist)) * factor
    expected = 0.5 / math.sqrt(len(pts) / area)
    return observed / expected


def _blocks(fps: Sequence[Footprint], idx: Sequence[int], block_m: float) -> list[tuple[str, int, int]]:
    frames = metric_frames(fps)
    groups: dict[tuple[str, tuple[str, float]], list[int]] = {}
    for j, k in enumerate(idx):
        groups.setdefault((fps[k].crs, frames[k]), []).append(j)
    keys: list[tuple[str, int, int]] = [("", 0, 0)] * len(idx)
    for (crs, (frame, factor)), js in groups.items():
        x = np.array([(fps[idx[j]].minx + fps[idx[j]].maxx) / 2 for j in js])
        y = np.array([(fps[idx[j]].miny + fps[idx[j]].maxy) / 2 for j in js])
        if not _same(crs, frame):
            x, y = (np.asarray(v) for v in _transformer(crs, frame).transform(x, y))
        bx = np.floor(x * factor / block_m).astype(np.int64)
        by = np.floor(y * factor / block_m).astype(np.int64)
        for j, a, b in zip(js, bx, by, strict=True):
            keys[j] = (frame, int(a), int(b))
    return keys


BlockKey = tuple[str, int, int]


def _grow(members: dict[BlockKey, list[int]], free: set[BlockKey], order: Sequence[BlockKey], target: float,
          regions: int) -> list[BlockKey]:
    """Blocks for one held-out split: compact groups, each grown from a random seed block to the
    free blocks nearest it, about ``target / regions`` windows each, until ``target`` windows.

    Compact groups keep the held-out area's edge short, so the buffer around it costs little
    training data (scattered single blocks would each be ringed by dropped windows).
    """
    chosen: list[BlockKey] = []
    count = 0
    per = target / regions
    for seed in order:
        if count >= target:
            break
        if seed not in free:
            continue
        goal, got = min(per, target - count), 0
        heap: list[tuple[int, BlockKey]] = [(0, seed)]
        seen = {seed}
        while heap and got < goal:
            _d, key = heapq.heappop(heap)
            free.discard(key)
            chosen.append(key)
            got += len(members[key])
            frame, bx, by = key
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    nb = (frame, bx + dx, by + dy)
                    if nb in free and nb not in seen:
                        seen.add(nb)
                        heapq.heappush(heap, ((nb[1] - seed[1]) ** 2 + (nb[2] - seed[2]) ** 2, nb))
        count += got
    return chosen


def assign(fps: Sequence[Footprint], preset: Sequence[str | None], rule: SplitRule) -> SplitResult:
    """Give every window without a preset split one by ``rule`` (see the module docstring).

    Raises:
        ConfigError: too few blocks for the shares asked (use a smaller ``block_m``).
    """
    splits: list[str | None] = list(preset)
    free = [k for k, s in enumerate(preset) if s is None]
    result = SplitResult(splits, report={"rule": {"method": "preset"}, "preset": len(preset) - len(free)})
    if not free:
        return result  # every window's split came with it (per-split scenes, ml-aoi:split, a column)
    result.report["rule"] = rule.to_obj()
    rng = np.random.default_rng(rule.seed)
    want = {"test": rule.test * len(free), "val": rule.val * len(free)}
    if rule.method == "random":
        order = rng.permutation(len(free))
        nt, nv = round(want["test"]), round(want["val"])
        for j, o in enumerate(order):
            splits[free[o]] = "test" if j < nt else "val" if j < nt + nv else "train"
        return result
    keys = _blocks(fps, free, rule.block_m)
    members: dict[BlockKey, list[int]] = {}
    for k, key in zip(free, keys, strict=True):
        members.setdefault(key, []).append(k)
    blocks = sorted(members)
    open_blocks = set(blocks)
    seeds = [blocks[o] for o in rng.permutation(len(blocks))]
    nblocks = {"train": 0, "val": 0, "test": 0}
    for name in ("test", "val"):
        chosen = _grow(members, open_blocks, seeds, want[name], rule.regions) if want[name] > 0 else []
        nblocks[name] = len(chosen)
        for key in chosen:
            for k in members[key]:
                splits[k] = name
    nblocks["train"] = len(open_blocks)
    for key in open_blocks:
        for k in members[key]:
            splits[k] = TRAIN
    missing = [s for s in ("test", "val") if want[s] > 0 and nblocks[s] == 0]
    if missing or nblocks["train"] == 0:
        raise ConfigError(f"the windows fall in only {len(blocks)} block(s) of {rule.block_m:g} m: too few for "
                          f"train, val {rule.val:g} and test {rule.test:g}; use a smaller data.split.block_m")
    result.report["blocks"] = nblocks
    train = [k for k in free if splits[k] == "train"]
    held = [k for k, s in enumerate(splits) if s is not None and s != TRAIN]
    if rule.buffer > 0 and train and held:
        d = nearest_m(fps, train, held)
        for k, dk in zip(train, d, strict=True):
            if dk < rule.buffer:
                splits[k] = None
                result.dropped[k] = (f"within {dk:,.0f} m of a val/test window (split buffer_m "
                                     f"{rule.buffer:g}): dropped so that train stays {rule.buffer:g} m from them")
    result.report["buffer_dropped"] = len(result.dropped)
    return result


def distances(fps: Sequence[Footprint], splits: Sequence[str | None]) -> dict[str, Any]:
    """For every split other than train: the smallest distance (m) from a train window to one
    of its windows, and the median distance from one of its windows to the nearest train
    window (``None`` when either is empty)."""
    train = [k for k, s in enumerate(splits) if s == TRAIN]
    out: dict[str, Any] = {}
    others = sorted({s for s in splits if s is not None and s != TRAIN}, key=lambda s: (s != "val", s != "test", s))
    for other in others:
        idx = [k for k, s in enumerate(splits) if s == other]
        if not train or not idx:
            out[f"train-{other}"] = None
            continue
        d = nearest_m(fps, train, idx)
        back = nearest_m(fps, idx, train)
        out[f"train-{other}"] = {"min_m": round(float(d.min()), 3),
                                 "median_to_train_m": round(float(np.median(back)), 3)}
    return out


def clustering_warning(fps: Sequence[Footprint], splits: Sequence[str | None], rule: SplitRule,
                       dist: dict[str, Any]) -> str | None:
    """The warning of a random split on spatially clustered labels, or ``None``."""
    if rule.method != "random":
        return None
    r = clark_evans([f for f, s in zip(fps, splits, strict=True) if s is not None])
    held = dist.get("train-test") or next((v for v in dist.values() if v), None)
    median = None if not held else held["median_to_train_m"]
    clustered = r is not None and r < 1.0
    near = median is not None and median < rule.block_m
    if not (clustered or near):
        return None
    parts = []
    if r is not None:
        parts.append(f"Clark-Evans ratio {r:.2f}{' (< 1: clustered)' if clustered else ''}")
    if median is not None:
        parts.append(f"the median held-out window is {median:,.0f} m from a training window")
    what = "spatially clustered labels" if clustered else "labels that lie close together"
    return (f"random split of {what}: " + "; ".join(parts) + f" (block_m {rule.block_m:g}). "
            "Neighbouring, near-identical windows in train and test make the test accuracy optimistic "
            "for a new area; use data.split.method: blocks (Roberts et al. 2017, Ecography 40:913)")
