"""Outputs that open well: the class COG's colour table and category names (read back through
GDAL itself, and listed by ``gdalinfo`` where it is installed), valid COGs, cloudy windows
shown as not assessed in the rasters, the GeoJSON, the quicklook and the summary, and the
raster size cap."""

from __future__ import annotations

import ctypes
import glob
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import rasterio
from rich.console import Console

from inference.cog import MAX_RASTER_CELLS, raster_layout
from inference.palette import NOT_ASSESSED_COLOURS, class_colours, colour_table, status_values
from inference.plan import ScenePlan
from inference.progress import JobResult, print_summary
from inference.quicklook import Canvas, render
from inference.readers import SceneInfo
from inference.runner import JobOptions, run_job
from inference.tiling import TileGrid, chunk_grid
from inference.writers import scene_files, write_scene_outputs
from vision.contracts.predictions import new_row, rows_to_table

from .conftest import CLASSES, RGB_BANDS

NAMES = {0: "AnnualCrop", 1: "Forest", 2: "Highway", 3: "SeaLake", 253: "error (not assessed)",
         254: "cloudy (not assessed)", 255: "nodata (not assessed)"}


def scene_plan(height: int, width: int, size: int = 64, stride: int = 64,
               crs: str = "EPSG:32631") -> ScenePlan:
    """A scene's plan without a file (outputs need only its header facts)."""
    info = SceneInfo(path="/data/s.tif", width=width, height=height, dtype="uint8", crs=crs,
                     transform=(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0), bands=(0, 1, 2),
                     nodata=(None, None, None), dataset_mask=False, block_shape=(256, 256))
    grid = TileGrid(height, width, (size, size), (stride, stride))
    return ScenePlan(0, info, grid, tuple(chunk_grid(grid, (256, 256))), "ab" * 32, "s")


def scene_rows(scene: ScenePlan, statuses: dict[tuple[int, int], str]) -> pa.Table:
    """A row per window: ``statuses`` where given (cloudy rows with their cloud share), the
    rest classified as class ``(i + j) % 4``."""
    g = scene.grid
    rows = []
    for i in range(g.rows):
        for j in range(g.cols):
            r, c, h, w = g.window(i, j)
            status = statuses.get((i, j), "ok")
            extra: dict[str, object] = {}
            if status == "ok":
                k = (i + j) % len(CLASSES)
                extra = {"label": k, "class_name": CLASSES[k], "confidence": 0.5 + k / 10,
                         "probs": [0.1] * len(CLASSES), "flagged": False}
            elif status == "cloudy":
                extra = {"cloud_fraction": 0.9, "flagged": False}
            elif status == "error":
                extra = {"error": "read failed"}
            rows.append(new_row(scene.path, status, scene.sha256, row_off=r, col_off=c, height=h,
                                width=w, crs=scene.info.crs, item_id="S2A_X", **extra))
    return rows_to_table(rows)


def gdal_categories(path: Path) -> list[str]:
    """Band 1's category names as GDAL reads them (rasterio has no call for them: the C
    function of rasterio's own libgdal, through ctypes)."""
    lib = ctypes.CDLL(glob.glob(os.path.dirname(rasterio.__file__) + ".libs/libgdal-*.so*")[0])
    lib.GDALOpen.restype, lib.GDALOpen.argtypes = ctypes.c_void_p, [ctypes.c_char_p, ctypes.c_int]
    lib.GDALGetRasterBand.restype = ctypes.c_void_p
    lib.GDALGetRasterBand.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.GDALGetRasterCategoryNames.restype = ctypes.POINTER(ctypes.c_char_p)
    lib.GDALGetRasterCategoryNames.argtypes = [ctypes.c_void_p]
    lib.GDALClose.argtypes = [ctypes.c_void_p]
    lib.GDALGetRasterNoDataValue.restype = ctypes.c_double
    lib.GDALGetRasterNoDataValue.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.GDALAllRegister()
    ds = lib.GDALOpen(str(path).encode(), 0)
    assert ds, path
    try:
        band = lib.GDALGetRasterBand(ds, 1)
        # GDAL 3.10's GeoTIFF band loads its PAM sidecar lazily, on calls such as this one
        # (not on GetCategoryNames itself); gdalinfo and QGIS make such calls first too.
        assert lib.GDALGetRasterNoDataValue(band, None) == 255
        names = lib.GDALGetRasterCategoryNames(band)
        out = []
        k = 0
        while names and names[k] is not None:
            out.append(names[k].decode())
            k += 1
        return out
    finally:
        lib.GDALClose(ds)


@pytest.fixture
def written(tmp_path: Path) -> tuple[ScenePlan, Path]:
    """A 1100 x 1100 scene with 65 px windows every 64 px (cells on half pixels: an exact
    raster of single pixels, tiled, with overviews), some windows cloudy, failed, nodata."""
    scene = scene_plan(1100, 1100, size=65)
    statuses = {(0, 0): "cloudy", (0, 1): "cloudy", (1, 0): "nodata", (2, 2): "error"}
    write_scene_outputs(scene, scene_rows(scene, statuses), tmp_path, CLASSES,
                        Canvas(scene, RGB_BANDS))
    return scene, tmp_path


def test_class_cog_has_a_legend_and_cloud_has_its_own_value(written: tuple[ScenePlan, Path]) -> None:
    scene, out = written
    names = scene_files(scene)
    assert sorted(p.name for p in out.iterdir()) == sorted(names.values())
    with rasterio.open(out / names["classes"]) as ds:
        assert ds.nodata == 255 and ds.dtypes[0] == "uint8" and ds.shape == (1100, 1100)
        cmap = ds.colormap(1)
        for value, rgba in colour_table(CLASSES, 255).items():
            assert cmap[value] == rgba, value
        tags = ds.tags(1)
        assert tags["class_1"] == "Forest" and tags["value_cloudy"] == "254"
        arr = ds.read(1)
        g = scene.grid
        # window (i, j) owns the cell centred on it: look at its centre pixel
        def at(i: int, j: int) -> int:
            r, c, h, w = g.window(i, j)
            return int(arr[r + h // 2, c + w // 2])
        assert at(0, 0) == at(0, 1) == 254 and at(1, 0) == 255 and at(2, 2) == 253
        assert at(1, 1) == 2 and at(3, 2) == 1
    cats = gdal_categories(out / names["classes"])
    assert len(cats) == 256 and {v: cats[v] for v in NAMES} == NAMES
    assert not any(cats[4:253])
    from rio_cogeo.cogeo import cog_validate

    for kind in ("classes", "confidence"):
        valid, errors, _ = cog_validate(str(out / names[kind]))
        assert valid and not errors, (kind, errors)
    with rasterio.open(out / names["confidence"]) as ds:
        conf = ds.read(1)
        assert np.isnan(conf[10, 10]) and ds.overviews(1)  # the cloudy window: no confidence


@pytest.mark.skipif(shutil.which("gdalinfo") is None,
                    reason="gdalinfo is not installed (Debian: apt-get install gdal-bin, "
                           ".ci/system-deps); the categories are read through GDAL above")
def test_gdalinfo_lists_the_categories_and_colours(written: tuple[ScenePlan, Path]) -> None:
    scene, out = written
    text = subprocess.run(["gdalinfo", str(out / scene_files(scene)["classes"])],
                          capture_output=True, text=True, check=True).stdout
    assert "Categories:" in text and "Color Table (RGB with 256 entries)" in text
    for value, name in NAMES.items():
        assert f"{value:>3}: {name}" in text, name
    r, g, b = class_colours(CLASSES)[1]
    assert f"1: {r},{g},{b},255" in text
    r, g, b, _ = NOT_ASSESSED_COLOURS["cloudy"]
    assert f"254: {r},{g},{b},255" in text


def test_geojson_shows_cloudy_windows_as_not_assessed(written: tuple[ScenePlan, Path]) -> None:
    scene, out = written
    feats = json.loads((out / scene_files(scene)["geojson"]).read_text())["features"]
    by = {(f["properties"]["row_off"], f["properties"]["col_off"]): f["properties"] for f in feats}
    cloudy = by[(0, 0)]
    assert cloudy["status"] == "cloudy" and cloudy["assessed"] is False
    assert cloudy["not_assessed"] == "cloudy (not assessed)" and cloudy["class_name"] is None
    assert cloudy["label"] is None and cloudy["cloud_fraction"] == pytest.approx(0.9)
    assert by[(64, 64)]["assessed"] is True and by[(64, 64)]["not_assessed"] is None
    assert by[(64, 0)]["not_assessed"] == "nodata (not assessed)"


def test_quicklook_tints_cloud_in_its_own_colour_with_a_legend_entry() -> None:
    scene = scene_plan(256, 256)
    canvas = Canvas(scene, RGB_BANDS)
    canvas.data[:] = 100
    canvas.valid[:] = True
    grid = np.full((4, 4), 255, np.uint8)
    grid[0, 0], grid[3, 3] = 1, status_values(255)["cloudy"]
    px = np.asarray(render(canvas, grid, 255, CLASSES)).astype(float)
    cloud = np.asarray(NOT_ASSESSED_COLOURS["cloudy"][:3], float)
    grey = px[100, 20]  # a window without data: the scene alone
    assert np.abs(px[250, 250] - (0.45 * grey + 0.55 * cloud)).max() <= 1
    assert not any(np.abs(px[250, 250] - (0.45 * grey + 0.55 * np.asarray(c))).max() <= 1
                   for c in class_colours(CLASSES))
    legend = px[:, 256:].reshape(-1, 3)
    assert (legend == cloud).all(axis=1).any()


def test_summary_has_a_cloudy_row_beside_nodata() -> None:
    console = Console(record=True, width=100)
    result = JobResult("finished", 0, {"ok": 5, "nodata": 2, "cloudy": 7, "error": 0},
                       {c: 0 for c in CLASSES})
    print_summary(console, result, Path("/tmp/j"))
    lines = console.export_text().splitlines()
    nodata = next(k for k, line in enumerate(lines) if "nodata (not assessed)" in line)
    assert "cloudy (not assessed)" in lines[nodata + 1] and lines[nodata + 1].rstrip(" │").endswith("7")
    assert "total rows" in "".join(lines) and any(line.rstrip(" │").endswith("14") for line in lines)


def test_a_raster_whose_exact_step_is_one_pixel_of_a_huge_scene_is_coarser() -> None:
    """65 px windows every 64 px over a 10980 px scene: the exact raster would be 10980 x
    10980 single pixels (120 million cells, half a gigabyte of confidence); it is written at
    one pixel per stride instead, over the same extent, with a note."""
    scene = scene_plan(10980, 10980, size=65)
    assert scene.grid.raster_step() == (1, 1) and MAX_RASTER_CELLS < 10980 ** 2
    layout = raster_layout(scene)
    assert (layout.height, layout.width) == (172, 172) and layout.note is not None
    assert "one per stride" in layout.note and "10980 x 10980" in layout.note
    a = scene.info.affine
    t = layout.transform
    assert t * (172, 172) == pytest.approx(a * (10980, 10980))  # ends at the scene's edge
    assert t.c == a.c and t.f == a.f
    assert layout.rows[0] == 0 and layout.rows[-1] == scene.grid.rows - 1
    small = scene_plan(1100, 1100, size=65)
    assert raster_layout(small).note is None and raster_layout(small).height == 1100


def test_the_cap_writes_small_rasters_and_the_manifest_says_why(
        rgb_model: Path, tmp_path: Path, tif_factory: Callable[..., Path],
        monkeypatch: pytest.MonkeyPatch) -> None:
    import inference.cog

    monkeypatch.setattr(inference.cog, "MAX_RASTER_CELLS", 10_000)
    arr = np.random.default_rng(0).integers(1, 255, (3, 300, 260), dtype=np.uint8)
    scene = tif_factory("scene.tif", arr)
    out = tmp_path / "job"
    # 64 px windows every 63 px: cells on half pixels, an exact raster of 300 x 260
    res = run_job(JobOptions(inputs=(str(scene),), model=str(rgb_model), out=out,
                             progress=False, threads=1, workers=1, stride=(63, 63)))
    assert res.exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    (entry,) = [e for e in manifest["inputs"] if e["kind"] == "scene"]
    assert entry["raster"]["shape"] == [5, 4] and "300 x 260" in entry["raster"]["note"]
    with rasterio.open(out / "scene.classes.tif") as ds, rasterio.open(scene) as src:
        assert ds.shape == (5, 4) and ds.bounds == pytest.approx(src.bounds)
