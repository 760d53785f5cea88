"""How a chip fits the model: its radiometry (reconciled with the model's) and whether its
clouds can be measured, decided from what the reader already knows (dtype, scale/offset
tags, band names), never from another file open.

The decision depends only on those few facts, so it is made once per kind of chip
(`chip_fit`, cached) and shared by every chip of that kind: a folder of 10,000 JPEG chips
costs one decision. A refusal is a `vision.radiometry.RadiometryMismatch` (the chip becomes
an error row naming both radiometries); with ``--allow-radiometry-mismatch`` the chip is
classified and its `ChipFit.mismatch` goes into its manifest entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from vision.bands import canonical_band, raster_band_names
from vision.clouds import S2CLOUDLESS_BANDS, cloud_method, s2cloudless_band_indices
from vision.radiometry import (
    S2_SCALE,
    Harmonisation,
    Radiometry,
    RadiometryMismatch,
    geotiff_radiometry,
    reconcile,
)

#: Where a chip's radiometry was learnt, in messages (one text for every chip of a kind, so
#: that the manifest counts them instead of repeating a warning per file).
GEOTIFF_CHIPS = "GeoTIFF chips"
IMAGE_CHIPS = "JPEG/PNG chips"


@dataclass(frozen=True)
class ChipFit:
    """How chips of one kind are fed to the model.

    Attributes:
        radiometry: what the chips' numbers mean.
        harmonisation: applied to the model's bands as read.
        mismatch: why the radiometry does not fit, when allowed to run anyway.
        warnings: assumptions made (radiometry not declared, ...).
        cloud_bands: 0-based file indices of s2cloudless' bands (13-band L1C chips), else
            ``None`` (no cloud fraction).
        cloud_scale, cloud_offset: reflectance = DN * scale + offset for those bands.
    """

    radiometry: Radiometry
    harmonisation: Harmonisation
    mismatch: str | None = None
    warnings: tuple[str, ...] = ()
    cloud_bands: tuple[int, ...] | None = None
    cloud_scale: float = S2_SCALE
    cloud_offset: float = 0.0


@dataclass(frozen=True)
class Refused:
    """A kind of chip the model refuses, and why (cached like a `ChipFit`)."""

    reason: str


def _fit(derived_radiometry: Radiometry, warnings: tuple[str, ...], model: Radiometry,
         allow: bool, n_bands: int, names: Sequence[str | None]) -> ChipFit | Refused:
    try:
        rec = reconcile(model, derived_radiometry, n_bands, allow)
    except RadiometryMismatch as exc:
        return Refused(str(exc))
    cloud_bands = None
    r = derived_radiometry
    if cloud_method(False, r.level, names) == "s2cloudless":
        idx = s2cloudless_band_indices(names)
        cloud_bands = tuple(idx) if idx is not None else None
    return ChipFit(r, rec.harmonisation, rec.mismatch, (*warnings, *rec.warnings), cloud_bands,
                   r.scale if r.scale is not None else S2_SCALE, r.offset or 0.0)


@lru_cache(maxsize=256)
def geotiff_chip_fit(dtype: str, scales: tuple[float | None, ...], offsets: tuple[float | None, ...],
                     descriptions: tuple[str | None, ...], model_bands: tuple[str, ...],
                     model: Radiometry, allow: bool) -> ChipFit | Refused:
    """The fit of GeoTIFF chips with this header (dtype of the first band, scale/offset tags,
    band descriptions)."""
    names = raster_band_names(descriptions)
    derived = geotiff_radiometry(dtype, scales, offsets, [canonical_band(n) for n in names],
                                 GEOTIFF_CHIPS)
    return _fit(derived.radiometry, derived.warnings, model, allow, len(model_bands), names)


@lru_cache(maxsize=32)
def image_chip_fit(dtype: str, model_bands: tuple[str, ...], model: Radiometry,
                   allow: bool) -> ChipFit | Refused:
    """The fit of JPEG/PNG chips decoded to ``dtype``: 8 bits are a display composite (what
    a JPEG is); other depths (16-bit PNG) declare nothing and are of unknown meaning."""
    if dtype == "uint8":
        r = Radiometry("display", bits=8, source=IMAGE_CHIPS)
        return _fit(r, (), model, allow, len(model_bands), ())
    derived = geotiff_radiometry(dtype, (None,), (None,), (None,), IMAGE_CHIPS)
    return _fit(derived.radiometry, derived.warnings, model, allow, len(model_bands), ())


def check(fit: ChipFit | Refused, path: str) -> ChipFit:
    """The fit, or the refusal raised as a `RadiometryMismatch` naming the chip."""
    if isinstance(fit, Refused):
        raise RadiometryMismatch(f"{path}: {fit.reason}")
    return fit


__all__ = ["GEOTIFF_CHIPS", "IMAGE_CHIPS", "S2CLOUDLESS_BANDS", "ChipFit", "Refused", "check",
           "geotiff_chip_fit", "image_chip_fit"]
