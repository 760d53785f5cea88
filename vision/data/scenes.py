"""Labelled scenes, planned and read: what each scene's pixels mean, on which grid, and the
pixels of the training windows, checked as inference checks them.

Planning (headers only) reuses the imagery library: a GeoTIFF is `vision.scene.plan_geotiff`,
a STAC item `vision.stac.plan_item`; the grid is `vision.scene.grid_for` (at ``gsd_m`` when
the recipe sets one), the GSD `vision.geo.pixel_size_m`. What the pixels mean is derived from
the data (`vision.radiometry` through the plan) or, for data that declares nothing, taken from
the recipe's ``data.radiometry``; there is no silent default: data of unknown meaning without
that key is refused. Every scene is then planned against the training radiometry, so a scene
on another digital-number scale is harmonised (`vision.radiometry.reconcile`) and one of
another kind is refused, naming both.

Reading (`read_windows`) goes through `vision.scene.open_scene`, one block-aligned chunk of
windows at a time. A window is skipped, and counted, when more than ``max_nodata`` of its
pixels are invalid, or when its cloud fraction exceeds ``max_cloud`` (the rule of
`vision infer --max-cloud`: `vision.clouds.cloud_method` picks the scene classification layer
or s2cloudless, and none for data it cannot judge).
"""

from __future__ import annotations

import contextlib
import glob
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from vision.bands import display_names
from vision.clouds import (
    S2Cloudless,
    cloud_method,
    s2cloudless_band_indices,
    scl_fractions,
    to_reflectance,
)
from vision.data.sampling import Candidate, SamplingOptions, WindowSkip
from vision.errors import ConfigError, InputError
from vision.geo import GSD_TOLERANCE, pixel_size_m
from vision.radiometry import UNKNOWN, Radiometry, RadiometryMismatch
from vision.raster import RASTER_SUFFIXES, open_raster
from vision.scene import BandPlan, Grid, grid_for, open_scene, plan_geotiff
from vision.stac import StacItem, band_id, plan_item, read_stac

#: Chunks read at once, in pixels a side (a multiple of the usual 256-pixel blocks).
CHUNK = 1024
#: The warning a plan carries when it is made without a training radiometry (not the data's).
_NO_MODEL_RADIOMETRY = "the model does not record its radiometry"


@dataclass(frozen=True)
class SceneInput:
    """A scene named by the recipe, before planning: a GeoTIFF or a STAC item.

    Attributes:
        path: the GeoTIFF, or the STAC JSON the item was read from.
        item: the STAC item, for a STAC scene.
        split: the split all its windows belong to (a recipe's per-split scenes, a STAC
            item's ``ml-aoi:split``), else ``None``.
    """

    path: str
    item: StacItem | None = None
    split: str | None = None

    @property
    def id(self) -> str:
        return self.item.id if self.item is not None else Path(self.path).stem


@dataclass(frozen=True)
class SceneInfo:
    """A planned scene.

    Attributes:
        id: unique among the scenes (the item id or file stem, numbered when repeated).
        path: the GeoTIFF or STAC JSON.
        plan: which file and band feeds each training band (and its harmonisation).
        grid: the grid its windows are on.
        gsd_m: that grid's pixel size in metres.
        split: the split of all its windows, if preset.
        acquired: acquisition time, when known.
        radiometry: what its numbers mean, as derived (before harmonisation).
    """

    id: str
    path: str
    plan: BandPlan
    grid: Grid
    gsd_m: float
    split: str | None
    acquired: datetime | None
    radiometry: Radiometry

    def to_obj(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "split": self.split, "crs": self.grid.crs,
                "width": self.grid.width, "height": self.grid.height, "gsd_m": self.gsd_m,
                "acquired": self.acquired.isoformat() if self.acquired else None,
                "radiometry": self.radiometry.to_obj(), "harmonisation": self.plan.harmonisation.to_obj()}


@dataclass(frozen=True)
class SceneProblem:
    """A scene that could not be used, and why."""

    path: str
    reason: str

    def to_obj(self) -> dict[str, str]:
        return {"path": self.path, "reason": self.reason}


def expand_scenes(entries: Sequence[str], base: Path, split: str | None = None,
                  roots: Sequence[Path] | None = None) -> tuple[list[SceneInput], list[SceneProblem]]:
    """The scenes that paths and globs name (relative ones under ``base``): GeoTIFFs, and the
    items of STAC JSON files (an Item, or a Collection/Catalog walked down to its items).

    Raises:
        ConfigError: an entry names nothing, or a file of another kind.
    """
    out: list[SceneInput] = []
    problems: list[SceneProblem] = []
    for entry in entries:
        p = Path(entry).expanduser()
        p = p if p.is_absolute() else base / p
        found = sorted(glob.glob(str(p))) if any(c in entry for c in "*?[") else [str(p)] if p.exists() else []
        if not found:
            raise ConfigError(f"scene {entry!r}: no such file{' (under ' + str(base) + ')' if base else ''}")
        for f in found:
            suffix = Path(f).suffix.lower()
            if suffix in RASTER_SUFFIXES:
                out.append(SceneInput(str(Path(f).resolve()), None, split))
            elif suffix == ".json":
                read = read_stac(f, roots)
                problems += [SceneProblem(link, why) for link, why in read.errors]
                out += [SceneInput(it.path, it, split) for it in read.items]
            else:
                raise ConfigError(f"scene {f}: expected a GeoTIFF (.tif) or a STAC JSON file")
    return out, problems


def scene_bands(first: SceneInput) -> list[str]:
    """The band names of a scene, for a recipe that names none: a GeoTIFF's descriptions
    (``band<N>`` for unnamed bands), a STAC item's largest data asset's ``eo:bands`` names.

    Raises:
        ConfigError: a STAC item whose bands are in one asset each (name them in data.bands).
    """
    if first.item is None:
        with open_raster(first.path) as ds:
            return display_names(ds.descriptions)
    assets = [a for a in first.item.assets.values() if a.bands and "visual" not in a.roles] or \
        [a for a in first.item.assets.values() if a.bands]
    best = max(assets, key=lambda a: len(a.bands), default=None)
    if best is None or len(best.bands) < 2:
        raise ConfigError(f"{first.id}: its bands are in separate assets; name the bands to train on in data.bands")
    return [b.name or b.common_name or f"band{b.index + 1}" for b in best.bands]


def _plan(s: SceneInput, bands: Sequence[str], radiometry: Radiometry) -> BandPlan:
    if s.item is not None:
        return plan_item(s.item, bands, radiometry)
    return plan_geotiff(s.path, bands, radiometry)


def data_radiometry(plan: BandPlan) -> Radiometry:
    """What a plan's pixels mean, as the data says (the first band's source)."""
    return plan.sources[0].radiometry if plan.sources else UNKNOWN


@dataclass
class Planned:
    """The scenes (``None`` where refused, in input order), the refused ones, and what the
    training set's pixels are."""

    scenes: list[SceneInfo | None]
    problems: list[SceneProblem]
    warnings: list[str]
    bands: list[str]
    radiometry: Radiometry
    gsd_m: float | None


def plan_scenes(inputs: Sequence[SceneInput], bands: Sequence[str], declared: Radiometry | None,
                gsd_m: float | None, note: Callable[[str], None] | None = None) -> Planned:
    """Plan every scene against one training radiometry and GSD.

    The training radiometry is ``declared`` (the recipe's ``data.radiometry``) or that of the
    first scene; a scene that cannot be reconciled with it is refused (listed with why).

    Raises:
        ConfigError: the first scene's pixels are of unknown meaning and nothing is declared;
            scenes at different GSDs and no ``gsd_m``.
    """
    scenes: list[SceneInfo | None] = []
    problems: list[SceneProblem] = []
    warnings: list[str] = []
    training = declared
    names: dict[str, int] = {}
    repeated: dict[str, list[str]] = {}
    first_gsd: tuple[float, str] | None = None
    for s in inputs:
        try:
            raw = _plan(s, bands, UNKNOWN)
            derived = data_radiometry(raw)
            if training is None:
                if derived.kind == "unknown":
                    raise ConfigError(
                        f"{s.path}: the meaning of its pixel values is not declared ({derived.describe()}): set "
                        "data.radiometry, e.g. {kind: reflectance, bits: 16, level: L2A, scale: 0.0001, offset: 0}")
                training = derived
            if derived.kind == "unknown" and declared is None:
                raise RadiometryMismatch(
                    f"the meaning of its pixel values is not declared ({derived.describe()}) and data.radiometry "
                    f"does not say it: it cannot be taken as the other scenes' {training.describe()}")
            plan = raw if derived.kind == "unknown" else _plan(s, bands, training)
            grid = grid_for(plan, resolution_m=gsd_m) if gsd_m else grid_for(plan)
            g = round(max(pixel_size_m(grid.crs, grid.affine, grid.width, grid.height)), 3)
        except InputError as exc:
            problems.append(SceneProblem(s.path, str(exc)))
            scenes.append(None)
            continue
        if gsd_m is None:
            if first_gsd is None:
                first_gsd = (g, s.path)
            elif abs(g / first_gsd[0] - 1) > GSD_TOLERANCE:
                raise ConfigError(f"scenes at different ground sampling distances: {first_gsd[1]} "
                                  f"{first_gsd[0]:.3g} m, "
                                  f"{s.path} {g:.3g} m: set data.gsd_m to read them all at one")
        for w in plan.warnings:
            if not w.startswith(_NO_MODEL_RADIOMETRY):
                repeated.setdefault(w.replace(s.id, "\0").replace(s.path, "\0"), []).append(w)
        if derived.kind == "unknown":
            repeated.setdefault(f"\0 {training}", []).append(
                f"{s.id}: pixel values taken as {training.describe()} (data.radiometry)")
        sid = s.id
        names[sid] = names.get(sid, 0) + 1
        if names[sid] > 1:
            sid = f"{sid}~{names[sid]}"
        scenes.append(SceneInfo(sid, s.path, plan, grid, g, s.split, plan.acquired, derived))
        if note is not None:
            note(sid)
    for texts in repeated.values():
        more = len(texts) - 1
        warnings.append(texts[0] + (f" (and the same for {more} more scene(s))" if more else ""))
    usable = [sc for sc in scenes if sc is not None]
    gsd = gsd_m if gsd_m is not None else (usable[0].gsd_m if usable else None)
    return Planned(scenes, problems, warnings, list(bands), training or UNKNOWN, gsd)


def bands_for_clouds(bands: Sequence[str]) -> list[str | None]:
    """Band names as Sentinel-2 ids (``B08A`` -> ``B8A``) for `vision.clouds`."""
    return [band_id(b, None) for b in bands]


def scene_cloud_method(scene: SceneInfo, training: Radiometry, bands: Sequence[str]) -> str | None:
    """``scl``, ``s2cloudless`` or ``None``, as `vision infer` decides."""
    return cloud_method(scene.plan.cloud_layer is not None, training.level, bands_for_clouds(bands))


@dataclass
class WindowRead:
    """A window's outcome: its pixels ``H x W x C``, or why it was skipped."""

    candidate: Candidate
    pixels: np.ndarray | None
    cloud: float | None = None
    skip: WindowSkip | None = None


def _chunks(cands: Sequence[Candidate]) -> dict[tuple[int, int], list[Candidate]]:
    out: dict[tuple[int, int], list[Candidate]] = {}
    for c in sorted(cands, key=lambda c: (c.row, c.col)):
        out.setdefault((c.row // CHUNK, c.col // CHUNK), []).append(c)
    return out


def read_windows(scene: SceneInfo, cands: Sequence[Candidate], opts: SamplingOptions, method: str | None,
                 training: Radiometry, bands: Sequence[str], clouds: S2Cloudless | None = None
                 ) -> Iterator[WindowRead]:
    """Read the windows of one scene chunk by chunk and judge each (nodata, clouds).

    Raises:
        UnreadableInputError: a file of the scene cannot be read.
    """
    h, w = opts.size
    with contextlib.ExitStack() as stack:
        sc = stack.enter_context(open_scene(scene.plan, grid=scene.grid))
        scl = (stack.enter_context(open_scene(scene.plan, grid=scene.grid, cloud_layer=True))
               if method == "scl" else None)
        for group in _chunks(cands).values():
            r0 = min(c.row for c in group)
            c0 = min(c.col for c in group)
            r1 = max(c.row for c in group) + h
            c1 = max(c.col for c in group) + w
            px = sc.read((r0, c0, r1 - r0, c1 - c0))
            wins = [(c.row, c.col, h, w) for c in group]
            fractions: list[float | None] = [None] * len(group)
            if scl is not None:
                fractions = scl_fractions(scl.read((r0, c0, r1 - r0, c1 - c0)).data[0], px.valid, (r0, c0), wins)
            elif method == "s2cloudless":
                fractions = _s2cloudless(px.data, px.valid, (r0, c0), wins, training, bands, clouds)
            for c, frac in zip(group, fractions, strict=True):
                yield _judge(c, px.data, px.valid, (r0, c0), opts, frac)


def _judge(c: Candidate, data: np.ndarray, valid: np.ndarray, origin: tuple[int, int], opts: SamplingOptions,
           cloud: float | None) -> WindowRead:
    h, w = opts.size
    r, k = c.row - origin[0], c.col - origin[1]
    ok = valid[r:r + h, k:k + w]
    bad = 1.0 - float(ok.mean())
    if bad > opts.max_nodata + 1e-12:
        return WindowRead(c, None, cloud, WindowSkip(c, "nodata", f"{bad:.1%} of its pixels hold no data "
                                                                  f"(more than max_nodata {opts.max_nodata:g})"))
    if cloud is not None and cloud > opts.max_cloud:
        return WindowRead(c, None, cloud, WindowSkip(c, "cloudy", f"cloud fraction {cloud:.2f} > max_cloud "
                                                                  f"{opts.max_cloud:g}"))
    return WindowRead(c, np.ascontiguousarray(np.moveaxis(data[:, r:r + h, k:k + w], 0, -1)), cloud)


def _s2cloudless(data: np.ndarray, valid: np.ndarray, origin: tuple[int, int],
                 wins: Sequence[tuple[int, int, int, int]], training: Radiometry, bands: Sequence[str],
                 clouds: S2Cloudless | None) -> list[float | None]:
    idx = s2cloudless_band_indices(bands_for_clouds(bands))
    if idx is None or clouds is None:
        return [None] * len(wins)
    r0, c0 = origin
    x = np.stack([data[idx, r - r0:r - r0 + h, c - c0:c - c0 + w] for r, c, h, w in wins])
    v = np.stack([valid[r - r0:r - r0 + h, c - c0:c - c0 + w] for r, c, h, w in wins])
    refl = to_reflectance(x, training.scale if training.scale is not None else 1e-4, training.offset or 0.0)
    return clouds.fractions(refl, v)
