"""vision.bands: Sentinel-2 names, matching a raster's bands to a model's, the display stretch."""

from __future__ import annotations

import numpy as np
import pytest

from vision.bands import (
    EUROSAT_MS_BANDS,
    canonical_band,
    display_bands,
    display_names,
    match_bands,
    raster_band_names,
    select_bands,
    stretch,
    stretch_uint8,
)
from vision.errors import BandMismatchError


def test_sentinel2_names_map_to_band_ids() -> None:
    assert canonical_band("red") == "B04" and canonical_band("B04") == "B04"
    assert canonical_band("nir08") == "B8A" and canonical_band("b8a") == "B8A"
    assert canonical_band("rededge1") == "B05" and canonical_band("B5") == "B05"
    # "rededge" is the common name of three bands: it names none of them.
    assert canonical_band("rededge") == "rededge"
    assert canonical_band(None) is None and canonical_band("") is None
    assert canonical_band("elevation") == "elevation"


def test_an_unnamed_13_band_file_is_in_eurosat_order() -> None:
    assert raster_band_names([None] * 13) == list(EUROSAT_MS_BANDS)
    assert raster_band_names([None] * 12) == [None] * 12
    assert display_names([None, "B08", None]) == ["band1", "B08", "band3"]


def test_model_bands_found_by_name_alias_or_count() -> None:
    # STAC / earth-search names find a model trained on band ids, in the model's order.
    assert match_bands(["blue", "green", "red", "nir"], ["B04", "B03", "B02"]) == [2, 1, 0]
    assert match_bands(list(EUROSAT_MS_BANDS), ["B8A", "B02"]) == [12, 1]
    # Unnamed bands of the right count are taken in order.
    assert match_bands([None, None, None], ["B04", "B03", "B02"]) == [0, 1, 2]
    with pytest.raises(BandMismatchError, match="the model takes 3"):
        match_bands([None] * 4, ["B04", "B03", "B02"])
    with pytest.raises(BandMismatchError):
        match_bands(["B02", "B03", "B05", "B08"], ["B04", "B03", "B02"])


def test_select_bands_by_name_and_index() -> None:
    names = ["B02", "B03", "B04"]
    assert select_bands(names, None) == [0, 1, 2]
    assert select_bands(names, ["red", 0]) == [2, 0]
    with pytest.raises(BandMismatchError, match="out of range"):
        select_bands(names, [3])
    with pytest.raises(BandMismatchError, match="not found"):
        select_bands(names, ["B08"])


def test_display_bands_prefer_natural_colour() -> None:
    assert display_bands(list(EUROSAT_MS_BANDS)) == [3, 2, 1]
    assert display_bands(["nir", "red", "green", "blue"]) == [1, 2, 3]
    assert display_bands([None, None, None, None]) == [0, 1, 2]
    assert display_bands([None]) == [0, 0, 0]


def test_stretch_maps_percentiles_and_hides_invalid_pixels() -> None:
    rng = np.random.default_rng(0)
    band = rng.uniform(1000, 3000, size=(1, 50, 50))
    band[0, 0, 0] = 60000  # a hot pixel: above the 98th percentile, it saturates
    out = stretch(band)
    assert out.shape == (50, 50, 1) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0 and out[0, 0, 0] == 1.0
    lo, hi = np.percentile(band, (2, 98))
    mid = (lo + hi) / 2
    k = np.unravel_index(np.argmin(np.abs(band[0] - mid)), (50, 50))
    assert abs(out[k[0], k[1], 0] - 0.5) < 0.01
    valid = np.ones((50, 50), bool)
    valid[:10] = False
    masked = stretch(band, valid)
    assert (masked[:10] == 0).all() and masked[10:].max() == 1.0
    flat = stretch(np.full((2, 4, 4), 7.0))
    assert (flat == 0).all()
    u8 = stretch_uint8(band)
    assert u8.dtype == np.uint8 and u8.max() == 255
