"""`vision infer` and a chip's ground sampling distance: a georeferenced GeoTIFF chip whose
pixels are not the model's 10 m is an error row (a chip cannot be resampled without changing
what it covers), ``--gsd native`` classifies it and the manifest counts the mismatch; chips
with no known GSD (JPEG, no CRS) are unchanged."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from inference import readers
from inference.input_fit import chip_gsd
from inference.runner import JobOptions, run_job
from vision.geo import GsdMismatch
from vision.radiometry import EUROSAT_RGB

from .conftest import RGB_BANDS, write_tif

#: What a chip at 0.5 m is refused with (the reason of its error row).
REASON_05 = ("GsdMismatch: the chip's pixels are 0.5 m, the model was trained on 10 m: a chip cannot be "
             "resampled to the model's GSD without changing what it shows; pass --gsd native to classify "
             "it anyway (the mismatch is recorded)")


def _run(inputs: list[Path], model: Path, out: Path, **kw: Any) -> Any:
    return run_job(JobOptions(inputs=tuple(str(p) for p in inputs), model=str(model), out=out,
                              progress=False, threads=1, workers=2, **kw))


def _manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())


def _rows(out: Path) -> dict[str, dict[str, Any]]:
    return {Path(r["path"]).name: r for r in pq.read_table(out / "predictions.parquet").to_pylist()}


def _field(seed: int, size: int = 64) -> np.ndarray:
    """An 8-bit RGB ``3 x size x size`` chip with field-like structure: a few smooth
    patches of crop colours and some sensor noise, as in a EuroSAT RGB chip."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    patches = np.sin(6 * xx + rng.uniform(0, 6)) + np.cos(5 * yy + rng.uniform(0, 6))
    base = np.array([[90], [110], [70]])[:, :, None] + 25 * patches[None]
    return np.clip(base + rng.normal(0, 6, (3, size, size)), 0, 255).astype(np.uint8)


def _utm_chip(folder: Path, name: str, res: float, seed: int = 0, size: int = 64) -> Path:
    """A chip in UTM 32N (around Stuttgart) with ``res`` m pixels."""
    return write_tif(folder / name, _field(seed, size), crs="EPSG:32632",
                     transform=(res, 0.0, 513_200.0, 0.0, -res, 5_403_800.0))


@pytest.fixture(scope="module")
def rgb10(model_factory: Callable[..., Path]) -> Path:
    return model_factory(RGB_BANDS, extra_meta={"radiometry": EUROSAT_RGB, "gsd_m": 10.0})


@pytest.fixture
def batch(tmp_path: Path) -> list[Path]:
    """A 10 m chip, two aerial 0.5 m chips, a 40 m chip and a JPEG chip."""
    d = tmp_path / "chips"
    d.mkdir()
    jpeg = d / "eurosat.jpg"
    Image.fromarray(_field(4).transpose(1, 2, 0)).save(jpeg, quality=90)
    return [_utm_chip(d, "s2_10m.tif", 10.0, 0), _utm_chip(d, "aerial_a.tif", 0.5, 1),
            _utm_chip(d, "aerial_b.tif", 0.5, 2), _utm_chip(d, "coarse_40m.tif", 40.0, 3), jpeg]


def test_a_10m_utm_chip_is_classified_with_nothing_recorded(rgb10: Path, tmp_path: Path) -> None:
    chip = _utm_chip(tmp_path / "chips", "s2.tif", 10.0)
    out = tmp_path / "job"
    assert _run([chip], rgb10, out).exit_code == 0
    assert _rows(out)["s2.tif"]["status"] == "ok"
    m = _manifest(out)
    (entry,) = m["inputs"]
    assert "gsd" not in entry
    assert not any("--gsd native" in w for w in m["warnings"])


def test_chips_at_another_gsd_are_error_rows_and_the_rest_is_classified(
        rgb10: Path, batch: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "job"
    assert _run(batch, rgb10, out).exit_code == 1
    rows = _rows(out)
    assert {n: r["status"] for n, r in rows.items()} == {
        "s2_10m.tif": "ok", "eurosat.jpg": "ok",
        "aerial_a.tif": "error", "aerial_b.tif": "error", "coarse_40m.tif": "error"}
    assert rows["aerial_a.tif"]["error"] == REASON_05
    assert rows["coarse_40m.tif"]["error"] == REASON_05.replace("0.5 m", "40 m")
    assert rows["aerial_a.tif"]["class_name"] is None
    errors = {Path(e["path"]).name: e["error"] for e in _manifest(out)["errors"]}
    assert errors == {n: rows[n]["error"] for n in ("aerial_a.tif", "aerial_b.tif", "coarse_40m.tif")}


def test_gsd_native_classifies_them_and_the_manifest_counts_the_mismatch(
        rgb10: Path, batch: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "job"
    assert _run(batch, rgb10, out, gsd="native").exit_code == 0
    assert {r["status"] for r in _rows(out).values()} == {"ok"}
    m = _manifest(out)
    native = [w for w in m["warnings"] if "--gsd native" in w]
    assert native == [  # one line per pixel size, counted: not one per file
        "2 chips: pixels of 0.5 m classified (--gsd native) by a model trained at 10 m (0.05x): each chip "
        "covers 0.05x the model's ground extent per side",
        "1 chip: pixels of 40 m classified (--gsd native) by a model trained at 10 m (4x): each chip "
        "covers 4x the model's ground extent per side"]
    entries = {Path(e["path"]).name: e for e in m["inputs"]}
    assert entries["aerial_a.tif"]["gsd"] == {
        "input_m": 0.5, "model_m": 10.0, "ratio": 0.05, "resample": False, "target_m": 0.5,
        "note": native[0][len("2 chips: "):]}
    assert entries["coarse_40m.tif"]["gsd"]["ratio"] == 4.0
    assert "gsd" not in entries["s2_10m.tif"] and "gsd" not in entries["eurosat.jpg"]


def test_a_geographic_chip_is_measured_on_the_ground(rgb10: Path, tmp_path: Path) -> None:
    """EPSG:4326 pixels of 9e-5 degrees at the equator are ~10 m: accepted; 4.5e-4 degrees
    (~50 m) are refused, though both are far below 1 in CRS units."""
    d = tmp_path / "chips"
    fine = write_tif(d / "wgs84_10m.tif", _field(5), crs="EPSG:4326",
                     transform=(9e-5, 0.0, 11.52, 0.0, -9e-5, 0.003))
    coarse = write_tif(d / "wgs84_50m.tif", _field(6), crs="EPSG:4326",
                       transform=(4.5e-4, 0.0, 11.52, 0.0, -4.5e-4, 0.015))
    out = tmp_path / "job"
    assert _run([fine, coarse], rgb10, out).exit_code == 1
    rows = _rows(out)
    assert rows["wgs84_10m.tif"]["status"] == "ok" and rows["wgs84_10m.tif"]["crs"] == "EPSG:4326"
    assert rows["wgs84_50m.tif"]["status"] == "error"
    assert rows["wgs84_50m.tif"]["error"].startswith("GsdMismatch: the chip's pixels are 50.1 m, the model")


def test_chips_with_no_known_gsd_are_unchanged(model_factory: Callable[..., Path], rgb10: Path,
                                               tmp_path: Path) -> None:
    """A JPEG chip and a GeoTIFF chip without CRS get the same rows from a model that records
    its GSD as from the same weights without one."""
    d = tmp_path / "chips"
    d.mkdir()
    jpeg = d / "eurosat.jpg"
    Image.fromarray(_field(7).transpose(1, 2, 0)).save(jpeg, quality=90)
    plain = write_tif(d / "no_crs.tif", _field(8), crs=None, transform=None)
    no_gsd = model_factory(RGB_BANDS, extra_meta={"radiometry": EUROSAT_RGB})
    assert _run([jpeg, plain], rgb10, tmp_path / "a").exit_code == 0
    assert _run([jpeg, plain], no_gsd, tmp_path / "b").exit_code == 0
    a, b = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    for name in ("eurosat.jpg", "no_crs.tif"):
        assert a[name]["status"] == "ok"
        assert a[name]["probs"] == pytest.approx(b[name]["probs"], abs=1e-6)


def test_a_small_chip_is_checked_at_the_size_the_model_receives(rgb10: Path, tmp_path: Path) -> None:
    """A 32 x 32 chip is resized to the model's 64 x 64: at 20 m it is fed at 10 m (accepted),
    at 10 m it is fed at 5 m (refused, saying so)."""
    d = tmp_path / "chips"
    ok = _utm_chip(d, "small_20m.tif", 20.0, 9, size=32)
    fine = _utm_chip(d, "small_10m.tif", 10.0, 10, size=32)
    out = tmp_path / "job"
    assert _run([ok, fine], rgb10, out).exit_code == 1
    rows = _rows(out)
    assert rows["small_20m.tif"]["status"] == "ok"
    assert rows["small_10m.tif"]["error"] == (
        "GsdMismatch: the chip's pixels are 10 m, 5 m once its 32x32 pixels are resized to the model's "
        "64x64 input, the model was trained on 10 m: a chip cannot be resampled to the model's GSD "
        "without changing what it shows; pass --gsd native to classify it anyway (the mismatch is recorded)")


@pytest.mark.parametrize(("res", "fits"), [(9.05, True), (10.95, True), (8.9, False), (11.1, False)])
def test_the_tolerance_is_ten_percent(res: float, fits: bool) -> None:
    args = ("EPSG:32632", (res, 0.0, 513_200.0, 0.0, -res, 5_403_800.0), (64, 64), (64, 64), 10.0)
    if fits:
        d = chip_gsd(*args)
        assert d.note == "" and d.input_m == pytest.approx(res)
    else:
        with pytest.raises(GsdMismatch, match="pass --gsd native"):
            chip_gsd(*args)
        assert "classified (--gsd native)" in chip_gsd(*args, native=True).note


def test_the_check_reads_only_the_header_the_probe_already_opened(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A GeoTIFF chip is opened once to probe it, GSD included; a JPEG chip is never
    measured (a folder of 10,000 EuroSAT JPEGs pays nothing)."""
    tif = _utm_chip(tmp_path, "s2.tif", 10.0)
    jpeg = tmp_path / "eurosat.jpg"
    Image.fromarray(_field(1).transpose(1, 2, 0)).save(jpeg)
    opened: list[str] = []
    real_open = readers.open_raster

    def counting_open(path: Any, *a: Any, **kw: Any) -> Any:
        opened.append(str(path))
        return real_open(path, *a, **kw)

    measured: list[str] = []
    real_gsd = readers.chip_gsd

    def counting_gsd(*a: Any, **kw: Any) -> Any:
        measured.append(a[0])
        return real_gsd(*a, **kw)

    monkeypatch.setattr(readers, "open_raster", counting_open)
    monkeypatch.setattr(readers, "chip_gsd", counting_gsd)
    bands, size = ("B04", "B03", "B02"), (64, 64)
    pr = readers.probe(str(tif), bands, size, radiometry=EUROSAT_RGB, gsd_m=10.0)
    assert pr.kind == "chip" and pr.gsd is not None and pr.gsd.input_m == pytest.approx(10.0)
    assert opened == [str(tif)] and measured == ["EPSG:32632"]
    pr = readers.probe(str(jpeg), bands, size, radiometry=EUROSAT_RGB, gsd_m=10.0)
    assert pr.kind == "chip" and pr.gsd is None
    assert opened == [str(tif)] and measured == ["EPSG:32632"]
