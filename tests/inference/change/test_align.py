"""Aligning dates (`inference.change.align`): the same grid read directly, another grid
reprojected (nearest classes and window, bilinear probabilities), several earlier scenes, and
windows no earlier job covers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from affine import Affine

from inference.change.align import same_grid
from inference.change.jobs import open_job
from tests.inference.change.conftest import CLASSES, run_cli
from tests.inference.change.jobs import SceneSpec, write_job

AC, FO = CLASSES.index("AnnualCrop"), CLASSES.index("Forest")
T0, T1 = "2023-06-01T10:00:00Z", "2024-06-01T10:00:00Z"


def _change(tmp_path: Path, before: Path, after: Path, *extra: str) -> list[dict[str, Any]]:
    code, out = run_cli(str(before), str(after), "--out", str(tmp_path / "c"), "--no-progress", "--no-report",
                        "--classes", "AnnualCrop", *extra)
    assert code == 0, out
    rows = pq.read_table(tmp_path / "c" / "changes.parquet").to_pylist()
    return sorted(rows, key=lambda r: (r["row_off"], r["col_off"]))


def test_same_grid_is_read_directly(make_grid_job: Any, tmp_path: Path) -> None:
    ok = np.full((2, 3), "ok", object)
    a = make_grid_job("a", ok, np.full((2, 3), FO), acquired=T0)
    b = make_grid_job("b", ok, np.array([[AC, FO, FO], [FO, FO, AC]]), acquired=T1)
    assert same_grid(open_job(a).scenes[0], open_job(b).scenes[0])
    rows = _change(tmp_path, a, b)
    assert [r["transition"] for r in rows] == ["appeared", "absent", "absent", "absent", "absent", "appeared"]
    assert all(r["alignment"] == "same_grid" and (r["row_off_before"], r["col_off_before"]) ==
               (r["row_off"], r["col_off"]) for r in rows)
    assert rows[0]["p_before"] == pytest.approx(0.9) and rows[0]["class_before"] == "Forest"


def test_a_shifted_grid_takes_the_nearest_window_and_interpolates_probabilities(make_grid_job: Any,
                                                                                tmp_path: Path) -> None:
    # earlier windows: 4 columns, classes Forest | Forest | AnnualCrop | AnnualCrop, p = 0.9
    # (three rows: GDAL interpolates bilinearly only where the source has a 2 x 2 neighbourhood)
    a = make_grid_job("a", np.full((3, 4), "ok", object), np.array([[FO, FO, AC, AC]] * 3), acquired=T0,
                      origin=(500_000.0, 5_350_000.0))
    # later grid shifted east by 200 m (< half a 640 m window) and by exactly half a window
    for shift, name in ((200.0, "b"), (320.0, "c")):
        b = make_grid_job(name, np.full((1, 3), "ok", object), np.full((1, 3), AC), acquired=T1,
                          origin=(500_000.0 + shift, 5_350_000.0 - 640))  # the middle row
        assert not same_grid(open_job(a).scenes[0], open_job(b).scenes[0])
        rows = _change(tmp_path / f"out-{name}", a, b)
        assert {r["alignment"] for r in rows} == {"reprojected"}
        if shift == 200.0:
            assert [r["col_off_before"] for r in rows] == [0, 64, 128]
            assert [r["class_before"] for r in rows] == ["Forest", "Forest", "AnnualCrop"]
            # later window 1's centre is 200 m into the boundary between Forest and AnnualCrop
            # windows: bilinear gives Forest's p 0.9 * (1 - 200/640) + 0.0111 * 200/640
            assert rows[1]["p_before"] == pytest.approx(0.9 * 440 / 640 + 0.1 / 9 * 200 / 640, abs=1e-3)
            assert rows[0]["p_before"] == pytest.approx(0.9, abs=1e-3)
            assert [r["transition"] for r in rows] == ["appeared", "appeared", "persisted"]
        else:  # on the boundary: probability 0.455 for either class, below the default 0.5
            assert rows[1]["p_before"] == pytest.approx((0.9 + 0.1 / 9) / 2, abs=1e-3)
            assert rows[1]["status"] == "uncertain" and rows[1]["reason"] == "before below --min-confidence"


def test_windows_no_earlier_scene_covers_are_not_assessed(make_grid_job: Any, tmp_path: Path) -> None:
    a = make_grid_job("a", np.full((2, 2), "ok", object), np.full((2, 2), FO), acquired=T0)
    b = make_grid_job("b", np.full((2, 4), "ok", object), np.full((2, 4), AC), acquired=T1)
    rows = _change(tmp_path, a, b)
    right = [r for r in rows if r["col_off"] >= 128]
    assert len(right) == 4 and all(r["status"] == "not_assessed" and r["reason"] == "before missing" and
                                   r["status_before"] == "missing" and r["item_before"] is None for r in right)
    assert all(r["transition"] == "appeared" for r in rows if r["col_off"] < 128)


def test_an_assessed_scene_wins_over_a_cloudy_one_where_earlier_scenes_overlap(tmp_path: Path) -> None:
    t = Affine(10, 0, 500_000, 0, -10, 5_350_000)
    k = len(CLASSES)
    probs = np.full((2, 2, k), 0.1 / (k - 1), np.float32)
    probs[..., FO] = 0.9
    cloudy = SceneSpec(str(tmp_path / "a1.tif"), "EPSG:32632", t, (128, 128), np.full((2, 2), "cloudy", object),
                       probs, acquired=T0, item_id="a1", sha256="1" * 64)
    clear = SceneSpec(str(tmp_path / "a2.tif"), "EPSG:32632", t, (128, 128), np.full((2, 2), "ok", object),
                      probs, acquired=T0, item_id="a2", sha256="2" * 64)
    a = write_job(tmp_path / "a", [cloudy, clear], CLASSES)
    probs_b = probs.copy()
    probs_b[..., FO], probs_b[..., AC] = probs[..., AC], 0.9
    later = SceneSpec(str(tmp_path / "b.tif"), "EPSG:32632", t, (128, 128), np.full((2, 2), "ok", object),
                      probs_b, acquired=T1, item_id="b", sha256="3" * 64)
    b = write_job(tmp_path / "b", [later], CLASSES)
    rows = _change(tmp_path, a, b)
    assert {(r["item_before"], r["status_before"], r["transition"]) for r in rows} == {("a2", "ok", "appeared")}
