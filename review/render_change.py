"""The before and after pictures of a change item, drawn alike, and the crops of evidence.

Both windows are drawn from the same bands, chosen by name (natural colour B04, B03, B02 by
default, else the same band numbers; any triple of band names both scenes have can be asked
for) and with **one** stretch: each band is scaled between its 2nd and 98th percentile over
the valid pixels of *both* windows together (`vision.bands.stretch` over their union). A
stretch per date would even out a real change in brightness (a field ploughed bare, a
clearing); a joint one shows it as it is. Windows of different sizes (an earlier grid
reprojected onto the later one) are each enlarged to the display size.

Every pixel is read from a file opened by `review.jobs.files.open_input` (inside the allowed
roots, no link followed) through ``/proc/self/fd/N``: only the window is read. The evidence
package (`review.evidence`) keeps the windows as GeoTIFF crops (`crop_tif`) and re-renders
them with `render_arrays`, the function the page uses, so its verification can recompute
the pictures from the crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import rasterio
from rasterio.io import MemoryFile
from rasterio.windows import Window
from rasterio.windows import transform as window_transform

from review.jobs.files import SafeFile
from review.render import _LRU, CHIP_DISPLAY, WindowSpec, rgb_png
from vision.bands import canonical_band, display_bands, raster_band_names, select_bands, stretch_uint8
from vision.errors import BandMismatchError, InputError
from vision.raster import open_raster

#: Largest window side drawn or cropped (a hostile table must not make us read a whole scene).
MAX_WINDOW = 4096
_CACHE = _LRU(256)


def names_of(descriptions: Sequence[str | None]) -> list[str | None]:
    """A raster's band names (`vision.bands.raster_band_names`: canonical, ``None`` unnamed)."""
    return raster_band_names(descriptions)


def common_bands(before: Sequence[str | None], after: Sequence[str | None]) -> list[str]:
    """Band names both dates have, in the after scene's order (what the page may choose)."""
    have = {canonical_band(n) for n in before if n}
    return [n for n in after if n and canonical_band(n) in have]


def choose_bands(before: Sequence[str | None], after: Sequence[str | None],
                 wanted: Sequence[str] | None = None) -> tuple[list[int], list[int], list[str]]:
    """The 1-based bands to draw of each date, and their names.

    ``wanted``: three band names both scenes have; default natural colour (the after scene's
    B04/B03/B02, found by name in the before scene; scenes without band names: the same
    band numbers).

    Raises:
        BandMismatchError: a band is missing from a date, or the scenes cannot be matched.
    """
    if wanted:
        if len(wanted) != 3:
            raise BandMismatchError(f"choose three bands, not {len(wanted)}")
        a, b = select_bands(after, wanted), select_bands(before, wanted)
        return [k + 1 for k in b], [k + 1 for k in a], [str(w) for w in wanted]
    a = display_bands(after)
    named = [after[k] for k in a]
    if all(named):
        try:
            b = select_bands(before, [str(n) for n in named])
            return [k + 1 for k in b], [k + 1 for k in a], [str(n) for n in named]
        except BandMismatchError:
            if any(before):
                raise BandMismatchError(
                    f"the before scene lacks the after scene's bands {named} (it has {list(before)})") from None
    if max(a) >= len(before):
        raise BandMismatchError(f"the before scene has {len(before)} bands, the after scene's view needs {max(a) + 1}")
    labels = [str(n) if n else f"band{k + 1}" for n, k in zip(named, a, strict=True)]
    return [k + 1 for k in a], [k + 1 for k in a], labels


def _check(window: WindowSpec) -> Window:
    r, c, h, w = window
    if r is None or c is None or h is None or w is None:
        raise InputError("a change item needs a window at both dates")
    if not (0 < h <= MAX_WINDOW and 0 < w <= MAX_WINDOW) or r < 0 or c < 0:
        raise InputError(f"the window {h} x {w} at ({r}, {c}) is not one to draw (at most {MAX_WINDOW} per side)")
    return Window(c, r, w, h)


@dataclass(frozen=True)
class Pixels:
    """Raw values of one window: ``C x H x W`` and the file's nodata value."""

    data: np.ndarray
    nodata: float | None


def read_window(src: SafeFile, window: WindowSpec, bands: Sequence[int]) -> Pixels:
    """The raw values of some 1-based ``bands`` in ``window`` of an opened raster.

    Raises:
        UnreadableInputError: not a readable raster; InputError: a window not to draw.
    """
    win = _check(window)
    with open_raster(src.gdal_path) as ds:
        return Pixels(ds.read(list(bands), window=win), ds.nodata)


def render_arrays(before: Pixels, after: Pixels) -> tuple[np.ndarray, np.ndarray]:
    """Both windows as ``H x W x 3`` uint8 with one stretch over their valid pixels together."""

    def flat(p: Pixels) -> tuple[np.ndarray, np.ndarray]:
        d = np.asarray(p.data, dtype=np.float64)
        valid = np.isfinite(d) if p.nodata is None else (d != p.nodata) & np.isfinite(d)
        return d.reshape(d.shape[0], 1, -1), valid.reshape(d.shape[0], 1, -1)

    (db, vb), (da, va) = flat(before), flat(after)
    joint = stretch_uint8(np.concatenate([db, da], axis=2), np.concatenate([vb, va], axis=2))[0]
    nb = db.shape[2]
    hb, wb = before.data.shape[1:]
    ha, wa = after.data.shape[1:]
    return joint[:nb].reshape(hb, wb, -1), joint[nb:].reshape(ha, wa, -1)


def render_pair(before: SafeFile, window_before: WindowSpec, after: SafeFile, window_after: WindowSpec,
                wanted: Sequence[str] | None = None) -> tuple[bytes, bytes]:
    """PNGs of both windows of a change item (see the module docstring), cached.

    Raises:
        BandMismatchError: the bands cannot be matched; UnreadableInputError, InputError: a
            file or window cannot be read.
    """
    key = ("pair", before.key, window_before, after.key, window_after, tuple(wanted or ()))
    hit = _CACHE.get(key)
    if isinstance(hit, tuple):
        return hit
    with open_raster(before.gdal_path) as ds_b, open_raster(after.gdal_path) as ds_a:
        bb, ba, _ = choose_bands(names_of(ds_b.descriptions), names_of(ds_a.descriptions), wanted)
    rgb_b, rgb_a = render_arrays(read_window(before, window_before, bb), read_window(after, window_after, ba))
    out = (rgb_png(rgb_b, CHIP_DISPLAY), rgb_png(rgb_a, CHIP_DISPLAY))
    _CACHE.put(key, out)
    return out


def pair_bands(before: SafeFile, after: SafeFile) -> tuple[list[str], list[str]]:
    """The names both dates have (the page's choices) and the default view's names."""
    with open_raster(before.gdal_path) as ds_b, open_raster(after.gdal_path) as ds_a:
        nb, na = names_of(ds_b.descriptions), names_of(ds_a.descriptions)
    try:
        default = choose_bands(nb, na)[2]
    except BandMismatchError:
        default = []
    return common_bands(nb, na), default


def crop_tif(src: SafeFile, window: WindowSpec) -> bytes:
    """The window of a raster as a GeoTIFF of its raw values (every band), with the window's
    CRS, transform, nodata and band descriptions: what an evidence package keeps.

    Raises:
        UnreadableInputError: not a readable raster; InputError: a window not to crop.
    """
    win = _check(window)
    with open_raster(src.gdal_path) as ds:
        data = ds.read(window=win)
        profile = {
            "driver": "GTiff",
            "height": data.shape[1],
            "width": data.shape[2],
            "count": ds.count,
            "dtype": data.dtype.name,
            "crs": ds.crs,
            "nodata": ds.nodata,
            "transform": window_transform(win, ds.transform),
        }
        descriptions = ds.descriptions
    with MemoryFile() as mem:
        with mem.open(**profile) as out:
            out.write(data)
            for i, d in enumerate(descriptions, start=1):
                if d:
                    out.set_band_description(i, d)
        return bytes(mem.read())


@dataclass(frozen=True)
class Crop:
    """A GeoTIFF crop read back from bytes (an evidence package's)."""

    data: np.ndarray
    nodata: float | None
    names: list[str | None]
    crs: str | None
    bounds: tuple[float, float, float, float]


def read_crop(data: bytes) -> Crop:
    """Read a GeoTIFF crop from memory (only GeoTIFF: the package holds nothing else).

    Raises:
        InputError: not a readable GeoTIFF.
    """
    if not data.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        raise InputError("not a GeoTIFF (unrecognised header)")
    try:
        with MemoryFile(data) as mem, mem.open() as ds:
            if ds.driver != "GTiff":
                raise InputError(f"not a GeoTIFF (driver {ds.driver})")
            if ds.width > MAX_WINDOW or ds.height > MAX_WINDOW:
                raise InputError("larger than any window")
            return Crop(ds.read(), ds.nodata, names_of(ds.descriptions), ds.crs.to_string() if ds.crs else None,
                        tuple(float(v) for v in ds.bounds))  # type: ignore[arg-type]
    except rasterio.errors.RasterioError as exc:
        raise InputError(f"not a readable GeoTIFF ({exc})") from exc


def crop_pixels(crop: Crop, bands: Sequence[str | int]) -> Pixels:
    """The bands of a crop (names, or 1-based numbers) as `Pixels`."""
    idx = [b - 1 if isinstance(b, int) else select_bands(crop.names, [b])[0] for b in bands]
    return Pixels(crop.data[idx], crop.nodata)

