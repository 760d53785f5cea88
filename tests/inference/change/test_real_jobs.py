"""`vision change` on job folders written by the real `vision infer` (a tiny ONNX model on the
real-chip scenes): the reader follows the prediction table's contract, not a test's copy of it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import rasterio

from tests.cli_runner import runner
from tests.inference.change.conftest import CLASSES, run_cli
from vision.hashing import file_sha256

_run_infer = runner("inference")


def _infer(*args: str) -> int:
    return _run_infer("infer", *args)[0]


def test_jobs_of_vision_infer_compare(pairs: Path, model_factory: Callable[..., Path], tmp_path: Path) -> None:
    model = model_factory(["B04", "B03", "B02"], classes=CLASSES)
    for d in ("d0", "d1"):
        assert _infer(str(pairs / f"{d}.tif"), "--model", str(model), "--out", str(tmp_path / d),
                      "--no-progress") in (0, 1)
    code, out = run_cli(str(tmp_path / "d0"), str(tmp_path / "d1"), "--out", str(tmp_path / "c"),
                        "--classes", "AnnualCrop", "--dates", "2023-06-15,2024-06-14", "--no-progress")
    assert code == 0, out
    rows = pq.read_table(tmp_path / "c" / "changes.parquet").to_pylist()
    assert len(rows) == 144
    assert {r["alignment"] for r in rows} == {"same_grid"}
    # the nodata blocks (6 windows before, 4 after) are not assessed; this schema-1 job has no
    # cloud mask, so its cloudy windows were classified like any other
    na = [r for r in rows if r["status"] == "not_assessed"]
    assert len(na) == 10 and {r["reason"] for r in na} == {"before nodata", "after nodata"}
    assert {r["input_sha256_after"] for r in rows} == {file_sha256(pairs / "d1.tif")}
    assert {r["model_sha256_before"] for r in rows} == {file_sha256(model)}
    assert {(r["item_before"], r["item_after"]) for r in rows} == {("d0", "d1")}
    assert all(r["row_off_before"] == r["row_off"] and r["path_before"] == str(pairs / "d0.tif")
               for r in rows if r["status"] != "not_assessed" or r["reason"] != "before nodata")
    assert (tmp_path / "c" / "report.html").stat().st_size > 10_000


def test_a_date_in_another_crs_read_on_the_earlier_grid_compares_window_by_window(
        pairs: Path, model_factory: Callable[..., Path], tmp_path: Path) -> None:
    """The after date in EPSG:3857, classified with ``--grid`` the before scene: its windows are
    the before job's (same CRS, offsets and bounds), `vision change` aligns them directly, and
    the transitions are those of the same-grid pair on nearly every window (the pixels went
    through a bilinear warp to EPSG:3857 and a nearest one back)."""
    model = model_factory(["B04", "B03", "B02"], classes=CLASSES)
    jobs = {d: tmp_path / d for d in ("d0", "d1", "d1-3857")}
    for d, job in jobs.items():
        extra = ["--grid", str(pairs / "d0.tif")] if d == "d1-3857" else []
        assert _infer(str(pairs / f"{d}.tif"), "--model", str(model), "--out", str(job), "--no-progress",
                      *extra) in (0, 1)
    before = pq.read_table(jobs["d0"] / "predictions.parquet").to_pylist()
    warped = pq.read_table(jobs["d1-3857"] / "predictions.parquet").to_pylist()
    key = ("crs", "row_off", "col_off", "height", "width")
    assert [tuple(r[k] for k in key) for r in warped] == [tuple(r[k] for k in key) for r in before]
    assert all(abs(a[k] - b[k]) < 1e-6 for a, b in zip(warped, before, strict=True) for k in ("minx", "maxy"))
    (entry,) = json.loads((jobs["d1-3857"] / "manifest.json").read_text())["inputs"]
    assert "read on the grid of --grid" in entry["gsd"]["note"] and entry["read"] == "vision.scene"
    # 15 m Web Mercator units are 10 m on the ground, the grid's size: nearest keeps each value
    assert entry["gsd"]["note"].endswith("resampled with nearest")
    with rasterio.open(jobs["d1-3857"] / "d1-3857.classes.tif") as a, \
            rasterio.open(jobs["d0"] / "d0.classes.tif") as b:
        assert (a.crs, a.transform, a.shape) == (b.crs, b.transform, b.shape)

    results = {}
    for d in ("d1", "d1-3857"):
        code, out = run_cli(str(jobs["d0"]), str(jobs[d]), "--out", str(tmp_path / f"c-{d}"), "--classes",
                            "AnnualCrop", "--dates", "2023-06-15,2024-06-14", "--no-progress")
        assert code == 0, out
        results[d] = pq.read_table(tmp_path / f"c-{d}" / "changes.parquet").to_pylist()
    assert {r["alignment"] for r in results["d1-3857"]} == {"same_grid"}
    same = [(r["row_off"], r["col_off"], r["status"], r["transition"]) for r in results["d1"]]
    other = [(r["row_off"], r["col_off"], r["status"], r["transition"]) for r in results["d1-3857"]]
    agree = sum(a == b for a, b in zip(same, other, strict=True)) / len(same)
    assert len(same) == 144 and agree >= 0.95, agree


def test_a_grid_that_cannot_be_used_is_refused_before_anything_runs(
        pairs: Path, data_dir: Path, model_factory: Callable[..., Path], tmp_path: Path) -> None:
    """No CRS, not a raster, or pixels the model was not trained on: exit code 2 naming --grid,
    and no job folder left behind."""
    from vision.radiometry import EUROSAT_RGB

    model = model_factory(["B04", "B03", "B02"], classes=CLASSES,
                          extra_meta={"radiometry": EUROSAT_RGB, "gsd_m": 10.0})
    plain = tmp_path / "plain.tif"
    with rasterio.open(plain, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8") as ds:
        ds.write(np.zeros((1, 8, 8), np.uint8))
    (tmp_path / "notes.txt").write_text("not a raster")
    for grid, words in ((plain, "no CRS or geotransform"), (tmp_path / "notes.txt", "--grid"),
                        (data_dir / "scenes" / "rasterio_RGB.byte.tif", "the model was trained on 10 m")):
        out = tmp_path / f"job-{grid.stem}"
        code, said = _run_infer("infer", str(pairs / "d1-3857.tif"), "--model", str(model), "--out", str(out),
                                "--grid", str(grid))
        assert code == 2 and "--grid" in said and words in said and not out.exists(), said
    code, said = _run_infer("infer", str(pairs / "d1.tif"), "--model", str(model), "--out", str(tmp_path / "r"),
                            "--grid", str(pairs / "d0.tif"), "--resolution", "20")
    assert code == 2 and "drop --resolution" in said, said
