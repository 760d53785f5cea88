"""vision.scene: bands from several files at mixed resolutions read window by window onto one
grid (real data: the 29RKH item's per-band COGs against the stacked 12-band file)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.transform import array_bounds, from_origin
from rasterio.warp import Resampling, calculate_default_transform, reproject
from rasterio.windows import Window

from vision.errors import UnreadableInputError
from vision.radiometry import EUROSAT_MS, EUROSAT_RGB, Radiometry, RadiometryMismatch
from vision.scene import BandPlan, BandSource, Grid, grid_for, open_scene, parse_tiff_datetime, plan_geotiff
from vision.stac import plan_item, read_stac

ITEM = "S2A_29RKH_20200219_0_L2A.json"
STACKED = "S2A_29RKH_20200219_L2A_12band_100m.tif"
#: The stacked file's band order (EuroSAT order without B10).
STACKED_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B11", "B12", "B8A"]
L2A = Radiometry("reflectance", bits=16, level="L2A", scale=1e-4, offset=0.0, source="an L2A model")


def _item(data_dir: Path) -> Any:
    return read_stac(data_dir / "s2-l2a-29RKH" / ITEM).items[0]


def test_the_item_read_nearest_on_the_100m_grid_is_the_stacked_file(data_dir: Path) -> None:
    plan = plan_item(_item(data_dir), STACKED_BANDS, L2A)
    windows = [(0, 0, 512, 512), (512, 512, 512, 512), (1034, 1034, 64, 64), (37, 101, 64, 64),
               (600, 0, 498, 1098), (1000, 1050, 98, 48)]
    with open_scene(plan, resampling="nearest") as scene, rasterio.open(data_dir / "scenes" / STACKED) as ref:
        assert scene.grid == Grid("EPSG:32629", (100.0, 0.0, 199980.0, 0.0, -100.0, 2800020.0), 1098, 1098)
        assert scene.block_shape == (512, 512) and scene.band_names == tuple(STACKED_BANDS)
        for w in windows:
            got = scene.read(w)
            want = ref.read(window=Window(w[1], w[0], w[3], w[2]))
            assert got.data.dtype == np.uint16 and got.data.shape == want.shape
            assert int(np.abs(got.data.astype(np.int64) - want).max()) == 0, w
            assert got.valid.all()
        # one read per file per call, whatever the window
        assert scene.reads == len(windows) * 12


def test_a_window_past_the_grid_is_invalid_there(data_dir: Path) -> None:
    plan = plan_item(_item(data_dir), ["B04", "B03", "B02"], EUROSAT_RGB)
    with open_scene(plan) as scene, rasterio.open(data_dir / "s2-l2a-29RKH" / "TCI.tif") as tci:
        got = scene.read((1090, 1090, 64, 64))
        assert got.data.shape == (3, 64, 64) and got.valid[:8, :8].all() and not got.valid[8:, :].any()
        assert np.array_equal(got.data[:, :8, :8], tci.read(window=Window(1090, 1090, 8, 8)))
        assert scene.reads == 1  # three bands, one file, one read


def test_reads_are_counted_and_seen(data_dir: Path) -> None:
    seen: list[str] = []
    plan = plan_item(_item(data_dir), ["B02", "B05", "B01"], L2A)
    with open_scene(plan, on_read=lambda path, win: seen.append(Path(path).name)) as scene:
        scene.read((0, 0, 64, 64))
    assert sorted(seen) == ["B01.tif", "B02.tif", "B05.tif"] and scene.reads == 3


def test_bilinear_windows_agree_with_a_whole_read(data_dir: Path) -> None:
    """Chunks must not show seams: a window read alone equals the same pixels of a big read."""
    plan = plan_item(_item(data_dir), ["B05", "B01"], L2A)
    with open_scene(plan) as scene:  # bilinear by default for reflectance
        big = scene.read((0, 0, 512, 512)).data
        for w in [(64, 64, 64, 64), (101, 37, 64, 64), (448, 448, 64, 64)]:
            small = scene.read(w).data
            assert np.array_equal(small, big[:, w[0]:w[0] + w[2], w[1]:w[1] + w[3]])


def test_other_resolutions(data_dir: Path) -> None:
    plan = plan_item(_item(data_dir), ["B05", "B02"], L2A)
    g200 = grid_for(plan, resolution=200.0)
    assert (g200.width, g200.height, g200.res) == (549, 549, (200.0, 200.0))
    assert grid_for(plan, resolution_m=200.0) == g200
    with open_scene(plan, grid=g200, resampling="nearest") as scene, \
            rasterio.open(data_dir / "s2-l2a-29RKH" / "B05.tif") as b5:
        got = scene.read((0, 0, 549, 549))
        assert np.array_equal(got.data[0], b5.read(1))  # its own grid: the file as it is


def test_baseline_04_copy_reads_back_harmonised_identical(data_dir: Path, tmp_path: Path) -> None:
    """A copy of the item declared baseline 04.00 over DN+1000 files gives the original numbers."""
    src = data_dir / "s2-l2a-29RKH"
    d = json.loads((src / ITEM).read_text())
    d["properties"]["s2:processing_baseline"] = "04.00"
    d["properties"]["earthsearch:boa_offset_applied"] = False
    for key, asset in d["assets"].items():
        name = asset["href"][2:]
        if key in ("coastal", "blue", "rededge1"):  # 600, 100 and 200 m
            with rasterio.open(src / name) as ds:
                profile, arr = ds.profile, ds.read()
            shifted = np.where(arr == 0, 0, arr.astype(np.int64) + 1000).astype(np.uint16)
            with rasterio.open(tmp_path / name, "w", **profile) as out:
                out.write(shifted)
            asset["raster:bands"][0]["offset"] = -0.1  # as earth-search declares it
            asset["href"] = f"./{name}"
        else:
            asset["href"] = str(src / name)
    d["links"] = []
    (tmp_path / "item.json").write_text(json.dumps(d))
    bands = ["B01", "B02", "B05"]
    new = plan_item(read_stac(tmp_path / "item.json").items[0], bands, L2A)
    old = plan_item(_item(data_dir), bands, L2A)
    assert new.harmonisation.bias == (-1000.0, -1000.0, -1000.0) and old.harmonisation.identity
    assert "x * 1 -1000" in new.sources[0].reason
    with open_scene(new) as a, open_scene(old) as b:
        for w in [(0, 0, 512, 512), (700, 300, 64, 64)]:
            pa, pb = a.read(w), b.read(w)
            assert pa.data.dtype == np.float32
            assert np.array_equal(pa.data, pb.data.astype(np.float32)) and np.array_equal(pa.valid, pb.valid)


def test_the_stacked_l2a_file_is_refused_by_the_rgb_model_and_taken_by_an_l2a_one(data_dir: Path) -> None:
    path = data_dir / "scenes" / STACKED
    with pytest.raises(RadiometryMismatch, match="8-bit display composite"):
        plan_geotiff(path, ["B04", "B03", "B02"], EUROSAT_RGB)
    with pytest.raises(RadiometryMismatch, match="L1C .* L2A"):
        plan_geotiff(path, STACKED_BANDS[:9], EUROSAT_MS)
    plan = plan_geotiff(path, ["B04", "B08"], L2A)
    assert [s.index for s in plan.sources] == [3, 7] and "without B10" in plan.warnings[0]
    assert plan.item_id == path.stem


def test_a_plain_rgb_geotiff(data_dir: Path) -> None:
    plan = plan_geotiff(data_dir / "scenes" / "rasterio_RGB.byte.tif", ["B04", "B03", "B02"], EUROSAT_RGB)
    assert "display composite" in plan.warnings[0] and "by position" in plan.sources[0].reason
    with open_scene(plan) as scene:
        px = scene.read((0, 0, 100, 100))
        assert not px.valid[0, 0]  # the nodata collar


def _tif(path: Path, data: np.ndarray, crs: str, transform: Any, nodata: float | None = None) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=str(data.dtype), crs=crs, transform=transform, nodata=nodata) as ds:
        ds.write(data)
    return path


def _plan(*sources: BandSource) -> BandPlan:
    return BandPlan("t", None, "t", sources)


def test_grids_offset_by_a_fraction_of_a_pixel(tmp_path: Path) -> None:
    fine = _tif(tmp_path / "fine.tif", np.ones((1, 64, 64), np.uint16), "EPSG:32632",
                from_origin(500000, 5600000, 10, 10))
    coarse_data = np.arange(1, 32 * 32 + 1, dtype=np.uint16).reshape(1, 32, 32)
    coarse = _tif(tmp_path / "coarse.tif", coarse_data, "EPSG:32632", from_origin(500010, 5599990, 20, 20))
    r = Radiometry("reflectance", scale=1e-4, offset=0.0)
    plan = _plan(BandSource("a", "f", str(fine), 0, r), BandSource("b", "c", str(coarse), 0, r))
    with open_scene(plan, resampling="nearest") as scene:
        got = scene.read((0, 0, 64, 64))
    # target pixel (i, j) centre lies in coarse pixel floor((10 i - 5) / 20), floor((10 j - 5) / 20)
    idx = (10 * np.arange(64) - 5) // 20
    assert not got.valid[0, :].any() and not got.valid[:, 0].any()  # outside the coarse file
    want = coarse_data[0][np.ix_(idx[1:], idx[1:])]
    assert np.array_equal(got.data[1][1:, 1:], want) and got.valid[1:, 1:].all()


def test_a_file_in_another_crs_is_warped(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    base = rng.integers(1, 5000, size=(1, 64, 64)).astype(np.uint16)
    utm = _tif(tmp_path / "utm.tif", base, "EPSG:32632", from_origin(500000, 5600000, 10, 10), nodata=0)
    t = from_origin(500000, 5600000, 10, 10)
    mt, mw, mh = calculate_default_transform("EPSG:32632", "EPSG:3857", 64, 64, *array_bounds(64, 64, t))
    merc = np.zeros((1, mh, mw), np.uint16)
    reproject(base, merc, src_transform=from_origin(500000, 5600000, 10, 10), src_crs="EPSG:32632",
              dst_transform=mt, dst_crs="EPSG:3857", resampling=Resampling.nearest, src_nodata=0, dst_nodata=0)
    other = _tif(tmp_path / "merc.tif", merc, "EPSG:3857", mt, nodata=0)
    r = Radiometry("reflectance", scale=1e-4, offset=0.0)
    plan = _plan(BandSource("a", "u", str(utm), 0, r), BandSource("b", "m", str(other), 0, r))
    with open_scene(plan, resampling="nearest") as scene:
        got = scene.read((0, 0, 64, 64))
    inside = got.valid
    assert inside.mean() > 0.9  # the Mercator copy covers the UTM grid
    # there, nearest there and back gives mostly the same pixels
    assert (got.data[0][inside] == got.data[1][inside]).mean() > 0.95
    assert (got.data[1][~inside] == 0).all()


def test_nodata_of_each_file_is_invalid(tmp_path: Path) -> None:
    a = np.full((1, 16, 16), 7, np.uint16)
    a[0, :4] = 0
    b = np.full((1, 16, 16), 9, np.uint16)
    b[0, :, :2] = 0
    t = from_origin(500000, 5600000, 10, 10)
    r = Radiometry("reflectance", scale=1e-4, offset=0.0)
    plan = _plan(BandSource("a", "a", str(_tif(tmp_path / "a.tif", a, "EPSG:32632", t, 0)), 0, r),
                 BandSource("b", "b", str(_tif(tmp_path / "b.tif", b, "EPSG:32632", t)), 0, r, nodata=0))
    with open_scene(plan) as scene:
        v = scene.read((0, 0, 16, 16)).valid
    assert not v[:4].any() and not v[:, :2].any() and v[4:, 2:].all()  # b's nodata from the catalog


def test_files_go_through_the_driver_allow_list(tmp_path: Path) -> None:
    vrt = tmp_path / "band.tif"
    vrt.write_text('<VRTDataset rasterXSize="1" rasterYSize="1"></VRTDataset>')
    r = Radiometry("reflectance", scale=1e-4, offset=0.0)
    with pytest.raises(UnreadableInputError, match="not a GeoTIFF"), \
            open_scene(_plan(BandSource("a", "a", str(vrt), 0, r)),
                       grid=Grid("EPSG:32632", (10, 0, 0, 0, -10, 0), 4, 4)):
        pass


def test_a_huge_window_is_refused(data_dir: Path) -> None:
    plan = plan_item(_item(data_dir), ["B02"], L2A)
    with open_scene(plan) as scene, pytest.raises(ValueError, match="larger than"):
        scene.read((0, 0, 100_000, 100_000))


def test_tiff_datetime() -> None:
    assert parse_tiff_datetime("2020:02:19 11:34:25").isoformat() == "2020-02-19T11:34:25+00:00"  # type: ignore[union-attr]
    assert parse_tiff_datetime("yesterday") is None and parse_tiff_datetime(None) is None


def test_the_cloud_layer_on_the_bands_grid(data_dir: Path) -> None:
    plan = plan_item(_item(data_dir), ["B04", "B03", "B02"], EUROSAT_RGB)
    assert plan.cloud_layer is not None and plan.cloud_layer.categorical
    g = grid_for(plan)
    with open_scene(plan, grid=g, cloud_layer=True, resampling="bilinear") as scl, \
            rasterio.open(data_dir / "s2-l2a-29RKH" / "SCL.tif") as ref:
        got = scl.read((0, 0, 1098, 1098)).data[0]
        # nearest even when bilinear is asked for the reflectance bands: classes are not averaged
        assert np.array_equal(got, np.repeat(np.repeat(ref.read(1), 2, axis=0), 2, axis=1))
    no_scl = dataclasses.replace(plan, cloud_layer=None)
    with pytest.raises(ValueError, match="no cloud layer"), open_scene(no_scl, cloud_layer=True):
        pass


def test_a_fine_aerial_scene_read_at_the_models_gsd(data_dir: Path) -> None:
    """0.6 m Web Mercator pixels (0.47 m on the ground at 37.7 N) read at 10 m: the window a
    10 m model sees covers 640 m, not 30 m."""
    from vision.geo import decide_gsd, pixel_size_m

    path = data_dir / "scenes" / "rasterio_cogeo.tif"
    plan = plan_geotiff(path, ["B04", "B03", "B02"], EUROSAT_RGB)
    native = grid_for(plan)
    gsd = max(pixel_size_m(native.crs, native.affine, native.width, native.height))
    decision = decide_gsd(gsd, 10.0)
    assert decision.resample and decision.target_m == 10.0
    g = grid_for(plan, resolution_m=decision.target_m)
    assert max(pixel_size_m(g.crs, g.affine, g.width, g.height)) == pytest.approx(10.0, rel=1e-3)
    assert (g.width, g.height) == (49, 49)  # 1024 x 0.47 m = 483 m = 48.3 pixels of 10 m
    with open_scene(plan, grid=g, resampling="average") as scene, rasterio.open(path) as ds:
        px = scene.read((0, 0, g.height, g.width))
        assert px.valid[:48, :48].all() and not px.valid[48:, :].any()  # the last row/column: past the file
        ref = ds.read(window=Window(0, 0, 48 * g.res[0] / native.res[0], 48 * g.res[1] / native.res[1]),
                      out_shape=(3, 48, 48), resampling=Resampling.average)
        assert np.array_equal(px.data[:, :48, :48], ref)


def test_only_chunks_over_an_aoi_are_read(data_dir: Path) -> None:
    """An AOI in EPSG:4326 over a corner of 29RKH: the chunks without any of its windows are
    never read (the read hook sees only the AOI's chunks)."""
    import shapely

    from vision.geo import Aoi, aoi_in_scene, assign_windows, footprint, reproject, window_polygons

    plan = plan_item(_item(data_dir), ["B04", "B03", "B02"], EUROSAT_RGB)
    grid = grid_for(plan)
    aoi = Aoi("corner", reproject(shapely.box(200000, 2760000, 240000, 2800000), grid.crs, "EPSG:4326"))
    part = aoi_in_scene(aoi, "EPSG:4326", grid.crs, footprint(grid.crs, grid.affine, grid.width, grid.height))
    assert part is not None
    chunks = [(r, c, 512, 512) for r in range(0, 1098, 512) for c in range(0, 1098, 512)]
    wanted = []
    for ch in chunks:
        windows = [(r, c, 64, 64) for r in range(ch[0], min(1098, ch[0] + 512), 64)
                   for c in range(ch[1], min(1098, ch[1] + 512), 64)]
        if any(assign_windows(window_polygons(grid.affine, windows), [(aoi.id, part)])):
            wanted.append(ch)
    seen: list[tuple[float, float, float, float]] = []
    with open_scene(plan, grid=grid, on_read=lambda path, win: seen.append(win)) as scene:
        for ch in wanted:
            scene.read(ch)
    assert wanted == [(0, 0, 512, 512)] and scene.reads == 1  # 40 km x 40 km of a 110 km tile
    assert seen == [(0.0, 0.0, 512.0, 512.0)]
