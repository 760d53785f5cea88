"""What a training set's pixels mean and how large they are on the ground.

A trained model records both (``vision.radiometry`` and ``vision.gsd_m``), so that inference
can refuse pixels of another kind and resample windows to the training GSD. They come from,
in this order:

1. the recipe (``data.radiometry``, ``data.gsd_m``): a declaration wins;
2. the source itself: labelled scenes and STAC catalogs derive them from their data;
   EuroSAT RGB is an 8-bit display composite at 10 m (JPEGs of B04/B03/B02); EuroSAT MS is
   Sentinel-2 L1C top-of-atmosphere reflectance x 10000 before baseline 04.00; the
   synthetic demo set is made as reflectance x 10000 at 10 m;
3. the first chip of a folder or manifest: JPEG/PNG chips are 8-bit display images; a
   GeoTIFF says what its ``vision_radiometry`` tag says (chips written by `vision data chips`
   and by the review service's dataset export carry one), else what its dtype and
   scale/offset tags say; its transform gives the GSD.

No silent default for non-8-bit data: a GeoTIFF set whose values mean nothing known stops
with a `ConfigError` asking for ``data.radiometry``. Every assumption is a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vision.bands import canonical_band
from vision.data.sources import ChipSource
from vision.errors import ConfigError, UnreadableInputError
from vision.radiometry import EUROSAT_MS, EUROSAT_RGB, S2_SCALE, Radiometry, geotiff_radiometry

#: The generated demo chips (`vision.data.synthetic`): reflectance x 10000 at 10 m.
SYNTHETIC = Radiometry("reflectance", bits=16, scale=S2_SCALE, offset=0.0,
                       source="synthetic demo chips (vision.data.synthetic)")
EUROSAT_GSD_M = 10.0


@dataclass(frozen=True)
class PixelFacts:
    """What a training set's pixels mean (`radiometry`) and their ground size (`gsd_m`,
    ``None`` when unknown), with the assumptions made on the way."""

    radiometry: Radiometry
    gsd_m: float | None
    warnings: tuple[str, ...] = ()


def _unwrap(source: ChipSource) -> ChipSource:
    """The source under the wrappers training puts around a split (subset, band check)."""
    for _ in range(16):
        if getattr(source, "radiometry", None) is not None:
            return source
        parent = getattr(source, "parent", None)
        if not isinstance(parent, ChipSource):
            break
        source = parent
    return source


def pixel_facts(source: ChipSource, kind: str, declared: dict[str, Any] | None = None,
                declared_gsd_m: float | None = None) -> PixelFacts:
    """The radiometry and GSD a model trained on ``source`` records.

    Args:
        source: the training split.
        kind: the recipe's ``data.source``.
        declared, declared_gsd_m: the recipe's ``data.radiometry`` and ``data.gsd_m``.

    Raises:
        ConfigError: non-8-bit GeoTIFF chips whose values are of unknown meaning and no
            ``data.radiometry`` declared.
    """
    inner = _unwrap(source)
    own_rad = getattr(inner, "radiometry", None)
    own_gsd = getattr(inner, "gsd_m", None)
    warnings: list[str] = []
    if declared is not None:
        rad = Radiometry.from_obj(declared)
    elif isinstance(own_rad, Radiometry):
        rad = own_rad
    elif kind == "eurosat-rgb":
        rad = EUROSAT_RGB
    elif kind == "eurosat-ms":
        rad = EUROSAT_MS
    elif kind == "synthetic":
        rad = SYNTHETIC
    else:
        rad, found = _first_chip(source)
        warnings += found
    gsd = declared_gsd_m if declared_gsd_m is not None else (
        own_gsd if isinstance(own_gsd, (int, float)) else None)
    if gsd is None:
        if kind in ("eurosat-rgb", "eurosat-ms", "synthetic"):
            gsd = EUROSAT_GSD_M
        else:
            gsd = _first_chip_gsd(source)
            if gsd is None:
                warnings.append("the chips' ground sampling distance is unknown (not georeferenced): "
                                "declare data.gsd_m so that inference can match it")
    return PixelFacts(rad, float(gsd) if gsd is not None else None, tuple(warnings))


def _first_path(source: ChipSource) -> Path | None:
    if not len(source):
        return None
    return Path(source.refs[0].path.split("#", 1)[0])


def _first_chip(source: ChipSource) -> tuple[Radiometry, list[str]]:
    path = _first_path(source)
    if path is None:
        return Radiometry("unknown", source="an empty split"), []
    if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
        return Radiometry("display", bits=8, source=f"{path.suffix.lower()[1:].upper()} chips"), []
    from vision.raster import open_raster

    try:
        with open_raster(path) as ds:
            tagged = ds.tags().get("vision_radiometry")  # written by vision data chips / review export
            if tagged:
                try:
                    return Radiometry.from_obj(tagged), []
                except ValueError as exc:
                    raise ConfigError(f"{path}: unreadable vision_radiometry tag ({exc})") from exc
            derived = geotiff_radiometry(
                ds.dtypes[0], list(ds.scales), list(ds.offsets),
                [canonical_band(b) for b in source.bands], f"the chips ({path.parent})")
    except UnreadableInputError as exc:
        raise ConfigError(f"cannot tell what the training chips' values mean: {exc}") from exc
    rad = derived.radiometry
    if rad.kind == "unknown":
        raise ConfigError(
            f"the training chips ({path.parent}, {source.bands}) do not say what their values mean "
            f"({'; '.join(derived.warnings) or rad.describe()}); declare it in the recipe, e.g. "
            "data.radiometry: {kind: reflectance, level: L2A, scale: 0.0001} or {kind: display, bits: 8}")
    return rad, list(derived.warnings)


def _first_chip_gsd(source: ChipSource) -> float | None:
    path = _first_path(source)
    if path is None or path.suffix.lower() not in (".tif", ".tiff"):
        return None
    from affine import Affine

    from vision.geo import pixel_size_m
    from vision.raster import open_raster

    try:
        with open_raster(path) as ds:
            if ds.crs is None or ds.transform == Affine.identity():
                return None
            x, y = pixel_size_m(ds.crs, ds.transform, ds.width, ds.height)
    except (UnreadableInputError, ValueError):
        return None
    return round(max(x, y), 3)
