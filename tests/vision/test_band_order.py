"""vision.band_order: a declared band order checked against the pixels. stac-eurosat100
declares Sentinel-2 order, its files are in EuroSAT order (B8A last); EuroSAT MS chips read in
their own order pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vision.band_order import band_medians, band_order_warnings, check_catalog_band_order, check_item_band_order
from vision.bands import EUROSAT_MS_BANDS
from vision.stac import read_stac

S2_ORDER = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]


def test_stac_eurosat100_files_are_not_in_the_declared_order(data_dir: Path) -> None:
    items = read_stac(data_dir / "stac-eurosat100" / "stac" / "subset" / "catalog.json").items
    # the finding itself: band 10 of the files (declared B09) is the ~12 DN cirrus band
    med = np.stack([band_medians(i.assets["raster"].path) for i in items[:20]])
    typical = np.median(med, axis=0)
    assert typical[9] < 60 and typical[10] > 500 and typical[12] > typical[8]
    flagged = [i.id for i in items if check_item_band_order(i)]
    assert len(flagged) >= 0.9 * len(items)
    warn = check_catalog_band_order(items)
    assert len(warn) >= 1 and "band 10 (declared B09" in warn[0] and "EuroSAT release order" in warn[0]


def test_eurosat_ms_chips_in_their_own_order_pass_and_fail_when_misdeclared(data_dir: Path) -> None:
    files = sorted((data_dir / "eurosat-ms").rglob("*.tif"))
    assert len(files) == 219
    meds = [list(band_medians(f)) for f in files]
    assert sum(bool(band_order_warnings(list(EUROSAT_MS_BANDS), m, "c")) for m in meds) == 0
    assert sum(bool(band_order_warnings(S2_ORDER, m, "c")) for m in meds) >= 0.9 * len(files)


@pytest.mark.parametrize("medians, expect", [
    ([1300, 1100, 1000, 900, 1200, 2000, 2300, 2300, 700, 12, 1800, 1100, 2500], None),  # EuroSAT order, right
    ([1300, 1100, 1000, 900, 1200, 2000, 2300, 2300, 700, 1500, 1800, 1100, 2500], "not much darker than NIR"),
    ([1300, 1100, 1000, 900, 1200, 2000, 2300, 2300, 2600, 12, 1800, 1100, 2500],
     "brighter than the band declared B8A"),
])
def test_band_order_rules(medians: list[float], expect: str | None) -> None:
    w = band_order_warnings(list(EUROSAT_MS_BANDS), medians, "x")
    assert (not w) if expect is None else expect in " ".join(w)
