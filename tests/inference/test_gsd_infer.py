"""`vision infer` and the ground sampling distance (acceptance 8): a fine aerial scene read
at the model's 10 m, ``--gsd native`` recorded, a much coarser input refused, and a model
that records no GSD read as it is with a warning."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import rasterio

from inference.runner import JobOptions, run_job
from vision.radiometry import EUROSAT_RGB

from .conftest import RGB_BANDS


def _run(inputs: list[Path], model: Path, out: Path, **kw: Any) -> Any:
    return run_job(JobOptions(inputs=tuple(str(p) for p in inputs), model=str(model), out=out,
                              progress=False, threads=1, workers=2, **kw))


def _manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())


@pytest.fixture(scope="module")
def rgb10(model_factory: Callable[..., Path]) -> Path:
    return model_factory(RGB_BANDS, extra_meta={"radiometry": EUROSAT_RGB, "gsd_m": 10.0})


def test_a_fine_aerial_scene_is_read_at_the_models_gsd(data_dir: Path, rgb10: Path, tmp_path: Path) -> None:
    """0.6 m Web Mercator pixels (0.47 m on the ground) read at 10 m: one 64 x 64 window of
    640 m covers the 483 m scene, where pixel for pixel there were 16 x 16 windows of 30 m."""
    out = tmp_path / "job"
    assert _run([data_dir / "scenes" / "rasterio_cogeo.tif"], rgb10, out).exit_code == 0
    (entry,) = _manifest(out)["inputs"]
    assert entry["gsd"]["resample"] is True and entry["gsd"]["target_m"] == 10.0
    assert entry["gsd"]["input_m"] == pytest.approx(0.472, abs=0.002)
    assert re.search(r"read resampled from 0\.47\d m to the model's 10 m", entry["gsd"]["note"])
    assert entry["size"] == [49, 49] and entry["grid"] == [1, 1]
    assert entry["window_m"] == pytest.approx([640.0, 640.0], rel=1e-3)
    assert entry["read"] == "vision.scene"
    (row,) = pq.read_table(out / "predictions.parquet").to_pylist()
    with rasterio.open(data_dir / "scenes" / "rasterio_cogeo.tif") as ds:
        units_per_m = ds.res[0] / entry["gsd"]["input_m"]  # Web Mercator units per ground metre
    assert row["status"] == "ok"
    assert row["maxx"] - row["minx"] == pytest.approx(640.0 * units_per_m, rel=2e-3)


def test_gsd_native_keeps_the_pixels_and_records_the_mismatch(
        data_dir: Path, rgb10: Path, tmp_path: Path) -> None:
    out = tmp_path / "job"
    assert _run([data_dir / "scenes" / "rasterio_cogeo.tif"], rgb10, out, gsd="native").exit_code == 0
    m = _manifest(out)
    (entry,) = m["inputs"]
    assert entry["grid"] == [16, 16] and entry["size"] == [1024, 1024] and entry["read"] == "file"
    assert entry["gsd"]["resample"] is False
    assert re.search(r"pixels kept at 0\.47\d m \(--gsd native\) for a model trained at 10 m",
                     entry["gsd"]["note"])
    assert entry["window_m"] == pytest.approx([30.2, 30.2], abs=0.1)
    assert m["options"]["gsd"] == "native"


def test_an_input_more_than_twice_coarser_is_refused(data_dir: Path, rgb10: Path, tmp_path: Path) -> None:
    """300 m Landsat pixels for a 10 m model: refused unless --gsd native."""
    scene = data_dir / "scenes" / "rasterio_RGB.byte.tif"
    assert _run([scene], rgb10, tmp_path / "a").exit_code == 1
    (err,) = _manifest(tmp_path / "a")["errors"]
    assert err["error"].startswith("GsdMismatch: the input's pixels are 300 m, 30x coarser")
    assert "pass --gsd native to run it anyway" in err["error"]
    assert _run([scene], rgb10, tmp_path / "b", gsd="native").exit_code == 0
    (entry,) = _manifest(tmp_path / "b")["inputs"]
    assert "run anyway (overridden)" in entry["gsd"]["note"]


def test_a_model_without_gsd_reads_pixels_as_they_are_with_a_warning(
        data_dir: Path, rgb_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "job"
    assert _run([data_dir / "scenes" / "rasterio_cogeo.tif"], rgb_model, out).exit_code == 0
    m = _manifest(out)
    assert m["model"]["gsd_m"] is None and m["model"]["radiometry"] is None
    assert any("does not record its ground sampling distance" in w for w in m["warnings"])
    assert any("does not record its radiometry" in w for w in m["warnings"])
    (entry,) = m["inputs"]
    assert entry["grid"] == [16, 16] and entry["gsd"]["model_m"] is None


def test_resolution_and_resampling_are_part_of_the_job(data_dir: Path, rgb10: Path, tmp_path: Path) -> None:
    out = tmp_path / "job"
    scene = data_dir / "scenes" / "rasterio_cogeo.tif"
    assert _run([scene], rgb10, out, resolution=5.0, resampling="average").exit_code == 0
    m = _manifest(out)
    (entry,) = m["inputs"]
    assert entry["size"] == [97, 97] and entry["grid"] == [2, 2]
    assert "read at --resolution 5 m" in entry["gsd"]["note"]
    assert m["options"]["resolution"] == 5.0 and m["options"]["resampling"] == "average"
    # Another resolution is another job: the fingerprint changed.
    from vision.errors import ConfigError

    with pytest.raises(ConfigError, match="another model or other options"):
        _run([scene], rgb10, out, resolution=10.0)
