"""Raster I/O in one place: GDAL settings, the driver allow-list, and safe chip reads.

Every raster this project opens goes through `open_raster`, so a VRT (which can point at
arbitrary files) or any other driver disguised as ``.tif`` is refused before GDAL follows it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from vision.bands import raster_band_names, select_bands
from vision.errors import BandMismatchError, UnreadableInputError

#: Drivers we read. Anything else (VRT, HDF, netCDF, ...) is refused.
ALLOWED_DRIVERS: tuple[str, ...] = ("GTiff", "COG", "PNG", "JPEG")

#: GDAL options: no network, no sibling-file scans, bounded cache.
GDAL_ENV: dict[str, Any] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "GDAL_HTTP_TIMEOUT": 1,
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".none",
    "GDAL_CACHEMAX": 256 * 2**20,  # bytes: rasterio passes an int through as bytes, not MB
    "GDAL_NUM_THREADS": 1,
}

#: Largest raster we agree to open, in pixels per band (a header may lie about its size).
MAX_PIXELS = 2**34

#: Largest uncompressed-to-file size ratio each codec can reach, with a margin of about
#: two: deflate's format tops out near 1032:1, LZW (12-bit codes, as TIFF resets them) near
#: 1400:1, PackBits at 64:1, JPEG near 200:1 on flat 8x8 blocks, zstd near 32768:1 (an RLE
#: block of 128 KiB costs 4 bytes), xz a few thousand to one. A header claiming more pixels
#: than that for its file's size lies (or the file is a sparse GeoTIFF whose missing tiles
#: are empty). Codecs without a useful bound (LERC, WebP, JPEG XL, CCITT) are not checked.
MAX_COMPRESSION_RATIO: dict[str, float] = {
    "none": 2.0, "packbits": 128.0, "lzw": 4096.0, "deflate": 2064.0, "adobe_deflate": 2064.0,
    "jpeg": 1024.0, "zstd": 65536.0, "lzma": 65536.0,
}
#: Files this small are never refused as implausible (headers and tiny chips).
_PLAUSIBILITY_MIN_RAW = 1 << 20

RASTER_SUFFIXES = (".tif", ".tiff")
#: Leading bytes of TIFF (classic and BigTIFF, both byte orders), PNG and JPEG files.
_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+", b"\x89PNG", b"\xff\xd8\xff")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", *RASTER_SUFFIXES)


@contextlib.contextmanager
def gdal_env() -> Iterator[None]:
    """Apply this project's GDAL settings for the duration of a block."""
    with rasterio.Env(**GDAL_ENV):
        yield


@contextlib.contextmanager
def open_raster(path: str | Path) -> Iterator[rasterio.io.DatasetReader]:
    """Open a raster for reading, refusing disallowed drivers and absurd sizes.

    Raises:
        UnreadableInputError: the file is missing, empty, not a raster, of a refused driver,
            or claims an implausible size.
    """
    p = Path(path)
    if not p.exists():
        raise UnreadableInputError(f"{p}: file not found")
    if p.stat().st_size == 0:
        raise UnreadableInputError(f"{p}: file is empty (0 bytes)")
    with p.open("rb") as f:
        head = f.read(8)
    # Sniff the magic bytes before GDAL sees the file: a VRT (XML that can point anywhere)
    # or another format renamed to .tif never reaches a driver.
    if not head.startswith(_MAGIC):
        raise UnreadableInputError(f"{p}: not a GeoTIFF, PNG or JPEG file (unrecognised header)")
    with gdal_env():
        try:
            ds = rasterio.open(p)
        except RasterioError as exc:
            raise UnreadableInputError(f"{p}: not a readable raster ({exc})") from exc
        try:
            if ds.driver not in ALLOWED_DRIVERS:
                raise UnreadableInputError(
                    f"{p}: driver {ds.driver!r} is not allowed (allowed: {', '.join(ALLOWED_DRIVERS)})"
                )
            if ds.width * ds.height > MAX_PIXELS or ds.count > 1024:
                raise UnreadableInputError(
                    f"{p}: header claims {ds.width}x{ds.height}x{ds.count}, larger than allowed"
                )
            implausible = implausible_size(ds, p.stat().st_size)
            if implausible:
                raise UnreadableInputError(f"{p}: {implausible}")
            yield ds
        finally:
            ds.close()


def _codec(ds: Any) -> str | None:
    """The raster's compression as a `MAX_COMPRESSION_RATIO` key, ``None`` if unknown."""
    if ds.driver == "PNG":
        return "deflate"
    if ds.driver == "JPEG":
        return "jpeg"
    comp = ds.compression
    if comp is None:
        return "none"
    return str(getattr(comp, "name", comp)).lower()


def implausible_size(ds: Any, file_size: int) -> str | None:
    """Why a raster's claimed size cannot be true for a file of ``file_size`` bytes, or
    ``None``: its uncompressed size exceeds what its codec could pack into the file
    (`MAX_COMPRESSION_RATIO`). Checked from the header, before any block is read, so a
    100000 x 100000 claim in a 1 MB file is refused at once instead of read for hours."""
    codec = _codec(ds)
    bound = MAX_COMPRESSION_RATIO.get(codec or "")
    if bound is None:
        return None
    itemsize = max(np.dtype(d).itemsize for d in ds.dtypes)
    raw = ds.width * ds.height * ds.count * itemsize
    if raw < _PLAUSIBILITY_MIN_RAW or raw <= bound * max(1, file_size):
        return None
    return (f"header claims {ds.width}x{ds.height} pixels x {ds.count} bands "
            f"({raw / 2**30:,.1f} GiB uncompressed) in a file of {file_size:,} bytes: "
            f"{raw / max(1, file_size):,.0f} times smaller, and {codec} compresses at most "
            f"about {bound / 2:,.0f}:1; the header is wrong or the file is truncated")


def read_chip(
    path: str | Path,
    bands: Sequence[int] | None = None,
    band_names: Sequence[str] | None = None,
    expected_bands: int | None = None,
) -> np.ndarray:
    """Read a whole small raster (a chip) as an ``H x W x C`` array in its own dtype.

    Args:
        path: GeoTIFF (or PNG/JPEG) file.
        bands: 0-based band indices to keep, in order; ``None`` for all.
        band_names: names to select by (matched against the raster's band descriptions,
            falling back to the EuroSAT Sentinel-2 band order for 13-band files).
        expected_bands: when given, the number of bands the caller needs after selection.
    """
    with open_raster(path) as ds:
        if band_names is not None:
            bands = select_bands(raster_band_names(ds.descriptions), list(band_names))
        idx = [b + 1 for b in bands] if bands is not None else None
        try:
            arr = ds.read(idx)
        except RasterioError as exc:
            raise UnreadableInputError(f"{path}: read failed ({exc})") from exc
    chip = np.moveaxis(arr, 0, -1)
    if expected_bands is not None and chip.shape[-1] != expected_bands:
        raise BandMismatchError(
            f"{path}: has {chip.shape[-1]} bands after selection, expected {expected_bands}"
        )
    return chip
