"""Is a declared band order plausible? A check of Sentinel-2 band names against pixels.

Catalogs get band orders wrong: ``stac-eurosat100`` declares its 13-band chips in
Sentinel-2 order (... B08, B08A, B09, B10, B11, B12) but the files are in the EuroSAT release
order (... B08, B09, B10, B11, B12, B8A): its band 10, declared B09, has a median of ~12 DN,
which only the cirrus band B10 has over land. Nothing in the metadata can tell; the pixels
can. These checks warn (they never refuse: a scene may be unusual) when:

- another band is far darker than the band declared B10 (cirrus, 1375 nm, absorbed by water
  vapour: the darkest band of an L1C product over land and water alike);
- the band declared B10 is not much darker than NIR;
- the bands declared B09 (water vapour) or B10 are brighter than the one declared B8A.

On the 219 EuroSAT MS chips (EuroSAT order, declared as such) none warns; declared in
Sentinel-2 order, 211 do; 81 of the 83 ``stac-eurosat100`` items do, and the catalog-level
check (medians over a few items) does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vision.errors import InputError
from vision.raster import open_raster
from vision.stac import StacItem, band_id


def band_medians(path: str | Path, max_side: int = 128) -> np.ndarray:
    """Per-band medians of a raster's valid (non-nodata, non-zero) pixels, read decimated to at
    most ``max_side`` pixels a side (overviews are used where the file has them)."""
    from rasterio.enums import Resampling

    with open_raster(path) as ds:
        f = max(1, math.ceil(max(ds.width, ds.height) / max_side))
        arr = ds.read(out_shape=(ds.count, max(1, ds.height // f), max(1, ds.width // f)),
                      resampling=Resampling.nearest).astype(np.float64)
        nodata = ds.nodata
    out = []
    for b in arr:
        v = b[np.isfinite(b) & (b != 0) & ((b != nodata) if nodata is not None else True)]
        out.append(float(np.median(v)) if v.size else math.nan)
    return np.asarray(out)


def band_order_warnings(names: Sequence[str | None], medians: Sequence[float], source: str) -> list[str]:
    """Warnings when a declared band order does not fit the pixels (Sentinel-2 L1C/L2A, land).

    Checks, on per-band medians (one chip, or the medians over a few items of a catalog):
    the band declared B10 (cirrus, 1375 nm, absorbed by water vapour) is the darkest of all
    and far darker than the NIR bands; no other band is far darker than it; the bands
    declared B09 (water vapour) and B10 are darker than B8A. A warning names the band that
    looks like B10 and the likely cause (the EuroSAT release puts B8A last).
    """
    ids = [band_id(n, None) for n in names]
    m = {i: float(v) for i, v in zip(ids, medians, strict=True) if i is not None and math.isfinite(v)}
    out: list[str] = []
    if "B10" in m:
        k10 = ids.index("B10")
        darkest = int(np.nanargmin(np.asarray(medians, dtype=np.float64)))
        nir = max(m.get("B08", 0.0), m.get("B8A", 0.0))
        if darkest != k10 and medians[darkest] < 0.25 * m["B10"]:
            out.append(
                f"{source}: band {darkest + 1} (declared {names[darkest]}, median {medians[darkest]:.0f}) looks like "
                f"cirrus B10, and the band declared B10 (band {k10 + 1}, median {m['B10']:.0f}) is "
                f"{m['B10'] / max(1.0, medians[darkest]):.0f}x brighter: the file's band order is likely not the "
                "declared one (the EuroSAT release order is B01..B09, B10, B11, B12, B8A)")
        elif nir and m["B10"] > 0.5 * nir:
            out.append(f"{source}: the band declared B10 (median {m['B10']:.0f}) is not much darker than NIR "
                       f"({nir:.0f}): cirrus B10 should be far darker over land; check the band order")
    for dark in ("B09", "B10"):
        if dark in m and "B8A" in m and m[dark] > m["B8A"]:
            out.append(f"{source}: the band declared {dark} (median {m[dark]:.0f}) is brighter than the band declared "
                       f"B8A (median {m['B8A']:.0f}); {dark} is absorbed by water vapour and should be darker: check "
                       "the band order")
    return out


def check_item_band_order(item: StacItem, max_side: int = 128) -> list[str]:
    """`band_order_warnings` for each multi-band asset of an item (its declared bands
    against its pixels)."""
    out: list[str] = []
    for a in item.assets.values():
        if len(a.bands) < 3 or a.path is None:
            continue
        try:
            med = band_medians(a.path, max_side)
        except (InputError, OSError) as exc:
            out.append(f"{item.id}/{a.key}: band order not checked ({exc})")
            continue
        if len(med) == len(a.bands):
            out += band_order_warnings([b.band_id for b in a.bands], list(med), f"{item.id}/{a.key}")
    return out


def check_catalog_band_order(items: Sequence[StacItem], sample: int = 8, max_side: int = 128) -> list[str]:
    """`band_order_warnings` on the per-band medians over the first ``sample`` items whose
    multi-band asset declares the same bands (one warning for a whole catalog, robust to a
    few water or cloud chips that fool the per-item check)."""
    groups: dict[tuple[str, tuple[str | None, ...]], list[np.ndarray]] = {}
    for item in items:
        for a in item.assets.values():
            key = (a.key, tuple(b.band_id for b in a.bands))
            if len(a.bands) < 3 or a.path is None or len(groups.get(key, [])) >= sample:
                continue
            try:
                med = band_medians(a.path, max_side)
            except (InputError, OSError):
                continue
            if len(med) == len(a.bands):
                groups.setdefault(key, []).append(med)
    out: list[str] = []
    for (asset, ids), meds in groups.items():
        agg = np.nanmedian(np.stack(meds), axis=0)
        out += band_order_warnings(list(ids), list(agg), f"asset {asset!r} of {len(meds)} items")
    return out
