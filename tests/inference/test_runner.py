"""End-to-end: `run_job` and the `vision infer` command on chips, scenes and bad inputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pyarrow.parquet as pq
import pytest
import rasterio
from PIL import Image

from inference.runner import JobOptions, run_job
from inference.tiling import TileGrid
from vision.contracts.predictions import PREDICTION_SCHEMA
from vision.errors import ConfigError
from vision.metrics import softmax

from .conftest import RGB_BANDS, SCENES, random_chips
from .rfc7946 import assert_rfc7946

REPO = Path(__file__).resolve().parents[2]
VISION = [sys.executable, "-c", "from vision.cli import main; main()"]


def _run(inputs: list[Path], model: Path, out: Path, **kw: object) -> object:
    return run_job(JobOptions(inputs=tuple(str(p) for p in inputs), model=str(model), out=out,
                              progress=False, threads=1, workers=2, **kw))  # type: ignore[arg-type]


def _cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([*VISION, *args], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=300)


def test_chips_and_scene_rows(rgb_model: Path, tmp_path: Path,
                              tif_factory: Callable[..., Path]) -> None:
    chips = random_chips(tmp_path / "chips", 20)
    rng = np.random.default_rng(1)
    scene = rng.integers(1, 255, (3, 200, 150), dtype=np.uint8)
    scene[:, :80, :] = 0  # a nodata band across the top
    scene_path = tif_factory("scene.tif", scene, nodata=0)
    out = tmp_path / "job"
    res = _run([tmp_path / "chips", scene_path], rgb_model, out)
    assert res.exit_code == 0  # type: ignore[attr-defined]
    table = pq.read_table(out / "predictions.parquet")
    assert table.schema.equals(PREDICTION_SCHEMA)
    rows = table.to_pylist()
    chip_rows = [r for r in rows if r["row_off"] is None]
    assert len(chip_rows) == 20 and all(r["status"] == "ok" for r in chip_rows)
    # Calibrated probabilities: softmax(logits / T) of the bare model on the decoded chip.
    sess = ort.InferenceSession(str(rgb_model), providers=["CPUExecutionProvider"])
    x = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.float32).transpose(2, 0, 1)
                  for p in chips])
    probs = softmax(sess.run(None, {"pixels": x})[0], 1.5)
    by_path = {r["path"]: r for r in chip_rows}
    for k, p in enumerate(chips):
        r = by_path[str(p)]
        np.testing.assert_allclose(r["probs"], probs[k], atol=1e-6)
        assert r["label"] == int(probs[k].argmax())
        assert r["confidence"] == pytest.approx(float(probs[k].max()), abs=1e-6)
        thr = {0: 0.3, 1: 0.5}.get(r["label"])
        # null, not false, for a class without an operating point (README)
        assert r["flagged"] == (None if thr is None else r["confidence"] >= thr)
        assert r["model_name"] == "tiny-3band" and len(r["model_sha256"]) == 64
        import hashlib

        assert r["input_sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
    scene_rows = [r for r in rows if r["path"] == str(scene_path)]
    assert len(scene_rows) == 4 * 3  # ceil(200/64) x ceil(150/64)
    st = {(r["row_off"], r["col_off"]): r["status"] for r in scene_rows}
    assert st[(0, 0)] == "nodata" and st[(128, 0)] == "ok"
    assert st[(64, 0)] == "ok"  # 48 of 64 rows valid: below the 0.5 nodata threshold
    assert st[(192, 0)] == "nodata"  # 8 of 64 rows inside the scene
    assert all(r["crs"] == "EPSG:32631" for r in scene_rows)
    r = next(r for r in scene_rows if (r["row_off"], r["col_off"]) == (64, 64))
    assert (r["minx"], r["maxy"]) == (500000 + 640, 5000000 - 640)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and manifest["counts"]["error"] == 0
    assert (out / "_SUCCESS").exists() and not (out / "_parts").exists()
    assert [p.name for p in out.rglob(".*") if p.is_file()] == [".lock"]  # no temp file left
    with rasterio.open(out / "scene.classes.tif") as ds:
        # 200 x 150 px on a 64 px grid: 8 x 2 px per raster pixel, ending at the scene's edge
        arr = ds.read(1)
        assert arr.shape == (25, 75) and ds.res == (20.0, 80.0)
        assert ds.bounds == pytest.approx((500000, 5000000 - 2000, 500000 + 1500, 5000000))
        assert arr[0, 0] == 255 and arr[128 // 8, 0] != 255
        assert arr[-1, -1] == 255  # the window at (192, 128): only 8 rows inside, nodata


def test_concurrent_streams_give_the_same_table(rgb_model: Path, tmp_path: Path,
                                                tif_factory: Callable[..., Path]) -> None:
    """Batches run by several streams at once are taken back in order: the same rows."""
    random_chips(tmp_path / "chips", 45)
    rng = np.random.default_rng(2)
    scene_path = tif_factory("scene.tif", rng.integers(1, 255, (3, 300, 260), dtype=np.uint8))
    inputs = [tmp_path / "chips", scene_path]
    tables = []
    for streams in (1, 3):
        out = tmp_path / f"job{streams}"
        res = _run(inputs, rgb_model, out, streams=streams, batch_size=4)
        assert res.exit_code == 0  # type: ignore[attr-defined]
        assert json.loads((out / "manifest.json").read_text())["run"]["streams"] == streams
        tables.append(pq.read_table(out / "predictions.parquet").to_pylist())
    assert len(tables[0]) == 45 + 5 * 5 and tables[0] == tables[1]
    with pytest.raises(ConfigError, match="--streams"):
        _run(inputs, rgb_model, tmp_path / "job0", streams=0)


def test_default_batch_counts_the_model_views(model_factory: Callable[..., Path],
                                             tmp_path: Path) -> None:
    """A model that averages test-time views runs each chip that many times: its default
    batch holds that many times fewer chips (64 forward passes on the CPU); the rows do not
    depend on the batch size."""
    random_chips(tmp_path / "chips", 20)
    tables = []
    for tta, want in (("none", 64), ("flips", 16), ("d8", 8)):
        model = model_factory(RGB_BANDS, extra_meta={"tta": tta})
        out = tmp_path / f"job-{tta}"
        res = _run([tmp_path / "chips"], model, out, device="cpu")
        assert res.exit_code == 0  # type: ignore[attr-defined]
        assert json.loads((out / "manifest.json").read_text())["run"]["batch_size"] == want
        tables.append([(r["path"], r["label"], r["confidence"])
                       for r in pq.read_table(out / "predictions.parquet").to_pylist()])
    assert len(tables[0]) == 20 and tables[0] == tables[1] == tables[2]
    explicit = tmp_path / "job-explicit"
    _run([tmp_path / "chips"], model_factory(RGB_BANDS, extra_meta={"tta": "d8"}), explicit,
         device="cpu", batch_size=3)
    assert json.loads((explicit / "manifest.json").read_text())["run"]["batch_size"] == 3


def test_rerun_is_noop_and_other_options_are_refused(rgb_model: Path, tmp_path: Path,
                                                     model_factory: Callable[..., Path]) -> None:
    random_chips(tmp_path / "chips", 3)
    out = tmp_path / "job"
    _run([tmp_path / "chips"], rgb_model, out)
    before = (out / "predictions.parquet").stat().st_mtime_ns
    res = _run([tmp_path / "chips"], rgb_model, out)
    assert res.state == "already-finished"  # type: ignore[attr-defined]
    assert (out / "predictions.parquet").stat().st_mtime_ns == before
    other = model_factory(RGB_BANDS, seed=3)
    with pytest.raises(ConfigError, match="--overwrite"):
        _run([tmp_path / "chips"], other, out)
    with pytest.raises(ConfigError, match="--overwrite"):
        _run([tmp_path / "chips"], rgb_model, out, max_nodata=0.1)
    res = _run([tmp_path / "chips"], other, out, overwrite=True)
    assert res.state == "finished"  # type: ignore[attr-defined]
    (tmp_path / "notajob").mkdir()
    (tmp_path / "notajob" / "precious.txt").write_text("x")
    with pytest.raises(ConfigError, match="not a job folder"):
        _run([tmp_path / "chips"], rgb_model, tmp_path / "notajob", overwrite=True)


#: A fixture model for every real scene: (scene, model band names).
SCENE_MODELS = {
    "rasterio_RGB.byte.tif": ["B04", "B03", "B02"],
    "rasterio_cogeo.tif": ["B04", "B03", "B02"],
    "LC08_L2SP_001062_20201031_SR_7band.tif": [f"SR_B{k}" for k in range(1, 8)],
    "terratorch_regression_test_0_input.tif": [f"b{k}" for k in range(1, 11)],
    # band names in another order than the file: selection by name
    "S2A_29RKH_20200219_L2A_12band_100m.tif": ["B04", "B03", "B02", "B08", "B01", "B05",
                                               "B06", "B07", "B8A", "B09", "B11", "B12"],
}


@pytest.mark.data
@pytest.mark.skipif(not SCENES.is_dir(), reason="shared scenes not available")
def test_real_scenes(model_factory: Callable[..., Path], tmp_path: Path) -> None:
    for name, bands in SCENE_MODELS.items():
        scene = SCENES / name
        model = model_factory(bands, mean=[1000.0] * len(bands), std=[500.0] * len(bands))
        out = tmp_path / name
        res = _run([scene], model, out)
        assert res.exit_code == 0, name  # type: ignore[attr-defined]
        rows = pq.read_table(out / "predictions.parquet").to_pylist()
        stem = Path(name).stem
        with rasterio.open(scene) as src, rasterio.open(out / f"{stem}.classes.tif") as cls, \
                rasterio.open(out / f"{stem}.confidence.tif") as conf:
            assert cls.crs == src.crs and conf.crs == src.crs
            assert cls.driver == "GTiff" and cls.profile.get("tiled") in (True, None)
            # The rasters stop at the scene's extent (edge windows clipped, not padded).
            assert cls.bounds == pytest.approx(src.bounds) and conf.bounds == cls.bounds
            assert cls.nodata == 255
            classes = cls.read(1)
        gj = json.loads((out / f"{stem}.geojson").read_text())
        assert_rfc7946(gj)
        assert len(gj["features"]) == len(rows)
        # Each window's class is at its top-left corner's raster pixel.
        sr, sc = TileGrid(src.height, src.width, (64, 64), (64, 64)).raster_step()
        for r in rows:
            want = r["label"] if r["status"] == "ok" else 255
            assert classes[r["row_off"] // sr, r["col_off"] // sc] == want, (name, r)
        ok = [r for r in rows if r["status"] == "ok"]
        assert ok, name
        if name in ("rasterio_RGB.byte.tif", "LC08_L2SP_001062_20201031_SR_7band.tif"):
            # rotated footprints with a nodata collar: the corners are not classified
            corner = next(r for r in rows if r["row_off"] == 0 and r["col_off"] == 0)
            assert corner["status"] == "nodata" and classes[0, 0] == 255


def test_non_finite_logits_fail_the_job(model_factory: Callable[..., Path], tmp_path: Path) -> None:
    """A model that outputs NaN on some inputs: those rows are errors with a reason, the
    job's exit code is 1, the rest is classified."""
    model = model_factory(RGB_BANDS, nan_below=10.0)
    random_chips(tmp_path / "chips", 4)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "chips" / "black.png")
    out = tmp_path / "job"
    res = _run([tmp_path / "chips"], model, out)
    assert res.exit_code == 1  # type: ignore[attr-defined]
    rows = {Path(r["path"]).name: r for r in pq.read_table(out / "predictions.parquet").to_pylist()}
    bad = rows.pop("black.png")
    assert bad["status"] == "error" and "non-finite logits" in bad["error"]
    assert bad["class_name"] is None and bad["confidence"] is None
    assert all(r["status"] == "ok" and np.isfinite(r["confidence"]) for r in rows.values())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"ok": 4, "nodata": 0, "cloudy": 0, "error": 1}
    assert [Path(e["path"]).name for e in manifest["errors"]] == ["black.png"]


def test_paths_are_absolute_and_resolved(rgb_model: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The path column and the manifest's inputs hold absolute, resolved paths, so a job
    read from another folder (or machine with the same mounts) finds its chips."""
    random_chips(tmp_path / "data" / "chips", 2)
    (tmp_path / "link").symlink_to(tmp_path / "data", target_is_directory=True)
    (tmp_path / "data" / "alias.jpg").symlink_to(tmp_path / "data" / "chips" / "chip_0000.jpg")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "job"
    res = run_job(JobOptions(inputs=("link/chips", "data/alias.jpg"), model=str(rgb_model),
                             out=Path("job"), progress=False, threads=1))
    assert res.exit_code == 0
    paths = [r["path"] for r in pq.read_table(out / "predictions.parquet").to_pylist()]
    real = str((tmp_path / "data" / "chips").resolve())
    # the alias is the same file as chip_0000: one row
    assert sorted(paths) == [f"{real}/chip_0000.jpg", f"{real}/chip_0001.jpg"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["options"]["inputs"] == [real, f"{real}/chip_0000.jpg"]
    assert all(e["path"].startswith(real) for e in manifest["inputs"])


def test_scene_across_the_antimeridian(rgb_model: Path, tmp_path: Path,
                                       tif_factory: Callable[..., Path]) -> None:
    """An EPSG:4326 scene from 179.7 E to 180.34 E: row longitudes normalised to [-180, 180]
    (a window across the antimeridian has minx > maxx, as an RFC 7946 bbox), and the GeoJSON
    cuts that window in two."""
    arr = np.random.default_rng(4).integers(1, 255, (3, 128, 128), dtype=np.uint8)
    scene = tif_factory("am.tif", arr, crs="EPSG:4326",
                        transform=(0.005, 0.0, 179.7, 0.0, -0.005, -16.0))
    out = tmp_path / "job"
    assert _run([scene], rgb_model, out).exit_code == 0  # type: ignore[attr-defined]
    rows = {(r["row_off"], r["col_off"]): r
            for r in pq.read_table(out / "predictions.parquet").to_pylist()}
    west, east = rows[(0, 0)], rows[(0, 64)]  # 179.70-180.02 and 180.02-180.34
    assert (west["minx"], west["maxx"]) == pytest.approx((179.7, -179.98))
    assert (east["minx"], east["maxx"]) == pytest.approx((-179.98, -179.66))
    assert all(-180 <= r[k] <= 180 for r in rows.values() for k in ("minx", "maxx"))
    gj = json.loads((out / "am.geojson").read_text())
    assert_rfc7946(gj)
    assert gj["bbox"] == pytest.approx([179.7, -16.64, -179.66, -16.0])
    geoms = {(f["properties"]["row_off"], f["properties"]["col_off"]): f["geometry"]
             for f in gj["features"]}
    assert geoms[(0, 0)]["type"] == "MultiPolygon" and len(geoms[(0, 0)]["coordinates"]) == 2
    lons = [x for poly in geoms[(0, 0)]["coordinates"] for x, _ in poly[0]]
    assert max(lons) == 180 and min(lons) == -180
    assert geoms[(0, 64)]["type"] == "Polygon"
    assert {round(x, 6) for x, _ in geoms[(0, 64)]["coordinates"][0]} == {-179.98, -179.66}


def test_max_pixels_caps_scenes(rgb_model: Path, tmp_path: Path,
                                tif_factory: Callable[..., Path]) -> None:
    rng = np.random.default_rng(6)
    big = tif_factory("big.tif", rng.integers(1, 255, (3, 200, 200), dtype=np.uint8))
    small = tif_factory("small.tif", rng.integers(1, 255, (3, 100, 100), dtype=np.uint8))
    out = tmp_path / "job"
    res = _run([big, small], rgb_model, out, max_pixels=150 * 150)
    assert res.exit_code == 1  # type: ignore[attr-defined]
    rows = pq.read_table(out / "predictions.parquet").to_pylist()
    (refused,) = [r for r in rows if r["path"] == str(big)]
    assert refused["status"] == "error"
    assert "200x200 = 40,000 pixels, more than --max-pixels 22,500" in refused["error"]
    assert "ok" in {r["status"] for r in rows if r["path"] == str(small)}
