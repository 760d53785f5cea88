"""Decode one chip, from a file or from bytes, to an ``H x W x C`` array of raw values."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vision.errors import UnreadableInputError
from vision.raster import RASTER_SUFFIXES, read_chip

#: Largest image PIL may decode (guards against decompression bombs in a header).
Image.MAX_IMAGE_PIXELS = 2**28


def decode_image_bytes(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode JPEG/PNG bytes to ``H x W x C`` uint8 (RGB for colour, one band for grey)."""
    if not data:
        raise UnreadableInputError(f"{name}: empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            arr = np.asarray(im)[..., None] if im.mode in ("L", "I;16", "I") else np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UnreadableInputError(f"{name}: cannot decode image ({exc})") from exc
    return arr


def decode_file(
    path: str | Path,
    bands: Sequence[int] | None = None,
    band_names: Sequence[str] | None = None,
) -> np.ndarray:
    """Read an image or GeoTIFF chip from disk as ``H x W x C`` in its own dtype.

    Args:
        path: a ``.jpg``, ``.png`` or ``.tif`` file.
        bands: 0-based band indices to keep (GeoTIFF), ``None`` for all.
        band_names: band names to keep (GeoTIFF), matched against band descriptions.
    """
    p = Path(path)
    if p.suffix.lower() in RASTER_SUFFIXES:
        return read_chip(p, bands=bands, band_names=band_names)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise UnreadableInputError(f"{p}: {exc.strerror or exc}") from exc
    arr = decode_image_bytes(data, str(p))
    if bands is not None:
        arr = arr[..., list(bands)]
    return arr
