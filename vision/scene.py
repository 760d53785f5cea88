"""A scene as distributed: a model's bands from one or several raster files (STAC assets) of
different resolutions, read window by window onto one target grid.

A `BandPlan` says which file (asset) and band index feeds each of the model's bands, why,
and with which radiometric `Harmonisation`; `vision.stac.plan_item` builds one from a STAC
item, `plan_geotiff` from a plain multi-band GeoTIFF. `Scene` opens the files of a plan
(each through `vision.raster.open_raster`) and reads windows of its `Grid`:

- the grid is by default that of the finest band (its pixels are read as they are); a
  resolution in CRS units or in metres (`grid_for`) gives a coarser or finer one;
- every file is read once per call, for all of its bands, with a windowed read resampled
  onto the window (``out_shape`` + ``Resampling`` for files in the grid's CRS, a
  ``WarpedVRT`` for others): bilinear for reflectance, nearest for categorical layers (SCL),
  selectable; so a caller that reads one block-aligned chunk of windows at a time never
  holds more than that chunk, and never reads a file twice for one chunk;
- the result is ``C x H x W`` raw values in the model's band order plus an ``H x W``
  validity mask (inside every file's extent, not its nodata in all of its bands, finite,
  not masked), harmonised as float32 when the plan's harmonisation is not the identity.

`Scene.reads` counts the reads (and `Scene.on_read` sees each), so a test can show that
windows outside an area of interest are never read.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags, Resampling
from rasterio.errors import RasterioError
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from vision.bands import canonical_band, match_bands, raster_band_names
from vision.errors import NotGeoreferencedError, UnreadableInputError
from vision.geo import crs_resolution
from vision.radiometry import IDENTITY, Harmonisation, Radiometry, geotiff_radiometry, reconcile
from vision.raster import ALLOWED_DRIVERS, gdal_env, open_raster

#: Largest read one call may ask for, in pixels per band (callers read chunks, not products).
MAX_READ_PIXELS = 8192 * 8192
#: Block shape reported when the grid is no file's own (chunks are aligned to it).
DEFAULT_BLOCK = (256, 256)
_EPS = 1e-6


@dataclass(frozen=True)
class BandSource:
    """Where one of the model's bands comes from.

    Attributes:
        band: the model's band name.
        asset: the STAC asset key (``file`` for a plain GeoTIFF).
        path: the file, resolved.
        index: 0-based band index in that file.
        radiometry: what the file's numbers mean.
        harmonisation: the one-band map onto the model's numbers.
        reason: why this asset was chosen.
        refused: ``(asset, why not)`` for the other candidates.
        nodata: nodata declared by the catalog (used when the file declares none).
        categorical: a class layer (read with nearest neighbour).
    """

    band: str
    asset: str
    path: str
    index: int
    radiometry: Radiometry
    harmonisation: Harmonisation = IDENTITY
    reason: str = ""
    refused: tuple[tuple[str, str], ...] = ()
    nodata: float | None = None
    categorical: bool = False

    def to_obj(self) -> dict[str, Any]:
        return {"band": self.band, "asset": self.asset, "path": self.path, "band_index": self.index,
                "radiometry": self.radiometry.to_obj(), "harmonisation": self.harmonisation.to_obj(),
                "reason": self.reason, "refused": [{"asset": a, "reason": r} for a, r in self.refused]}


@dataclass(frozen=True)
class BandPlan:
    """How an input feeds a model: a source per model band, in the model's order.

    Attributes:
        item_id: the STAC item id, or the file's stem.
        acquired: acquisition time (UTC), ``None`` when unknown.
        source: the STAC JSON or GeoTIFF the plan was made from.
        sources: one per model band.
        warnings: every assumption made (radiometry not declared, band order doubtful, ...).
        mismatch: why the radiometry does not fit, when the caller allowed it to run anyway.
        cloud_layer: the scene classification layer (SCL), when the input has one.
    """

    item_id: str
    acquired: datetime | None
    source: str
    sources: tuple[BandSource, ...]
    warnings: tuple[str, ...] = ()
    mismatch: str | None = None
    cloud_layer: BandSource | None = None

    @property
    def bands(self) -> tuple[str, ...]:
        return tuple(s.band for s in self.sources)

    @property
    def harmonisation(self) -> Harmonisation:
        return Harmonisation.stack([s.harmonisation.per_band(1) for s in self.sources])

    def to_manifest(self) -> dict[str, Any]:
        """What the job's manifest records for this input."""
        return {"item_id": self.item_id, "acquired": self.acquired.isoformat() if self.acquired else None,
                "source": self.source, "bands": [s.to_obj() for s in self.sources],
                "harmonisation": self.harmonisation.to_obj(), "warnings": list(self.warnings),
                "radiometry_mismatch": self.mismatch,
                "cloud_layer": self.cloud_layer.to_obj() if self.cloud_layer else None}


def parse_tiff_datetime(value: object) -> datetime | None:
    """``TIFFTAG_DATETIME`` (``YYYY:MM:DD HH:MM:SS``, taken as UTC), or ``None``."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value.strip(), "%Y:%m:%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def plan_geotiff(path: str | Path, model_bands: Sequence[str], model_radiometry: Radiometry,
                 allow_mismatch: bool = False) -> BandPlan:
    """The plan of a plain GeoTIFF: the model's bands by band description (13 unnamed bands
    in EuroSAT order), else by position when the counts agree; radiometry from the scale/offset
    tags and dtype.

    Raises:
        UnreadableInputError, BandMismatchError: the file or its bands do not fit.
        RadiometryMismatch: its radiometry does not fit the model's (unless ``allow_mismatch``).
    """
    p = Path(path).resolve()
    with open_raster(p) as ds:
        names = raster_band_names(ds.descriptions)
        idx = match_bands(names, model_bands)
        ids = [canonical_band(n) for n in names]
        derived = geotiff_radiometry(ds.dtypes[0], ds.scales, ds.offsets, ids, str(p))
        acquired = parse_tiff_datetime(ds.tags().get("TIFFTAG_DATETIME"))
    rec = reconcile(model_radiometry, derived.radiometry, 1, allow_mismatch)
    how = "by band description" if all(names[k] for k in idx) else "by position (bands not named)"
    sources = tuple(
        BandSource(b, "file", str(p), k, derived.radiometry, rec.harmonisation,
                   f"band {k + 1} ({names[k] or 'unnamed'}) {how}; {derived.radiometry.describe()}")
        for b, k in zip(model_bands, idx, strict=True))
    return BandPlan(p.stem, acquired, str(p), sources, (*derived.warnings, *rec.warnings), rec.mismatch)


@dataclass(frozen=True)
class Grid:
    """A target pixel grid: CRS, affine transform and size."""

    crs: str
    transform: tuple[float, float, float, float, float, float]
    width: int
    height: int

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def res(self) -> tuple[float, float]:
        return abs(self.transform[0]), abs(self.transform[4])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t = self.affine
        corners = [t @ (c, r) for c, r in ((0, 0), (self.width, 0), (0, self.height), (self.width, self.height))]
        xs, ys = [p[0] for p in corners], [p[1] for p in corners]
        return min(xs), min(ys), max(xs), max(ys)

    def window_transform(self, window: tuple[int, int, int, int]) -> Affine:
        return self.affine @ Affine.translation(window[1], window[0])

    @classmethod
    def of(cls, ds: Any) -> Grid:
        """The grid of an open dataset."""
        if ds.crs is None or ds.transform == Affine.identity():
            raise NotGeoreferencedError(f"{ds.name}: no CRS or geotransform: cannot place it on a grid")
        return cls(ds.crs.to_string(), tuple(ds.transform)[:6], ds.width, ds.height)

    def with_resolution(self, res: float | tuple[float, float]) -> Grid:
        """The same origin and extent at another pixel size (in CRS units; rotation kept out)."""
        rx, ry = (res, res) if isinstance(res, (int, float)) else res
        if not (rx > 0 and ry > 0):
            raise ValueError(f"resolution must be positive, not {res}")
        t = self.affine
        if t.b or t.d:
            raise ValueError("a rotated grid cannot be given another resolution")
        w = max(1, math.ceil(self.width * abs(t.a) / rx - _EPS))
        h = max(1, math.ceil(self.height * abs(t.e) / ry - _EPS))
        return Grid(self.crs, (math.copysign(rx, t.a), 0.0, t.c, 0.0, math.copysign(ry, t.e), t.f), w, h)


def grid_for(plan: BandPlan, resolution: float | None = None, resolution_m: float | None = None) -> Grid:
    """The grid a plan is read on: the finest band's, or that extent at ``resolution`` (CRS
    units) or ``resolution_m`` (metres on the ground at the centre)."""
    best: tuple[float, Grid] | None = None
    for path in dict.fromkeys(s.path for s in plan.sources):
        with open_raster(path) as ds:
            g = Grid.of(ds)
        size = g.res[0] * g.res[1]
        if best is None or size < best[0] - _EPS:
            best = (size, g)
    assert best is not None, "a plan has at least one band"
    grid = best[1]
    if resolution_m is not None:
        return grid.with_resolution(crs_resolution(grid.crs, grid.affine, grid.width, grid.height, resolution_m))
    if resolution is not None:
        return grid.with_resolution(resolution)
    return grid


@dataclass
class ScenePixels:
    """A window read from a scene: ``C x H x W`` values and an ``H x W`` validity mask."""

    data: np.ndarray
    valid: np.ndarray


@dataclass
class _File:
    path: str
    ds: Any
    indexes: list[int]  # 1-based
    out: list[int]  # position of each index in the output
    nodata: list[float | None]
    resampling: Resampling
    aligned: bool  # same CRS, axis-aligned: read with out_shape; else through `vrt`
    masked: bool
    vrt: Any = None
    coverage: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # cols0, cols1, rows0, rows1 on the grid


def _resampling(value: Resampling | str | None, default: Resampling) -> Resampling:
    if value is None:
        return default
    if isinstance(value, Resampling):
        return value
    try:
        return Resampling[value]
    except KeyError:
        raise ValueError(f"unknown resampling {value!r} (e.g. nearest, bilinear, cubic, average)") from None


@dataclass
class Scene:
    """The files of a plan, open, read window by window onto ``grid``.

    Use as a context manager (`open_scene`). Reads are counted in ``reads``; ``on_read`` is
    called with ``(path, source window)`` for each.
    """

    sources: tuple[BandSource, ...]
    grid: Grid
    harmonisation: Harmonisation = IDENTITY
    resampling: Resampling | str | None = None
    on_read: Callable[[str, tuple[float, float, float, float]], None] | None = None
    reads: int = 0
    _files: list[_File] = field(default_factory=list)
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    def __post_init__(self) -> None:
        try:
            self._open()
        except BaseException:
            self._stack.close()
            raise

    def _open(self) -> None:
        # The files are checked by `open_raster` (magic bytes, driver allow-list, size guard),
        # then opened again on their own: a dataset held by `open_raster` keeps its GDAL
        # environment entered, which breaks when a scene outlives a call or is closed by
        # another thread (a reader thread keeps its scenes open across chunks). Opening and
        # every read run inside the project's GDAL settings (`gdal_env`).
        with gdal_env():
            self._open_files()

    def _open_files(self) -> None:
        crs = CRS.from_user_input(self.grid.crs)
        by_path: dict[tuple[str, bool], _File] = {}
        for pos, s in enumerate(self.sources):
            key = (s.path, s.categorical)
            if key not in by_path:
                with open_raster(s.path):
                    pass
                ds = self._stack.enter_context(rasterio.open(s.path))
                if ds.driver not in ALLOWED_DRIVERS:  # the file read, not only the one checked
                    raise UnreadableInputError(f"{s.path}: driver {ds.driver!r} is not allowed "
                                               f"(allowed: {', '.join(ALLOWED_DRIVERS)})")
                if ds.crs is None or ds.transform == Affine.identity():
                    raise NotGeoreferencedError(f"{s.path}: no CRS or geotransform: cannot place it on the grid")
                default = Resampling.nearest if s.categorical else Resampling.bilinear
                t = ds.transform
                aligned = ds.crs == crs and not (t.b or t.d) and not (self.grid.transform[1] or self.grid.transform[3])
                f = _File(s.path, ds, [], [], [], Resampling.nearest if s.categorical
                          else _resampling(self.resampling, default), aligned, False)
                f.coverage = _coverage(ds, self.grid) if aligned else (0, self.grid.width, 0, self.grid.height)
                by_path[key] = f
                self._files.append(f)
            f = by_path[key]
            if not 0 <= s.index < f.ds.count:
                raise UnreadableInputError(f"{s.path}: has {f.ds.count} bands, no band {s.index + 1} for {s.band}")
            f.indexes.append(s.index + 1)
            f.out.append(pos)
            nd = f.ds.nodatavals[s.index]
            f.nodata.append(nd if nd is not None else s.nodata)
            f.masked |= any(m in f.ds.mask_flag_enums[s.index] for m in (MaskFlags.per_dataset, MaskFlags.alpha))
        for f in self._files:
            if not f.aligned:
                f.vrt = self._stack.enter_context(WarpedVRT(
                    f.ds, crs=crs, transform=self.grid.affine, width=self.grid.width, height=self.grid.height,
                    resampling=f.resampling, add_alpha=True))

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> Scene:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def band_names(self) -> tuple[str, ...]:
        return tuple(s.band for s in self.sources)

    @property
    def dtype(self) -> np.dtype[Any]:
        """The dtype `read` returns (float32 when the plan harmonises)."""
        if not self.harmonisation.identity:
            return np.dtype(np.float32)
        return np.result_type(*(f.ds.dtypes[i - 1] for f in self._files for i in f.indexes))

    @property
    def block_shape(self) -> tuple[int, int]:
        """The block shape of the file whose grid is the scene's (else `DEFAULT_BLOCK`)."""
        for f in self._files:
            if f.aligned and Grid.of(f.ds) == self.grid:
                h, w = f.ds.block_shapes[0]
                return int(h), int(w)
        return DEFAULT_BLOCK

    def read(self, window: tuple[int, int, int, int]) -> ScenePixels:
        """Read a window ``(row_off, col_off, height, width)`` of the grid (it may reach past
        the grid: that part is invalid).

        Raises:
            UnreadableInputError: a file cannot be read there (damaged or truncated data).
        """
        row, col, h, w = (int(v) for v in window)
        if h <= 0 or w <= 0 or h * w > MAX_READ_PIXELS:
            raise ValueError(f"window {window} is empty or larger than {MAX_READ_PIXELS} pixels")
        with gdal_env():
            return self._read(row, col, h, w)

    def _read(self, row: int, col: int, h: int, w: int) -> ScenePixels:
        parts: list[tuple[_File, np.ndarray]] = []
        valid = np.ones((h, w), dtype=bool)
        for f in self._files:
            arr, ok = self._read_file(f, row, col, h, w)
            parts.append((f, arr))
            valid &= ok
        dtype = np.result_type(*(a.dtype for _, a in parts))
        data = np.zeros((len(self.sources), h, w), dtype=dtype)
        for f, arr in parts:
            data[f.out] = arr
        return ScenePixels(self.harmonisation.per_band(len(self.sources)).apply(data)
                           if not self.harmonisation.identity else data, valid)

    def _read_file(self, f: _File, row: int, col: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(f.indexes)
        out = np.zeros((n, h, w), dtype=f.ds.dtypes[f.indexes[0] - 1])
        ok = np.zeros((h, w), dtype=bool)
        c0, c1, r0, r1 = f.coverage
        ca, cb = max(col, math.ceil(c0 - _EPS)), min(col + w, math.floor(c1 + _EPS))
        ra, rb = max(row, math.ceil(r0 - _EPS)), min(row + h, math.floor(r1 + _EPS))
        if ca >= cb or ra >= rb:
            return out, ok
        src = f.ds if f.aligned else f.vrt
        if f.aligned:
            sx, sy = f.ds.res[0] / self.grid.res[0], f.ds.res[1] / self.grid.res[1]
            win = Window(_snap((ca - c0) / sx), _snap((ra - r0) / sy), _snap((cb - ca) / sx), _snap((rb - ra) / sy))
        else:
            win = Window(ca, ra, cb - ca, rb - ra)
        shape = (rb - ra, cb - ca)
        self.reads += 1
        if self.on_read is not None:
            self.on_read(f.path, (win.row_off, win.col_off, win.height, win.width))
        try:
            arr = src.read(f.indexes, window=win, out_shape=(n, *shape), resampling=f.resampling)
            mask = None
            if not f.aligned:
                mask = src.read(src.count, window=win, out_shape=shape, resampling=Resampling.nearest)
            elif f.masked:
                mask = src.read_masks(f.indexes[0], window=win, out_shape=shape, resampling=Resampling.nearest)
        except RasterioError as exc:
            raise UnreadableInputError(
                f"{f.path}: read of {win} failed: damaged or truncated data ({exc})") from exc
        out[:, ra - row:rb - row, ca - col:cb - col] = arr
        ok[ra - row:rb - row, ca - col:cb - col] = valid_mask(arr, f.nodata, mask)
        return out, ok


def _snap(v: float) -> float:
    r = round(v)
    return float(r) if abs(v - r) < 1e-6 else v


def _coverage(ds: Any, grid: Grid) -> tuple[float, float, float, float]:
    """A file's extent in the grid's pixel coordinates: ``(col0, col1, row0, row1)``."""
    inv = ~grid.affine
    t = ds.transform
    (ca, ra), (cb, rb) = (inv @ (t @ (c, r)) for c, r in ((0, 0), (ds.width, ds.height)))
    return min(ca, cb), max(ca, cb), min(ra, rb), max(ra, rb)


def valid_mask(data: np.ndarray, nodata: Sequence[float | None], mask: np.ndarray | None) -> np.ndarray:
    """Pixels that hold data: finite in every band, not nodata in *all* bands (as GDAL's
    dataset mask; a legitimate 0 in one band of a valid pixel is kept), not masked
    (``mask`` > 0). The one validity rule for every reader of scenes and chips."""
    valid = np.ones(data.shape[1:], dtype=bool)
    if np.issubdtype(data.dtype, np.floating):
        valid &= np.isfinite(data).all(axis=0)
    if nodata and all(nd is not None for nd in nodata):
        is_nd = np.ones(data.shape[1:], dtype=bool)
        for b, nd in enumerate(nodata):
            assert nd is not None
            is_nd &= np.isnan(data[b]) if np.isnan(nd) else data[b] == nd
        valid &= ~is_nd
    if mask is not None:
        valid &= mask > 0
    return valid


@contextlib.contextmanager
def open_scene(plan: BandPlan, grid: Grid | None = None, resolution: float | None = None,
               resolution_m: float | None = None, resampling: Resampling | str | None = None,
               cloud_layer: bool = False,
               on_read: Callable[[str, tuple[float, float, float, float]], None] | None = None) -> Iterator[Scene]:
    """Open a plan's files for windowed reads on one grid.

    Args:
        plan: what feeds each band.
        grid: the target grid (default: `grid_for` with ``resolution``/``resolution_m``).
        resampling: for reflectance bands (default bilinear; categorical layers: nearest).
        cloud_layer: read the plan's cloud layer (SCL) instead of its bands, on the same grid
            (default grid: that of the bands).
    """
    g = grid or grid_for(plan, resolution, resolution_m)
    if cloud_layer:
        if plan.cloud_layer is None:
            raise ValueError(f"{plan.item_id}: no cloud layer")
        scene = Scene((plan.cloud_layer,), g, IDENTITY, Resampling.nearest, on_read)
    else:
        scene = Scene(plan.sources, g, plan.harmonisation, resampling, on_read)
    try:
        yield scene
    finally:
        scene.close()
