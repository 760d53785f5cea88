"""Reading what a job classifies: telling chips from scenes, reading a chip, and reading
the windows of a scene chunk (the input files are found by `inference.inputs.discover`).

Every raster is opened with `vision.raster.open_raster` (driver allow-list, size guard,
GDAL settings); JPEG and PNG chips are decoded with `vision.data.decode` exactly as training
decodes them, so predictions match `vision evaluate`.

A raster no larger than the model's input is a *chip* (one row); a larger one is a *scene*,
tiled into windows. A scene needs a CRS and a geotransform. Bands are selected by name when
the raster's band descriptions hold all the model's band names (13-band EuroSAT MS chips
without descriptions are named in the EuroSAT order); otherwise the band count must equal
the model's.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
from affine import Affine
from rasterio.enums import MaskFlags
from rasterio.errors import RasterioError
from rasterio.windows import Window

from inference.choices import DEFAULT_MAX_PIXELS
from inference.geo import wrap_bounds
from inference.input_fit import ChipFit, check, chip_gsd, geotiff_chip_fit, image_chip_fit
from inference.tiling import Chunk, TileGrid
from inference.windows import (
    WindowError,
    WindowPixels,
    cut_windows,
    fill_invalid,
    valid_mask,
    window_bounds,
)
from vision.bands import match_bands, raster_band_names
from vision.data.decode import decode_image_bytes, image_shape
from vision.errors import (
    BandMismatchError,
    InputError,
    NoDataError,
    NotGeoreferencedError,
    UnreadableInputError,
    UnsupportedFileError,
)
from vision.geo import GsdDecision
from vision.hashing import sha256_bytes
from vision.radiometry import Radiometry
from vision.raster import IMAGE_SUFFIXES, RASTER_SUFFIXES, open_raster
from vision.scene import parse_tiff_datetime

if TYPE_CHECKING:
    from vision.scene import BandPlan

__all__ = ["DEFAULT_MAX_PIXELS", "RASTER_SUFFIXES", "ChipPixels", "OnRead", "Probe", "SceneInfo",
           "WindowError", "WindowPixels", "error_reason", "probe", "read_chip", "read_chunk",
           "valid_mask", "window_bounds"]

#: Suffixes decoded with PIL (as in training) rather than GDAL.
PIL_SUFFIXES = (".jpg", ".jpeg", ".png")


def resolve_bands(descriptions: Sequence[str | None], model_bands: Sequence[str]) -> list[int]:
    """0-based indices of the model's bands in a raster (`vision.bands.match_bands` on the
    raster's band names).

    Raises:
        BandMismatchError: neither the names nor the count fit.
    """
    return match_bands(raster_band_names(descriptions), model_bands)


def crs_string(crs: object) -> str | None:
    """``EPSG:xxxx`` where the CRS has an EPSG code, else its WKT."""
    if crs is None:
        return None
    epsg = crs.to_epsg()  # type: ignore[attr-defined]
    return f"EPSG:{epsg}" if epsg else str(crs.to_wkt())  # type: ignore[attr-defined]


@dataclass(frozen=True)
class CloudSource:
    """How a scene's cloud fractions are measured.

    Attributes:
        method: ``scl`` (the band plan's scene classification layer) or ``s2cloudless``.
        plan: for ``s2cloudless``, the plan of its ten bands (read raw).
        scale, offset: per band of ``plan``, reflectance = DN * scale + offset.
    """

    method: str
    plan: BandPlan | None = None
    scale: tuple[float, ...] = ()
    offset: tuple[float, ...] = ()


@dataclass(frozen=True)
class SceneInfo:
    """What the planner learns from a scene's header.

    A scene is read from its one file on the file's own grid (the fast path), unless it has
    a ``band_plan``: then its bands (per-band STAC assets, or a file read onto another grid,
    harmonised, or with clouds to measure) are read through `vision.scene` onto the grid
    these fields describe (`inference.scene_reads`).

    Attributes:
        path: the file, or the STAC item's JSON.
        width, height, crs, transform: the grid its windows are placed on.
        bands: 0-based indices of the model's bands in the file (fast path).
        nodata: per selected band, the nodata value or ``None``.
        dataset_mask: the file has an internal mask or alpha band (read it for validity).
        transform: the geotransform as a 6-tuple (``Affine`` is rebuilt from it).
        item_id, acquired: the rows' ``item_id`` and ``acquired``.
        band_plan: read through `vision.scene` with this plan (``None``: the fast path).
        resampling: for reflectance bands read onto another grid.
        cloud: how its windows' cloud fractions are measured (``None``: not measured).
    """

    path: str
    width: int
    height: int
    dtype: str
    crs: str
    transform: tuple[float, float, float, float, float, float]
    bands: tuple[int, ...]
    nodata: tuple[float | None, ...]
    dataset_mask: bool
    block_shape: tuple[int, int]
    geographic: bool = False
    item_id: str | None = None
    acquired: datetime | None = None
    band_plan: BandPlan | None = None
    resampling: str = "bilinear"
    cloud: CloudSource | None = None

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def wraps(self) -> bool:
        """A longitude/latitude scene reaching past ±180°: its windows' longitudes are
        normalised (`inference.geo.wrap_bounds`)."""
        if not self.geographic:
            return False
        minx, _, maxx, _ = window_bounds(self.affine, (0, 0, self.height, self.width))
        return minx < -180.0 or maxx > 180.0


@dataclass(frozen=True)
class Probe:
    """A file's kind: ``chip``, ``scene`` (with its `SceneInfo`), or ``error`` (with a reason).

    ``path`` is always valid UTF-8 (it goes into string columns); ``source`` is the name on
    disk when that is not (see `utf8_path`). A georeferenced GeoTIFF chip checked against
    the model's GSD carries the decision in ``gsd``.
    """

    path: str
    kind: str
    scene: SceneInfo | None = None
    error: str | None = None
    source: str | None = None
    fit: ChipFit | None = None
    gsd: GsdDecision | None = None


class SceneTooLargeError(InputError):
    """A scene has more pixels than ``--max-pixels`` allows."""


def utf8_path(path: str) -> tuple[str, str | None]:
    """``(path, None)`` for a path that is valid UTF-8; else the path with U+FFFD for each
    undecodable byte, and the reason it is an error row (the file itself is not read: an
    Arrow string column holds UTF-8 only)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return shown, error_reason(UnreadableInputError(
            f"the file name is not valid UTF-8 ({os.fsencode(path)!r}); this row's path shows "
            "each undecodable byte as U+FFFD. Rename the file to a UTF-8 name to classify it"), "")
    return path, None


def probe(path: str, model_bands: Sequence[str], input_size: tuple[int, int],
          max_pixels: int = DEFAULT_MAX_PIXELS, radiometry: Radiometry | None = None,
          allow_mismatch: bool = False, gsd_m: float | None = None, native_gsd: bool = False) -> Probe:
    """Decide chip or scene from the file's suffix and header; never raises for a bad file.

    With the model's ``radiometry``, a chip's is checked from the header already open (a
    JPEG/PNG chip's from its suffix: 8-bit display; its decoded dtype is checked again when
    it is read): a chip the model refuses is an error, one allowed to run anyway carries
    its mismatch in `Probe.fit`. With the model's GSD ``gsd_m``, a georeferenced GeoTIFF
    chip's pixel size is checked from the same header (`inference.input_fit.chip_gsd`;
    ``native_gsd``: ``--gsd native``); JPEG/PNG chips and chips without a georeference
    have no known GSD and are not checked.
    """
    shown, bad_name = utf8_path(path)
    if bad_name is not None:
        return Probe(shown, "error", error=bad_name, source=path)
    suffix = os.path.splitext(path)[1].lower()
    names = tuple(model_bands)
    if suffix in PIL_SUFFIXES:
        if radiometry is None:
            return Probe(path, "chip")  # decoded (and checked) with the chip
        try:
            return Probe(path, "chip", fit=check(image_chip_fit("uint8", names, radiometry,
                                                                allow_mismatch), path))
        except InputError as exc:
            return Probe(path, "error", error=error_reason(exc, path))
    if suffix not in RASTER_SUFFIXES:
        return Probe(path, "error", error=error_reason(UnsupportedFileError(
            f"not an image file (suffix {suffix or 'none'!r}; expected one of "
            f"{', '.join(IMAGE_SUFFIXES)})"), path))
    try:
        with open_raster(path) as ds:
            georeferenced = ds.crs is not None and ds.transform != Affine.identity()
            if ds.height <= input_size[0] and ds.width <= input_size[1]:
                fit = None if radiometry is None else check(geotiff_chip_fit(
                    ds.dtypes[0], tuple(ds.scales), tuple(ds.offsets), tuple(ds.descriptions), names,
                    radiometry, allow_mismatch), path)
                gsd = None if gsd_m is None or not georeferenced else chip_gsd(
                    str(crs_string(ds.crs)), tuple(ds.transform)[:6], (ds.height, ds.width), input_size,
                    gsd_m, native_gsd)
                return Probe(path, "chip", fit=fit, gsd=gsd)
            if not georeferenced:
                raise NotGeoreferencedError(
                    f"{ds.width}x{ds.height} raster larger than the model input "
                    f"{input_size[1]}x{input_size[0]} but not georeferenced (no CRS or "
                    "geotransform): cannot place its windows")
            if ds.width * ds.height > max_pixels:
                raise SceneTooLargeError(
                    f"scene of {ds.width}x{ds.height} = {ds.width * ds.height:,} pixels, more "
                    f"than --max-pixels {max_pixels:,}; pass a larger --max-pixels to classify it")
            bands = resolve_bands(ds.descriptions, model_bands)
            flags = [ds.mask_flag_enums[b] for b in bands]
            info = SceneInfo(
                path=path,
                width=ds.width,
                height=ds.height,
                dtype=ds.dtypes[bands[0]],
                crs=str(crs_string(ds.crs)),
                transform=tuple(ds.transform)[:6],
                bands=tuple(bands),
                nodata=tuple(ds.nodatavals[b] for b in bands),
                dataset_mask=any(
                    MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags),
                block_shape=tuple(ds.block_shapes[bands[0]]),
                geographic=bool(ds.crs.is_geographic),
            )
            return Probe(path, "scene", scene=info)
    except InputError as exc:
        return Probe(path, "error", error=error_reason(exc, path))
    except (RasterioError, ValueError, OSError) as exc:
        return Probe(path, "error", error=error_reason(
            UnreadableInputError(f"cannot read header ({exc})"), path))


def _reason(exc: Exception, path: str) -> str:
    """The error message without a leading ``path: `` (the row already names the file)."""
    msg = str(exc)
    return msg[len(path) + 2:] if msg.startswith(f"{path}: ") else msg


def error_reason(exc: Exception, path: str) -> str:
    """A one-line reason for a failed input, for the ``error`` column."""
    kind = type(exc).__name__
    return f"{kind}: {_reason(exc, path)}".replace("\n", " ")


@dataclass
class ChipPixels:
    """A decoded chip: ``C x H x W`` raw values, any numeric dtype, possibly a strided view
    (the batch it is copied into does the cast); ``None`` when nodata.

    ``crs``/``bounds`` are set for georeferenced GeoTIFF chips, ``acquired`` for those with
    a ``TIFFTAG_DATETIME``; ``cloud`` is ``(reflectance, valid)`` of s2cloudless' ten bands
    (``10 x h x w`` and ``h x w``) when the chip's fit measures clouds.
    """

    pixels: np.ndarray | None
    sha256: str
    crs: str | None = None
    bounds: tuple[float, float, float, float] | None = None
    acquired: datetime | None = None
    cloud: tuple[np.ndarray, np.ndarray] | None = None


def _fit_size(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A chip smaller than the model input is resized (bilinear, per band) to the input size."""
    if pixels.shape[1:] == size:
        return pixels
    from PIL import Image

    bands = [
        np.asarray(Image.fromarray(b, mode="F").resize((size[1], size[0]), Image.Resampling.BILINEAR))
        for b in pixels.astype(np.float32)
    ]
    return np.stack(bands).astype(np.float32)


def read_chip(path: str, model_bands: Sequence[str], input_size: tuple[int, int],
              fill: Sequence[float] | None = None, fit: ChipFit | None = None,
              radiometry: Radiometry | None = None, allow_mismatch: bool = False) -> ChipPixels:
    """Read one chip file as the model's input.

    ``fit`` (from `probe`) harmonises the pixels and names the bands of its cloud mask; with
    the model's ``radiometry``, a JPEG/PNG chip that decodes to more than 8 bits is checked
    again for its real depth.

    Raises:
        UnreadableInputError, BandMismatchError: the chip cannot be used (becomes an error row).
        NoDataError: the chip holds no valid pixel (becomes a nodata row); ``sha256`` is
            attached as ``exc.sha256``.
    """
    try:
        with open(path, "rb") as f:  # plain open: pathlib's parsing cost ~6 us a chip
            data = f.read()
    except OSError as exc:
        raise UnreadableInputError(f"{path}: {exc.strerror or exc}") from exc
    sha = sha256_bytes(data)
    suffix = os.path.splitext(path)[1].lower()
    crs: str | None = None
    bounds: tuple[float, float, float, float] | None = None
    if suffix in PIL_SUFFIXES:
        # The size from the header, before any pixel is decoded: a 16000 x 16000 PNG
        # would take gigabytes to decode only to be refused.
        shape = image_shape(data)
        if shape is not None:
            _check_chip_size(path, shape, input_size)
        hwc = decode_image_bytes(data, path)
        _check_chip_size(path, hwc.shape[:2], input_size)
        if hwc.shape[2] != len(model_bands):
            raise BandMismatchError(
                f"{path}: has {hwc.shape[2]} bands, the model takes {len(model_bands)} "
                f"{list(model_bands)}")
        if radiometry is not None and hwc.dtype != np.uint8:
            check(image_chip_fit(str(hwc.dtype), tuple(model_bands), radiometry, allow_mismatch),
                  path)
        pixels = hwc.transpose(2, 0, 1)  # a view: cast and copied once, into the batch
        return ChipPixels(_fit_size(pixels, input_size), sha)
    cloud_idx = list(fit.cloud_bands) if fit is not None and fit.cloud_bands else []
    with open_raster(path) as ds:
        if ds.height > input_size[0] or ds.width > input_size[1]:
            raise UnreadableInputError(f"{path}: changed while the job ran (now larger)")
        bands = resolve_bands(ds.descriptions, model_bands)
        # One read for the model's bands and the cloud mask's (they overlap).
        want = list(dict.fromkeys([*bands, *cloud_idx]))
        try:
            both = ds.read([b + 1 for b in want])
            mask = ds.dataset_mask() if any(
                MaskFlags.per_dataset in ds.mask_flag_enums[b] for b in want) else None
        except RasterioError as exc:
            raise UnreadableInputError(f"{path}: read failed ({exc})") from exc
        arr = both if len(want) == len(bands) else both[[want.index(b) for b in bands]]
        acquired = parse_tiff_datetime(ds.tags().get("TIFFTAG_DATETIME"))
        if ds.crs is not None and ds.transform != Affine.identity():
                crs = crs_string(ds.crs)
                b = ds.bounds
                bounds = (b.left, b.bottom, b.right, b.top)
                if ds.crs.is_geographic:
                    west, east = wrap_bounds(b.left, b.right)
                    bounds = (west, b.bottom, east, b.top)
        nodata = [ds.nodatavals[b] for b in bands]
        cloud_nodata = [ds.nodatavals[b] for b in cloud_idx]
    valid = valid_mask(arr, nodata, mask)
    if not valid.any():
        raise NoDataError(f"{path}: no valid pixel (all nodata or NaN)", sha256=sha, crs=crs,
                          bounds=bounds)
    if fit is not None and not fit.harmonisation.identity:
        arr = fit.harmonisation.per_band(len(bands)).apply(arr)
    pixels = fill_invalid(arr, valid, fill)
    cloud = None
    if cloud_idx and fit is not None:
        dn = both[[want.index(b) for b in cloud_idx]]
        refl = dn.astype(np.float32) * np.float32(fit.cloud_scale) + np.float32(fit.cloud_offset)
        cloud = (refl, valid & valid_mask(dn, cloud_nodata, mask))
    return ChipPixels(_fit_size(pixels, input_size), sha, crs, bounds, acquired, cloud)


def _check_chip_size(path: str, shape: tuple[int, ...], input_size: tuple[int, int]) -> None:
    if shape[0] > input_size[0] or shape[1] > input_size[1]:
        raise BandMismatchError(
            f"{path}: {shape[1]}x{shape[0]} image is larger than the model input "
            f"{input_size[1]}x{input_size[0]}; only georeferenced GeoTIFF scenes are tiled")


#: Called with each successful read of a scene: ``(row_off, col_off, height, width)``, the
#: ``C x h x w`` pixels of the model's bands and their ``h x w`` validity (the quicklook
#: gathers its pixels this way, without reading the scene again).
OnRead = Callable[[tuple[int, int, int, int], np.ndarray, np.ndarray], None]


def read_chunk(scene: SceneInfo, grid: TileGrid, chunk: Chunk, max_nodata: float,
               fill: Sequence[float] | None = None, on_read: OnRead | None = None,
               max_cloud: float = 1.0) -> list[WindowPixels | WindowError]:
    """Read a chunk's windows with one block-aligned windowed read.

    Windows whose nodata fraction (pixels outside the scene count as nodata) exceeds
    ``max_nodata`` come back with ``pixels = None``; others have their few nodata pixels
    filled with ``fill`` (the model's per-band mean). A scene with a band plan is read
    through `vision.scene` (`inference.scene_reads`), its windows' cloud fractions measured
    and those over ``max_cloud`` marked ``cloudy``.

    When the chunk's read fails (a damaged block), each window is read on its own and
    those that still fail come back as `WindowError`s.

    Raises:
        UnreadableInputError: the file cannot be opened any more.
    """
    if scene.band_plan is not None:
        from inference.scene_reads import read_planned_chunk

        return read_planned_chunk(scene, grid, chunk, max_nodata, fill, on_read, max_cloud)
    r0, c0, rh, rw = chunk.read
    with open_raster(scene.path) as ds:
        try:
            data, mask = _read(ds, scene, r0, c0, rh, rw)
        except UnreadableInputError:
            # A damaged block (truncated or corrupt file) spoils one read: salvage the
            # windows that can still be read, one by one.
            return [_read_window(ds, scene, grid, i, j, max_nodata, fill, on_read)
                    for i, j in chunk.windows()]
    valid = valid_mask(data, scene.nodata, mask)
    if on_read is not None:
        on_read((r0, c0, rh, rw), data, valid)
    return list(cut_windows(data, valid, grid, chunk.windows(), (r0, c0, rh, rw), max_nodata, fill))


def _read(ds: object, scene: SceneInfo, r0: int, c0: int, rh: int, rw: int
          ) -> tuple[np.ndarray, np.ndarray | None]:
    win = Window(c0, r0, rw, rh)
    try:
        data = ds.read([b + 1 for b in scene.bands], window=win)  # type: ignore[attr-defined]
        mask = ds.dataset_mask(window=win) if scene.dataset_mask else None  # type: ignore[attr-defined]
    except RasterioError as exc:
        raise UnreadableInputError(
            f"{scene.path}: read of rows {r0}-{r0 + rh}, cols {c0}-{c0 + rw} failed: damaged or truncated data ({exc})"
        ) from exc
    return data, mask


def _read_window(ds: object, scene: SceneInfo, grid: TileGrid, i: int, j: int,
                 max_nodata: float, fill: Sequence[float] | None, on_read: OnRead | None
                 ) -> WindowPixels | WindowError:
    row, col, h, w = grid.window(i, j)
    rh, rw = min(h, scene.height - row), min(w, scene.width - col)
    try:
        data, mask = _read(ds, scene, row, col, rh, rw)
    except UnreadableInputError as exc:
        return WindowError(i, j, (row, col, h, w), exc)
    valid = valid_mask(data, scene.nodata, mask)
    if on_read is not None:
        on_read((row, col, rh, rw), data, valid)
    return cut_windows(data, valid, grid, [(i, j)], (row, col, rh, rw), max_nodata, fill)[0]
