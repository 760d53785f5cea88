"""Band names, written once: the Sentinel-2 band table, the EuroSAT band orders, how a
raster's bands are named and matched to a model's, and the RGB display stretch.

Sentinel-2 bands go by three names: the band id (``B04``), the name earth-search and other
STAC catalogs give their assets and ``eo:bands`` (``red``, ``rededge1``, ``nir08``) and the
STAC ``common_name`` (``red``, ``rededge``, ``nir08``). `canonical_band` maps the first two
to the band id, so a model trained on ``B04`` finds the ``red`` asset of a STAC item or a
GeoTIFF band described as ``red``. (``rededge`` is the common name of three bands and so
names none of them.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vision.errors import BandMismatchError


@dataclass(frozen=True)
class SpectralBand:
    """One Sentinel-2 MSI band.

    Attributes:
        id: the band id, e.g. ``B8A``.
        name: the asset / ``eo:bands`` name used by earth-search, e.g. ``nir08``.
        common_name: the STAC ``eo`` common name, e.g. ``nir08`` (``rededge`` for B05-B07).
        resolution_m: native ground sampling distance.
    """

    id: str
    name: str
    common_name: str
    resolution_m: int


#: The 13 Sentinel-2 MSI bands (L2A products have all but B10).
SENTINEL2_BANDS: tuple[SpectralBand, ...] = (
    SpectralBand("B01", "coastal", "coastal", 60),
    SpectralBand("B02", "blue", "blue", 10),
    SpectralBand("B03", "green", "green", 10),
    SpectralBand("B04", "red", "red", 10),
    SpectralBand("B05", "rededge1", "rededge", 20),
    SpectralBand("B06", "rededge2", "rededge", 20),
    SpectralBand("B07", "rededge3", "rededge", 20),
    SpectralBand("B08", "nir", "nir", 10),
    SpectralBand("B8A", "nir08", "nir08", 20),
    SpectralBand("B09", "nir09", "nir09", 60),
    SpectralBand("B10", "cirrus", "cirrus", 60),
    SpectralBand("B11", "swir16", "swir16", 20),
    SpectralBand("B12", "swir22", "swir22", 20),
)

#: Band order of the EuroSAT MS release (B8A last): the order of an unnamed 13-band file.
EUROSAT_MS_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A",
)
#: Band names of EuroSAT RGB chips (JPEG R, G, B = Sentinel-2 B04, B03, B02).
EUROSAT_RGB_BANDS: tuple[str, ...] = ("B04", "B03", "B02")
#: Natural colour: red, green, blue.
RGB_DISPLAY: tuple[str, ...] = ("B04", "B03", "B02")

_ALIASES: dict[str, str] = {}
for _b in SENTINEL2_BANDS:
    for _alias in {_b.id, _b.name, _b.common_name} - {"rededge"}:
        _ALIASES[_alias.lower()] = _b.id
    # "B4" and "B8a" spellings
    _ALIASES[_b.id.lower().replace("b0", "b")] = _b.id


def canonical_band(name: str | None) -> str | None:
    """The Sentinel-2 band id a name stands for (``red`` -> ``B04``), else the name itself.

    ``None`` and empty names stay ``None``.
    """
    if not name:
        return None
    return _ALIASES.get(name.strip().lower(), name)


def spectral_band(name: str) -> SpectralBand | None:
    """The Sentinel-2 band a name stands for, if any."""
    cid = canonical_band(name)
    return next((b for b in SENTINEL2_BANDS if b.id == cid), None)


def raster_band_names(descriptions: Sequence[str | None]) -> list[str | None]:
    """Names of a raster's bands: its descriptions; a 13-band file without any description
    is in EuroSAT order (the EuroSAT MS release carries none)."""
    names = [d or None for d in descriptions]
    if all(n is None for n in names) and len(names) == len(EUROSAT_MS_BANDS):
        return list(EUROSAT_MS_BANDS)
    return names


def display_names(descriptions: Sequence[str | None]) -> list[str]:
    """`raster_band_names` with ``band<N>`` (1-based) for the unnamed ones."""
    return [n or f"band{i + 1}" for i, n in enumerate(raster_band_names(descriptions))]


def _find(names: Sequence[str | None], wanted: str) -> int | None:
    target = canonical_band(wanted)
    for k, n in enumerate(names):
        if n is not None and (n == wanted or canonical_band(n) == target):
            return k
    return None


def select_bands(names: Sequence[str | None], wanted: Sequence[str | int] | None) -> list[int]:
    """Resolve band names (or Sentinel-2 aliases) and 0-based indices to 0-based indices.

    Args:
        names: the raster's band names (`raster_band_names`), ``None`` where unnamed.
        wanted: names or indices; ``None`` means all bands.

    Raises:
        BandMismatchError: a name is not found or an index is out of range.
    """
    n = len(names)
    if wanted is None:
        return list(range(n))
    out: list[int] = []
    for w in wanted:
        if isinstance(w, int):
            if not 0 <= w < n:
                raise BandMismatchError(f"band index {w} out of range for {n} bands")
            out.append(w)
            continue
        k = _find(names, w)
        if k is None:
            raise BandMismatchError(f"band {w!r} not found; the raster's bands are {list(names)}")
        out.append(k)
    return out


def match_bands(names: Sequence[str | None], model_bands: Sequence[str]) -> list[int]:
    """0-based indices of a model's bands in a raster: by name when every one of them is
    named there, else by position when the counts are equal.

    Raises:
        BandMismatchError: neither the names nor the count fit.
    """
    found = [_find(names, b) for b in model_bands]
    if all(k is not None for k in found):
        return [int(k) for k in found]  # type: ignore[arg-type]
    if len(names) == len(model_bands):
        return list(range(len(names)))
    named = [x for x in names if x]
    raise BandMismatchError(
        f"has {len(names)} bands{f' {named}' if named else ''}, the model takes "
        f"{len(model_bands)} {list(model_bands)}; give imagery with those bands (or band "
        "descriptions naming them), or use a model trained on these bands"
    )


def display_bands(names: Sequence[str | None]) -> list[int]:
    """0-based bands of a natural-colour view: B04/B03/B02 where named, else the first
    three, else the first band three times (grey)."""
    found = [_find(names, b) for b in RGB_DISPLAY]
    if all(k is not None for k in found):
        return [int(k) for k in found]  # type: ignore[arg-type]
    if len(names) >= 3:
        return [0, 1, 2]
    return [0, 0, 0]


#: The percentiles of the valid pixels a band is stretched between for display (`stretch`).
DISPLAY_PERCENTILES: tuple[float, float] = (2.0, 98.0)


def stretch(bands: np.ndarray, valid: np.ndarray | None = None,
            percentiles: tuple[float, float] = DISPLAY_PERCENTILES) -> np.ndarray:
    """The display stretch of every picture this project renders.

    Each band of ``C x H x W`` values is scaled linearly between its 2nd and 98th
    percentile over the valid pixels (which suits 8-bit RGB and 12-bit reflectance alike)
    and clipped to [0, 1]. Invalid pixels and bands without valid pixels are 0; a flat band
    is 0.

    Args:
        bands: ``C x H x W`` values of any numeric dtype.
        valid: ``H x W`` (all bands) or ``C x H x W`` (per band) mask of the pixels to
            stretch and show (default: the finite values).

    Returns:
        ``H x W x C`` float32 in [0, 1].
    """
    arr = np.asarray(bands, dtype=np.float64)
    out = np.zeros(arr.shape[1:] + (arr.shape[0],), dtype=np.float32)
    for i, band in enumerate(arr):
        ok = np.isfinite(band)
        if valid is not None:
            ok &= valid[i] if valid.ndim == 3 else valid
        if not ok.any():
            continue
        lo, hi = np.percentile(band[ok], percentiles)
        if hi <= lo:
            hi = lo + 1.0
        scaled = np.clip((band - lo) / (hi - lo), 0.0, 1.0)
        out[..., i] = np.where(ok, scaled, 0.0)
    return out


def stretch_uint8(bands: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """`stretch` as ``H x W x C`` uint8 (for PNGs)."""
    return (stretch(bands, valid) * 255).astype(np.uint8)
