"""Clouds in `vision infer` (acceptance 4): each window's cloud fraction of its valid pixels
from the item's SCL asset, checked against an independent computation from SCL.tif; windows
over --max-cloud are `cloudy` (no label); s2cloudless gives every EuroSAT MS chip one."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio

from inference.runner import JobOptions, run_job
from vision.bands import EUROSAT_MS_BANDS
from vision.clouds import S2CLOUDLESS_BANDS, S2Cloudless
from vision.radiometry import EUROSAT_MS, EUROSAT_RGB

from .conftest import RGB_BANDS

ITEM = "S2A_29RKH_20200219_0_L2A.json"


def _run(inputs: list[Path], model: Path, out: Path, **kw: Any) -> Any:
    return run_job(JobOptions(inputs=tuple(str(p) for p in inputs), model=str(model), out=out,
                              progress=False, threads=1, workers=2, **kw))


def _expected(folder: Path, max_cloud: float, size: int = 64) -> dict[tuple[int, int], tuple[str, float | None]]:
    """Status and cloud share of every window, from SCL.tif (200 m, repeated onto the 100 m
    grid) and the TCI's validity: computed here, without the job's code."""
    with rasterio.open(folder / "SCL.tif") as ds:
        scl = np.repeat(np.repeat(ds.read(1), 2, axis=0), 2, axis=1)
    with rasterio.open(folder / "TCI.tif") as ds:
        image_valid = ~(ds.read() == 0).all(axis=0)
    h, w = image_valid.shape
    out = {}
    for r in range(0, h, size):
        for c in range(0, w, size):
            v = image_valid[r:r + size, c:c + size]
            s = scl[r:r + size, c:c + size]
            vv = v & (s != 0)
            share = float(np.isin(s, (3, 8, 9, 10))[vv].mean()) if vv.any() else None
            if v.sum() < 0.5 * size * size:
                status = "nodata"
            elif share is not None and share > max_cloud:
                status = "cloudy"
            else:
                status = "ok"
            out[(r, c)] = (status, share)
    return out


def test_cloudy_windows_are_those_whose_scl_cloud_share_exceeds_max_cloud(
        data_dir: Path, model_factory: Callable[..., Path], tmp_path: Path) -> None:
    model = model_factory(RGB_BANDS, extra_meta={"radiometry": EUROSAT_RGB, "gsd_m": 10.0})
    folder = data_dir / "s2-l2a-29RKH"
    out = tmp_path / "job"
    assert _run([folder / ITEM], model, out, gsd="native", max_cloud=0.2).exit_code == 0
    rows = pq.read_table(out / "predictions.parquet").to_pylist()
    want = _expected(folder, 0.2)
    assert len(rows) == len(want) == 324
    got = {(r["row_off"], r["col_off"]): r for r in rows}
    assert {k: v[0] for k, v in want.items()} == {k: r["status"] for k, r in got.items()}
    for k, (_, share) in want.items():
        if share is None:
            assert got[k]["cloud_fraction"] is None
        else:
            assert got[k]["cloud_fraction"] == pytest.approx(share, abs=1e-6)
    cloudy = [r for r in rows if r["status"] == "cloudy"]
    assert len(cloudy) >= 10 and all(r["label"] is None and r["probs"] is None for r in cloudy)
    m = json.loads((out / "manifest.json").read_text())
    assert m["counts"]["cloudy"] == len(cloudy) and m["options"]["max_cloud"] == 0.2
    assert m["inputs"][0]["cloud_method"] == "scl"


def test_s2cloudless_gives_every_eurosat_ms_chip_a_cloud_fraction(
        data_dir: Path, model_factory: Callable[..., Path], tmp_path: Path) -> None:
    model = model_factory(list(EUROSAT_MS_BANDS), mean=[1500.0] * 13, std=[800.0] * 13,
                          extra_meta={"radiometry": EUROSAT_MS, "gsd_m": 10.0})
    chips = data_dir / "eurosat-ms" / "test"
    out = tmp_path / "job"
    assert _run([chips], model, out, max_cloud=0.05).exit_code == 0
    rows = pq.read_table(out / "predictions.parquet").to_pylist()
    assert len(rows) == 27 and all(r["cloud_fraction"] is not None for r in rows)
    # The same fractions from the detector on the chips' ten bands as reflectance.
    det = S2Cloudless()
    idx = [EUROSAT_MS_BANDS.index(b) for b in S2CLOUDLESS_BANDS]
    for r in rows:
        with rasterio.open(r["path"]) as ds:
            refl = ds.read([k + 1 for k in idx]).astype(np.float32) * np.float32(1e-4)
        (want,) = det.fractions(refl[None], np.ones((1, *refl.shape[1:]), bool))
        assert r["cloud_fraction"] == pytest.approx(want, abs=1e-6)
        assert r["status"] == ("cloudy" if want is not None and want > 0.05 else "ok")
        assert r["item_id"] == Path(r["path"]).stem
    m = json.loads((out / "manifest.json").read_text())
    assert any("27 chips" in w and "taken as L1C" in w for w in m["warnings"]), m["warnings"]
