"""vision.clouds: cloud fractions per window from the 29RKH SCL layer (checked against an
independent numpy computation from SCL.tif) and from s2cloudless on the EuroSAT MS chips."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from vision.clouds import (
    S2CLOUDLESS_BANDS,
    SCL_CLOUD_CLASSES,
    S2Cloudless,
    cloud_fraction,
    disk,
    s2cloudless_band_indices,
    s2cloudless_model_path,
    scl_fractions,
    to_reflectance,
    window_fractions,
)
from vision.radiometry import EUROSAT_MS, EUROSAT_RGB
from vision.scene import open_scene, plan_geotiff
from vision.stac import plan_item, read_stac

SIZE = 64
N = 1098  # the 100 m grid of 29RKH


def _independent_fractions(data_dir: Path) -> dict[tuple[int, int], float | None]:
    """From SCL.tif and TCI.tif with numpy only: SCL repeated 2x2 onto the 100 m grid."""
    with rasterio.open(data_dir / "s2-l2a-29RKH" / "SCL.tif") as s, rasterio.open(data_dir / "s2-l2a-29RKH" /
                                                                               "TCI.tif") as t:
        scl = np.kron(s.read(1), np.ones((2, 2), dtype=np.uint8))
        tci = t.read()
    valid = (tci != 0).any(axis=0) & (scl != 0)
    cloud = np.isin(scl, [3, 8, 9, 10])
    out: dict[tuple[int, int], float | None] = {}
    for r in range(0, N, SIZE):
        for c in range(0, N, SIZE):
            v = valid[r:r + SIZE, c:c + SIZE]  # the part inside the scene
            out[(r, c)] = float((cloud[r:r + SIZE, c:c + SIZE] & v).sum() / v.sum()) if v.any() else None
    return out


def test_scl_cloud_fractions_per_window_match_an_independent_computation(data_dir: Path) -> None:
    item = read_stac(data_dir / "s2-l2a-29RKH" / "S2A_29RKH_20200219_0_L2A.json").items[0]
    plan = plan_item(item, ["B04", "B03", "B02"], EUROSAT_RGB)
    got: dict[tuple[int, int], float | None] = {}
    chunk = 512  # a block-aligned chunk of 8 x 8 windows, one read per file
    with open_scene(plan) as bands, open_scene(plan, grid=bands.grid, cloud_layer=True) as scl:
        for r0 in range(0, N, chunk):
            for c0 in range(0, N, chunk):
                windows = [(r, c, SIZE, SIZE) for r in range(r0, min(N, r0 + chunk), SIZE)
                           for c in range(c0, min(N, c0 + chunk), SIZE)]
                read = (r0, c0, chunk, chunk)
                fr = scl_fractions(scl.read(read).data[0], bands.read(read).valid, (r0, c0), windows)
                got.update({(w[0], w[1]): f for w, f in zip(windows, fr, strict=True)})
    want = _independent_fractions(data_dir)
    assert got.keys() == want.keys() and len(got) == 18 * 18
    assert got == want  # exactly: the same counts
    for max_cloud in (0.5, 0.1, 0.01):
        cloudy = {k for k, f in got.items() if f is not None and f > max_cloud}
        assert cloudy == {k for k, f in want.items() if f is not None and f > max_cloud}
    assert any(f and f > 0.01 for f in got.values())  # the scene has some cloud (4 %)


def test_fractions_of_valid_pixels_only() -> None:
    cloud = np.zeros((4, 4), bool)
    cloud[:2] = True
    valid = np.ones((4, 4), bool)
    assert cloud_fraction(cloud, valid) == 0.5
    valid[2:] = False
    assert cloud_fraction(cloud, valid) == 1.0  # half of the window is outside: clear is not assumed
    assert cloud_fraction(cloud, np.zeros((4, 4), bool)) is None
    scl = np.array([[0, 3], [8, 4]], np.uint8)
    assert scl_fractions(scl, np.ones((2, 2), bool), (0, 0), [(0, 0, 2, 2)]) == [2 / 3]  # 0 is SCL nodata
    assert window_fractions(cloud, np.ones((4, 4), bool), (10, 10), [(12, 12, 4, 4)]) == [0.0]
    assert set(SCL_CLOUD_CLASSES) == {3, 8, 9, 10}


def test_the_model_file_is_found_without_importing_s2cloudless() -> None:
    path = s2cloudless_model_path()
    assert path.name == "pixel_s2_cloud_detector_lightGBM_v0.1.txt" and path.is_file()
    det = S2Cloudless()
    det.probabilities(np.zeros((1, 10, 2, 2), np.float32))
    assert "s2cloudless" not in sys.modules and "sentinelhub" not in sys.modules


def test_averaging_threshold_and_dilation() -> None:
    det = S2Cloudless(average_over=0, dilation=2)
    p = np.zeros((1, 9, 9), np.float32)
    p[0, 4, 4] = 0.9
    assert det.masks(p)[0].sum() == disk(2).sum() == 13
    assert not S2Cloudless(average_over=0, dilation=0, threshold=0.95).masks(p).any()
    # averaged over a disk of radius 1 (5 pixels) the lone pixel is 0.18 < 0.4: no cloud
    assert not S2Cloudless(average_over=1, dilation=0).masks(p).any()


@pytest.mark.slow
def test_s2cloudless_gives_every_eurosat_ms_chip_a_cloud_fraction(data_dir: Path) -> None:
    files = sorted((data_dir / "eurosat-ms").rglob("*.tif"))
    assert len(files) == 219
    pixels, valid = [], []
    for f in files:
        plan = plan_geotiff(f, S2CLOUDLESS_BANDS, EUROSAT_MS)  # 13 unnamed bands: EuroSAT order
        with open_scene(plan) as scene:
            px = scene.read((0, 0, scene.grid.height, scene.grid.width))
        r = plan.sources[0].radiometry
        pixels.append(to_reflectance(px.data, r.scale or 1e-4, r.offset or 0.0))
        valid.append(px.valid)
    x = np.stack(pixels)
    det = S2Cloudless()
    fr = det.fractions(x, np.stack(valid))
    assert len(fr) == 219 and all(f is not None and 0.0 <= f <= 1.0 for f in fr)
    arr = np.asarray(fr, dtype=float)
    print(f"s2cloudless cloud_fraction over 219 chips: mean {arr.mean():.4f}, >0: {(arr > 0).sum()}, "
          f">0.5: {(arr > 0.5).sum()}, max {arr.max():.3f}, quartiles {np.percentile(arr, [25, 50, 75])}")
    assert (arr == 0).mean() > 0.5  # EuroSAT chips are mostly clear
    # the probabilities are s2cloudless' own: its PixelClassifier, loaded from its file alone
    spec = importlib.util.spec_from_file_location("_s2c_pixel_classifier",
                                                  s2cloudless_model_path().parent.parent / "pixel_classifier.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    theirs = mod.PixelClassifier(det.booster).image_predict_proba(x[:8].transpose(0, 2, 3, 1))[..., 1]
    assert np.allclose(det.probabilities(x[:8]), theirs, atol=1e-6)
    assert "s2cloudless" not in sys.modules


def test_band_indices_for_s2cloudless() -> None:
    from vision.bands import EUROSAT_MS_BANDS

    idx = s2cloudless_band_indices(EUROSAT_MS_BANDS)
    assert idx == [0, 1, 3, 4, 7, 12, 8, 9, 10, 11]
    assert s2cloudless_band_indices(["B04", "B03", "B02"]) is None


def test_which_cloud_method() -> None:
    from vision.bands import EUROSAT_MS_BANDS
    from vision.clouds import cloud_method

    assert cloud_method(True, "L2A", ["B04"]) == "scl"
    assert cloud_method(False, "L1C", EUROSAT_MS_BANDS) == "s2cloudless"
    assert cloud_method(False, "L2A", EUROSAT_MS_BANDS) is None  # not what s2cloudless was trained on
    assert cloud_method(False, "L1C", ["B04", "B03", "B02"]) is None
