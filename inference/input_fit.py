"""How a chip fits the model: its radiometry (reconciled with the model's), whether its
clouds can be measured, and whether its pixels are the model's ground sampling distance,
decided from what the reader already knows (dtype, scale/offset tags, band names, CRS and
transform), never from another file open.

The decision depends only on those few facts, so it is made once per kind of chip
(`chip_fit`, cached) and shared by every chip of that kind: a folder of 10,000 JPEG chips
costs one decision. A refusal is a `vision.radiometry.RadiometryMismatch` (the chip becomes
an error row naming both radiometries); with ``--allow-radiometry-mismatch`` the chip is
classified and its `ChipFit.mismatch` goes into its manifest entry.

A georeferenced chip's pixel size is checked against the model's GSD (`chip_gsd`). Unlike a
scene's windows, a chip cannot be resampled to the model's GSD: its pixels are what it
covers (a 64 px chip at 5 m is 32 px at 10 m), so one outside `vision.geo.GSD_TOLERANCE` is
refused (`vision.geo.GsdMismatch`), or with ``--gsd native`` classified with the mismatch
recorded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from vision.bands import canonical_band, raster_band_names
from vision.clouds import S2CLOUDLESS_BANDS, cloud_method, s2cloudless_band_indices
from vision.geo import GSD_TOLERANCE, GsdDecision, GsdMismatch, pixel_size_m
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
#: How a chip refused for its GSD is classified anyway.
CHIP_GSD_OVERRIDE = "pass --gsd native to classify it anyway (the mismatch is recorded)"


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


def chip_gsd(crs: str, transform: Sequence[float], shape: tuple[int, int], input_size: tuple[int, int],
             model_m: float, native: bool = False) -> GsdDecision:
    """How a georeferenced chip's pixels fit the model's GSD ``model_m``.

    The size checked is the one the model receives: the larger axis of the chip's pixel
    size (`vision.geo.pixel_size_m`), times the stretch of a chip smaller than the model's
    input (it is resized to the input, so a 32 px chip at 20 m is fed at 10 m). Within
    `GSD_TOLERANCE` the decision has no note; beyond it, with ``native``, its note says
    what the model was given (for the manifest, the same text for every chip of that size).

    Args:
        shape: the chip's ``(height, width)``.
        input_size: the model's ``(height, width)``.

    Raises:
        GsdMismatch: the chip's pixels differ from the model's by more than the tolerance,
            without ``native``; or they cannot be measured on the ground (a scene in such a
            CRS is refused too).
    """
    (h, w), (ih, iw) = shape, input_size
    try:
        px, py = pixel_size_m(crs, transform, w, h)
    except ValueError as exc:  # as for a scene, whatever --gsd says: nothing to record
        raise GsdMismatch(f"{exc}, so its pixels cannot be checked against the model's {model_m:g} m") from None
    input_m = max(px, py)
    fed_m = max(px * w / iw, py * h / ih)
    ratio = fed_m / model_m
    decision = GsdDecision(input_m, model_m, ratio, fed_m != input_m, fed_m)
    if abs(ratio - 1.0) <= GSD_TOLERANCE:
        return decision
    size = f"{input_m:.3g} m"
    if fed_m != input_m:
        size += f", {fed_m:.3g} m once its {w}x{h} pixels are resized to the model's {iw}x{ih} input"
    if not native:
        raise GsdMismatch(f"the chip's pixels are {size}, the model was trained on {model_m:g} m: a chip cannot be "
                          f"resampled to the model's GSD without changing what it shows; {CHIP_GSD_OVERRIDE}")
    return dataclasses.replace(decision, note=(
        f"pixels of {size} classified (--gsd native) by a model trained at {model_m:g} m ({ratio:.3g}x): "
        f"each chip covers {ratio:.3g}x the model's ground extent per side"))


def check(fit: ChipFit | Refused, path: str) -> ChipFit:
    """The fit, or the refusal raised as a `RadiometryMismatch` naming the chip."""
    if isinstance(fit, Refused):
        raise RadiometryMismatch(f"{path}: {fit.reason}")
    return fit


__all__ = ["CHIP_GSD_OVERRIDE", "GEOTIFF_CHIPS", "IMAGE_CHIPS", "S2CLOUDLESS_BANDS", "ChipFit", "Refused",
           "check", "chip_gsd", "geotiff_chip_fit", "image_chip_fit"]
