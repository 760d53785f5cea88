"""Planning a scene against the model's contract: which file and band feeds each of the
model's bands (`vision.stac.plan_item` for a STAC item, `vision.scene.plan_geotiff` for a
GeoTIFF), whether the radiometry fits (harmonised, refused, or allowed to mismatch), at which
ground sampling distance its windows are read (`vision.geo.decide_gsd`), and how its clouds
are measured.

The answer is a `SceneInfo` (the grid its windows are placed on, and how to read it) and a
`SceneFit` (what the manifest records for the input). A plain GeoTIFF read on its own grid,
with nothing to harmonise and no clouds to measure, keeps the fast path (one windowed read
of the file per chunk); everything else is read through `vision.scene`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rasterio.crs import CRS

from inference.choices import Gsd, ResamplingKind
from inference.model import ModelInfo
from inference.readers import CloudSource, SceneInfo, SceneTooLargeError, crs_string
from vision.bands import canonical_band, raster_band_names
from vision.clouds import S2CLOUDLESS_BANDS, cloud_method
from vision.errors import ConfigError, InputError
from vision.geo import GSD_TOLERANCE, GsdDecision, decide_gsd, pixel_size_m
from vision.radiometry import S2_SCALE, UNKNOWN
from vision.raster import open_raster
from vision.scene import BandPlan, Grid, grid_for, open_scene, plan_geotiff
from vision.stac import StacItem, plan_item

#: How a refused GSD is overridden on the command line.
GSD_OVERRIDE = "pass --gsd native to run it anyway (the mismatch is recorded)"


@dataclass(frozen=True)
class FitOptions:
    """The options that decide how inputs are fitted to the model."""

    allow_mismatch: bool = False
    gsd: Gsd = Gsd.MODEL
    resolution: float | None = None
    resampling: ResamplingKind | None = ResamplingKind.BILINEAR  # None: `grid_resampling`
    grid: Grid | None = None  # --grid: every scene read onto this one
    grid_source: str = ""  # the raster it came from, for the manifest

    def __post_init__(self) -> None:
        object.__setattr__(self, "gsd", Gsd.parse(self.gsd))
        if self.resampling is not None or self.grid is None:
            object.__setattr__(self, "resampling", ResamplingKind.parse(self.resampling or ResamplingKind.BILINEAR))


@dataclass(frozen=True)
class SceneFit:
    """What the manifest records about how a scene was fitted to the model.

    Attributes:
        band_plan: which asset fed which band, and why (`BandPlan.to_manifest`).
        gsd: the GSD decision.
        pixel_m: the ground size ``(x, y)`` of the grid's pixels the windows are read on.
        window_m: the ground size ``(rows, cols)`` of one window.
        cloud_method: ``scl``, ``s2cloudless`` or ``None``.
        read: ``file`` (the fast path) or ``vision.scene``.
        files: every file read for the scene (they make its ``input_sha256``).
    """

    band_plan: BandPlan
    gsd: GsdDecision
    pixel_m: tuple[float, float]
    window_m: tuple[float, float]
    cloud_method: str | None
    read: str
    files: tuple[str, ...]

    def to_manifest(self) -> dict[str, Any]:
        return {**self.band_plan.to_manifest(), "gsd": self.gsd.to_obj(),
                "pixel_m": [round(v, 4) for v in self.pixel_m],
                "window_m": [round(v, 3) for v in self.window_m],
                "cloud_method": self.cloud_method, "read": self.read}


def plan_geotiff_scene(info: SceneInfo, model: ModelInfo, fit: FitOptions,
                       max_pixels: int) -> tuple[SceneInfo, SceneFit]:
    """Fit a GeoTIFF scene (its header already probed into ``info``).

    Raises:
        InputError: its bands, radiometry or GSD do not fit (the reason says why).
    """
    plan = plan_geotiff(info.path, model.bands, model.radiometry, fit.allow_mismatch)
    with open_raster(info.path) as ds:
        names = raster_band_names(ds.descriptions)
    cloud = None
    level = plan.sources[0].radiometry.level
    if cloud_method(False, level, names) == "s2cloudless":
        cloud = _s2cloudless(plan_geotiff(info.path, S2CLOUDLESS_BANDS, UNKNOWN))
    return _finish(plan, model, fit, max_pixels, info, cloud)


def plan_stac_scene(item: StacItem, model: ModelInfo, fit: FitOptions,
                    max_pixels: int) -> tuple[SceneInfo, SceneFit]:
    """Fit a STAC item: its assets per model band, read through `vision.scene`.

    Raises:
        InputError: an asset is missing or remote, the item lacks the model's bands, or its
            radiometry or GSD do not fit (the reason says why).
    """
    plan = plan_item(item, model.bands, model.radiometry, fit.allow_mismatch)
    cloud = None
    if plan.cloud_layer is not None:
        cloud = CloudSource("scl")
    else:
        level = plan.sources[0].radiometry.level
        names = [canonical_band(b.band_id) for a in item.assets.values() for b in a.bands]
        if cloud_method(False, level, names) == "s2cloudless":
            try:
                cloud = _s2cloudless(plan_item(item, S2CLOUDLESS_BANDS, UNKNOWN))
            except InputError:
                cloud = None  # the ten bands are not all readable: no cloud fraction
    return _finish(plan, model, fit, max_pixels, None, cloud)


def _s2cloudless(plan: BandPlan) -> CloudSource:
    return CloudSource("s2cloudless", plan,
                       tuple(s.radiometry.scale if s.radiometry.scale is not None else S2_SCALE
                             for s in plan.sources),
                       tuple(s.radiometry.offset or 0.0 for s in plan.sources))


def _finish(plan: BandPlan, model: ModelInfo, fit: FitOptions, max_pixels: int,
            fast: SceneInfo | None, cloud: CloudSource | None) -> tuple[SceneInfo, SceneFit]:
    native = grid_for(plan)
    try:
        px = pixel_size_m(native.crs, native.affine, native.width, native.height)
    except ValueError as exc:
        raise InputError(f"{plan.source}: {exc}") from None
    decision = decide_gsd(max(px), model.gsd_m, mode=str(fit.gsd),  # type: ignore[arg-type]
                          allow_coarse=fit.gsd is Gsd.NATIVE, override=GSD_OVERRIDE)
    resampling = fit.resampling
    if fit.grid is not None:
        target, decision = fit.grid, _on_grid(fit, decision, native, model)
        if resampling is None:
            resampling = grid_resampling(max(px), decision.target_m)
            decision = dataclasses.replace(decision, note=f"{decision.note}; resampled with {resampling}")
    elif fit.resolution is not None:
        target = grid_for(plan, resolution_m=fit.resolution)
        decision = dataclasses.replace(decision, resample=target != native, target_m=fit.resolution,
                                       note="; ".join(n for n in (decision.note, f"read at --resolution "
                                                                  f"{fit.resolution:g} m") if n))
    elif decision.resample:
        target = grid_for(plan, resolution_m=decision.target_m)
    else:
        target = native
    if target.width * target.height > max_pixels:
        raise SceneTooLargeError(
            f"scene of {target.width}x{target.height} = {target.width * target.height:,} pixels on the "
            f"grid it is read on, more than --max-pixels {max_pixels:,}; pass a larger --max-pixels")
    tx, ty = pixel_size_m(target.crs, target.affine, target.width, target.height)
    h, w = model.input_size
    files = tuple(dict.fromkeys([*(s.path for s in plan.sources),
                                 *([plan.cloud_layer.path] if cloud and cloud.method == "scl"
                                   and plan.cloud_layer else []),
                                 *(s.path for s in (cloud.plan.sources if cloud and cloud.plan else ()))]))
    single = fast is not None and len(files) == 1
    if single and target == native and plan.harmonisation.identity and cloud is None:
        assert fast is not None
        info = dataclasses.replace(fast, item_id=plan.item_id, acquired=plan.acquired)
        read = "file"
    else:
        info = _planned_info(plan, target, str(resampling), cloud)
        read = "vision.scene"
    return info, SceneFit(plan, decision, (tx, ty), (h * ty, w * tx), cloud.method if cloud else None, read,
                          files)


def read_grid(path: str | Path, model: ModelInfo, gsd: Gsd) -> Grid:
    """The grid of a georeferenced raster (``--grid``: its CRS, transform and size), checked
    against the model once: its pixels must fit the model's GSD as an input's do (within
    10 %; ``--gsd native`` runs a mismatch, recorded on every scene).

    Raises:
        ConfigError: the file is not a raster this tool reads, has no CRS or geotransform, or
            its pixel size does not fit the model.
    """
    try:
        with open_raster(path) as ds:
            grid = Grid.of(ds)
        grid_m = max(pixel_size_m(grid.crs, grid.affine, grid.width, grid.height))
        on = decide_gsd(grid_m, model.gsd_m, mode="native", allow_coarse=True)
    except (InputError, OSError, ValueError) as exc:
        raise ConfigError(f"--grid {path}: {exc}") from None
    if gsd is Gsd.MODEL and on.ratio is not None and abs(on.ratio - 1.0) > GSD_TOLERANCE:
        raise ConfigError(f"--grid {path}: its pixels are {grid_m:.3g} m, the model was trained on {model.gsd_m:g} m: "
                          f"windows on that grid would not show what the model learnt; give a grid at the model's "
                          f"GSD, or {GSD_OVERRIDE}")
    return grid


def _on_grid(fit: FitOptions, native_decision: GsdDecision, native: Grid, model: ModelInfo) -> GsdDecision:
    """The GSD decision for a scene read onto ``--grid`` (checked against the model by
    `read_grid`): the scene itself passed the coarse check (``native_decision``)."""
    assert fit.grid is not None
    g = fit.grid
    grid_m = max(pixel_size_m(g.crs, g.affine, g.width, g.height))
    on = decide_gsd(grid_m, model.gsd_m, mode="native", allow_coarse=True)
    note = f"read on the grid of --grid {fit.grid_source} ({g.crs}, {g.width}x{g.height} pixels of {grid_m:.3g} m)"
    return dataclasses.replace(on, input_m=native_decision.input_m, resample=g != native,
                               note="; ".join(n for n in (native_decision.note, on.note, note) if n))


def grid_resampling(scene_m: float, grid_m: float) -> ResamplingKind:
    """How a scene is read onto ``--grid`` unless ``--resampling`` says: ``nearest`` when its
    pixels are the grid's size (within 10 %: only the grid changes, and each pixel keeps its
    value and the texture the model learnt; bilinear smooths it, and on the reference model
    put a 2,304-window pair's EPSG:3857 date back on its UTM grid at 0.9635 agreement with
    the same-grid pair, nearest at 0.9918), else ``bilinear``."""
    return ResamplingKind.NEAREST if abs(scene_m / grid_m - 1.0) <= GSD_TOLERANCE else ResamplingKind.BILINEAR


def _planned_info(plan: BandPlan, grid: Grid, resampling: str, cloud: CloudSource | None) -> SceneInfo:
    with open_scene(plan, grid=grid, resampling=resampling) as scene:
        block, dtype = scene.block_shape, str(scene.dtype)
    crs = CRS.from_user_input(grid.crs)
    n = len(plan.sources)
    return SceneInfo(path=plan.source, width=grid.width, height=grid.height, dtype=dtype,
                     crs=str(crs_string(crs)), transform=grid.transform, bands=tuple(range(n)),
                     nodata=(None,) * n, dataset_mask=False, block_shape=block,
                     geographic=bool(crs.is_geographic), item_id=plan.item_id, acquired=plan.acquired,
                     band_plan=plan, resampling=resampling, cloud=cloud)
