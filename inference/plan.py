"""The plan of a job: every input's kind, every scene's grid and chunks, and the work units.

A *unit* is what is done, recorded and resumed as one piece: a block of chip files, or a
chunk of a scene's windows. Its id names its part file in the job folder, so ids must be
stable for the same inputs and options (the job's fingerprint guards that).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from inference.aoi import AreasOfInterest, WindowSelection
from inference.choices import Gsd
from inference.input_fit import ChipFit
from inference.model import ModelInfo
from inference.readers import (
    DEFAULT_MAX_PIXELS,
    RASTER_SUFFIXES,
    Probe,
    SceneInfo,
    error_reason,
    probe,
    utf8_path,
)
from inference.scenes import FitOptions, SceneFit, plan_geotiff_scene, plan_stac_scene
from inference.tiling import Chunk, TileGrid, chunk_grid, restrict_chunks, window_rects
from vision.errors import InputError, UnreadableInputError
from vision.geo import GsdDecision
from vision.hashing import file_sha256
from vision.stac import StacError, StacItem, read_stac

#: Chip files per unit: big enough to amortise a part file, small enough to resume cheaply.
CHIP_BLOCK = 256


@dataclass(frozen=True)
class ChipEntry:
    """A file classified as one row; ``error`` is set when probing already failed.

    ``source`` is the name on disk where ``path`` (valid UTF-8, for the table) differs;
    ``fit`` how its pixels fit the model (radiometry, clouds), shared by chips of a kind;
    ``gsd`` how a georeferenced chip's pixel size fits the model's GSD (for the manifest).
    """

    path: str
    error: str | None = None
    source: str | None = None
    fit: ChipFit | None = None
    gsd: GsdDecision | None = None


@dataclass(frozen=True)
class ScenePlan:
    """A scene to tile: header facts, grid, chunks, hash and output file stem, and how it
    fits the model (``fit``: band plan, GSD, clouds; for the manifest). With ``--aoi``,
    ``aoi`` says which windows meet an area (only those are in ``chunks``) and their
    ``aoi_id``; it is plain data, so it travels with the plan (Ray)."""

    index: int
    info: SceneInfo
    grid: TileGrid
    chunks: tuple[Chunk, ...]
    sha256: str
    stem: str
    fit: SceneFit | None = None
    aoi: WindowSelection | None = None

    @property
    def path(self) -> str:
        return self.info.path

    @property
    def n_windows(self) -> int:
        """Windows read and classified (all of the grid's without an area of interest)."""
        return sum(len(c) for c in self.chunks)

    def aoi_id(self, row_off: int, col_off: int) -> str | None:
        """The ``aoi_id`` of the window at ``(row_off, col_off)`` (``None`` without ``--aoi``)."""
        if self.aoi is None:
            return None
        return self.aoi.aoi_id((row_off // self.grid.stride[0]) * self.grid.cols + col_off // self.grid.stride[1])


@dataclass(frozen=True)
class Unit:
    """One piece of work: a block of chips (``chips``) or one chunk of a scene (``scene``)."""

    uid: str
    kind: str
    chips: tuple[ChipEntry, ...] = ()
    scene: int | None = None
    chunk: int | None = None
    n_rows: int = 0


@dataclass(frozen=True)
class Plan:
    files: tuple[str, ...]  # as found on disk (maybe not UTF-8): the chips' paths are
    chips: tuple[ChipEntry, ...]
    scenes: tuple[ScenePlan, ...]
    units: tuple[Unit, ...]
    #: With ``--aoi``: the scenes no area meets (not read, not in ``scenes``).
    outside_aoi: tuple[str, ...] = ()

    @property
    def n_windows(self) -> int:
        return sum(s.n_windows for s in self.scenes)

    def digest(self) -> str:
        """Identity of the work split (files, kinds, grids): a resumed job must match it."""
        h = hashlib.sha256()
        for u in self.units:
            h.update(f"{u.uid}:{u.n_rows};".encode())
        for c in self.chips:
            h.update(f"c:{c.path}:{c.error};".encode())
        for s in self.scenes:
            h.update(f"s:{s.path}:{s.sha256}:{s.grid};".encode())
        for p in self.outside_aoi:
            h.update(f"o:{p};".encode())
        return h.hexdigest()


#: The stem no scene may have: its STAC item would be the job's ``stac/catalog.json``.
RESERVED_STEM = "catalog"


def _stems(scenes: Sequence[SceneInfo]) -> dict[str, str]:
    """Output file stems per scene (a STAC item's id, else the file's stem); a stem shared by
    two scenes gets a short path hash."""
    def stem(info: SceneInfo) -> str:
        if info.band_plan is not None and info.path.lower().endswith(".json") and info.item_id:
            return re.sub(r"[^A-Za-z0-9._-]+", "_", info.item_id).strip("._") or Path(info.path).stem
        return Path(info.path).stem

    base = {s.path: stem(s) for s in scenes}
    counts: dict[str, int] = {}
    for s in base.values():
        counts[s] = counts.get(s, 0) + 1
    return {  # `catalog` would be stac/catalog.json, the job's STAC catalog: never a scene's
        p: s if counts[s] == 1 and s != RESERVED_STEM else f"{s}-{hashlib.sha1(p.encode()).hexdigest()[:8]}"
        for p, s in base.items()
    }


def _scene_sha(info: SceneInfo, fit: SceneFit | None) -> str:
    """The scene's ``input_sha256``: its file's, or (several files, a STAC item) the sha256 of
    the item's JSON and every file read, in order."""
    files = fit.files if fit is not None else (info.path,)
    if files == (info.path,):
        return file_sha256(info.path)
    h = hashlib.sha256()
    for f in (info.path, *files) if info.path not in files else files:
        h.update(file_sha256(f).encode())
    return h.hexdigest()


#: A planned input: a chip, an error, or a scene (and how it fits the model).
_Planned = ChipEntry | tuple[SceneInfo, SceneFit | None]


def _fit_scene(info: SceneInfo, model: ModelInfo, fit: FitOptions, max_pixels: int) -> _Planned:
    try:
        return plan_geotiff_scene(info, model, fit, max_pixels)
    except InputError as exc:
        return ChipEntry(info.path, error_reason(exc, info.path))
    except (OSError, ValueError) as exc:  # rasterio's errors are OSErrors
        return ChipEntry(info.path, error_reason(
            UnreadableInputError(f"cannot plan the scene ({exc})"), info.path))


def _fit_item(item: StacItem, model: ModelInfo, fit: FitOptions, max_pixels: int) -> _Planned:
    try:
        return plan_stac_scene(item, model, fit, max_pixels)
    except InputError as exc:
        return ChipEntry(item.path, error_reason(exc, item.path))
    except (OSError, ValueError) as exc:
        return ChipEntry(item.path, error_reason(
            UnreadableInputError(f"cannot plan STAC item {item.id} ({exc})"), item.path))


def _stac_entries(path: str, roots: Sequence[Path] | None) -> tuple[list[StacItem], list[ChipEntry]]:
    """The items of a STAC file, and an error entry for it or each link that cannot be read
    (or, with ``roots``, that resolves outside them)."""
    shown, bad = utf8_path(path)
    if bad is not None:
        return [], [ChipEntry(shown, bad, source=path)]
    try:
        found = read_stac(path, roots)
    except InputError as exc:
        return [], [ChipEntry(path, error_reason(exc, path))]
    errors = [ChipEntry(utf8_path(href)[0], error_reason(StacError(reason), href)) for href, reason in found.errors]
    return found.items, errors


def make_plan(files: Sequence[str], model: ModelInfo, stride: tuple[int, int],
              workers: int = 1,
              on_probe: Callable[[Probe], None] | None = None,
              max_pixels: int = DEFAULT_MAX_PIXELS, fit: FitOptions | None = None,
              stac_files: Collection[str] = (), aois: AreasOfInterest | None = None,
              input_roots: Sequence[Path] = ()) -> Plan:
    """Probe every file (rasters in parallel), fit each scene to the model, and split the
    work into units.

    ``stac_files`` are STAC Item/Collection/Catalog JSON files: each item below them is a
    scene; with ``input_roots``, every file an item names must resolve inside one of them.
    ``files`` may hold names that are not valid UTF-8: they become error entries (the
    plan, its digest and the table hold valid UTF-8 only). With ``aois`` only the windows
    that meet an area are planned; a scene none meets is left out (`Plan.outside_aoi`).
    """
    fit = fit or FitOptions()
    stac = set(stac_files)
    radiometry, allow, native = model.radiometry, fit.allow_mismatch, fit.gsd is Gsd.NATIVE

    def run(f: str) -> Probe:
        return probe(f, model.bands, model.input_size, max_pixels, radiometry, allow, model.gsd_m, native)

    # Only rasters open a header; the rest is decided by suffix in ~1 us, far less than a
    # thread pool's hand-off (0.3 s for 10,000 JPEG chips).
    opens = [k for k, f in enumerate(files) if f not in stac
             and os.path.splitext(f)[1].lower() in RASTER_SUFFIXES]
    found: dict[int, Probe] = {}
    with ThreadPoolExecutor(max(1, workers)) as pool:
        found.update(zip(opens, pool.map(run, [files[k] for k in opens]), strict=True))
        # In input order: chips and errors as they are; scenes and STAC items fitted in the pool.
        planned: list[_Planned | Future[_Planned]] = []
        seen_items: set[str] = set()
        for k, f in enumerate(files):
            if f in stac:
                items, errors = _stac_entries(f, input_roots or None)
                planned += errors
                # An item reached twice (a catalog and one of its items both given) is one scene.
                new = [it for it in items if it.path not in seen_items]
                seen_items.update(it.path for it in new)
                planned += [pool.submit(_fit_item, it, model, fit, max_pixels) for it in new]
                continue
            pr = found[k] if k in found else run(f)
            if on_probe is not None:
                on_probe(pr)
            if pr.kind == "scene" and pr.scene is not None:
                planned.append(pool.submit(_fit_scene, pr.scene, model, fit, max_pixels))
            else:
                planned.append(ChipEntry(pr.path, pr.error, pr.source, pr.fit, pr.gsd))
        results = [p.result() if isinstance(p, Future) else p for p in planned]
    chips: list[ChipEntry] = []
    scene_infos: list[tuple[SceneInfo, SceneFit | None]] = []
    for what in results:
        if isinstance(what, ChipEntry):
            chips.append(what)
        else:
            scene_infos.append(what)
    stems = _stems([s for s, _ in scene_infos])
    with ThreadPoolExecutor(max(1, workers)) as pool:
        hashes = list(pool.map(lambda s: _scene_sha(*s), scene_infos))
    planned_scenes = [_scene_plan(k, info, sf, sha, stems[info.path], model, stride, aois)
                      for k, ((info, sf), sha) in enumerate(zip(scene_infos, hashes, strict=True))]
    outside = tuple(s.path for s in planned_scenes if not s.chunks)
    scenes = [replace(s, index=k) for k, s in enumerate(s for s in planned_scenes if s.chunks)]
    units: list[Unit] = []
    for b in range(0, len(chips), CHIP_BLOCK):
        block = tuple(chips[b: b + CHIP_BLOCK])
        units.append(Unit(f"c{b // CHIP_BLOCK:06d}", "chips", chips=block, n_rows=len(block)))
    for s in scenes:
        for ch in s.chunks:
            units.append(Unit(f"s{s.index:05d}-{ch.index:06d}", "scene", scene=s.index,
                              chunk=ch.index, n_rows=len(ch)))
    return Plan(tuple(files), tuple(chips), tuple(scenes), tuple(units), outside)


def _scene_plan(index: int, info: SceneInfo, fit: SceneFit | None, sha: str, stem: str,
                model: ModelInfo, stride: tuple[int, int],
                aois: AreasOfInterest | None = None) -> ScenePlan:
    """A scene's windows and chunks: the one place its window list is made. With areas of
    interest, the windows are selected on the grid they are read in (after any resampling
    to the model's GSD) and the chunks cut down to rectangles of kept windows
    (`restrict_chunks`): a window outside every area is never read."""
    grid = TileGrid(info.height, info.width, model.input_size, stride)
    chunks = chunk_grid(grid, info.block_shape)
    if aois is None:
        return ScenePlan(index, info, grid, tuple(chunks), sha, stem, fit)
    sel = aois.select(info.crs, info.affine, grid.height, grid.width, window_rects(grid))
    kept = restrict_chunks(grid, chunks, sel.keep)
    return ScenePlan(index, info, grid, tuple(kept), sha, stem, fit, sel)
