"""``report.html`` (`inference.change.report`): self-contained, pictures only of the inputs the
models saw, and every string from the jobs escaped."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from PIL import Image

from tests.inference.change.conftest import CLASSES, run_cli

AC, FO = CLASSES.index("AnnualCrop"), CLASSES.index("Forest")


def test_the_report_is_self_contained_with_a_map_and_before_after_pairs(sim_jobs: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    code, text = run_cli(str(sim_jobs["d0"]), str(sim_jobs["d1"]), "--out", str(tmp_path / "c"), "--classes",
                         "AnnualCrop", "--no-progress", "--thumbnails", "5")
    assert code == 0, text
    page = (tmp_path / "c" / "report.html").read_text()
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:|//|file:)", page)
    assert "<script" not in page
    images = re.findall(r"src='data:image/png;base64,([^']+)'", page)
    assert len(images) == 1 + 2 * 5  # the map, then five before/after pairs
    first = Image.open(io.BytesIO(base64.b64decode(images[0])))
    assert first.size == (720, 720)  # the 768-pixel scene, scaled to the map size
    assert page.count("<div class=card>") == 5 and "appeared" in page and "Summary (hectares)" in page
    thumb = np.asarray(Image.open(io.BytesIO(base64.b64decode(images[1]))))
    assert thumb.shape == (64, 64, 3) and thumb.std() > 5  # the window at its own pixels, not a blank
    assert "width=160 height=160 alt=before" in page


def _tif(path: Path) -> Path:
    arr = np.random.default_rng(0).integers(1, 255, (3, 192, 192)).astype(np.uint8)
    with rasterio.open(path, "w", driver="GTiff", width=192, height=192, count=3, dtype="uint8", crs="EPSG:32632",
                       transform=Affine(10, 0, 500_000, 0, -10, 5_350_000)) as ds:
        ds.write(arr)
    return path


def test_inputs_gone_or_changed_are_named_not_shown_and_strings_are_escaped(make_grid_job: Any,
                                                                           tmp_path: Path) -> None:
    ok = np.full((3, 3), "ok", object)
    hostile = str(tmp_path / "<script>alert(1)</script>.tif")
    a = make_grid_job("a", ok, np.full((3, 3), FO), acquired="2023-01-01T00:00:00Z", path=hostile)
    changed = _tif(tmp_path / "after.tif")  # exists, but the job recorded another sha256
    b = make_grid_job("b", ok, np.full((3, 3), AC), acquired="2024-01-01T00:00:00Z", path=str(changed))
    code, text = run_cli(str(a), str(b), "--out", str(tmp_path / "c"), "--classes", "AnnualCrop", "--no-progress")
    assert code == 0, text
    page = (tmp_path / "c" / "report.html").read_text()
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;.tif: not found" in page
    assert "after.tif: changed since it was classified" in page
    assert page.count("alt=before") == 0  # no picture of an input that is not the one classified
