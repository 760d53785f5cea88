"""`vision data chips`: GeoTIFF chips keeping CRS and transform, the manifest, the skipped
list; `vision data check DIR` validates them (and catches a manifest that lies)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window
from typer.testing import CliRunner

from tests.vision.labelled_helpers import pixel_box, pixel_point, write_labels, write_scene
from vision.data.chips import MANIFEST_COLUMNS, safe_name
from vision.data.commands import data_app
from vision.data.spec import open_spec, resolve_spec

ENV = {"COLUMNS": "200"}


def _chips(tmp_path: Path, *extra: str) -> tuple[Path, Path, object]:
    scene = write_scene(tmp_path / "scene.tif", 512, 512, tags={"TIFFTAG_DATETIME": "2021:06:01 10:00:00"})
    boxes = [pixel_box(r, c, 32, 32) for r in range(0, 512, 64) for c in range(0, 512, 64)]
    labels = write_labels(tmp_path / "l.gpkg", [*boxes, pixel_point(-100, -100)],
                          ["Forest" if k % 2 else "River" for k in range(len(boxes))] + ["River"])
    out = tmp_path / "chips"
    res = CliRunner().invoke(data_app, ["chips", str(scene), "--labels", str(labels), "--class-field", "class",
                                        "--size", "32", "--block-m", "640", "--out", str(out), "--no-progress",
                                        *extra], env=ENV)
    return scene, out, res


def test_chips_keep_their_place_and_the_check_passes(tmp_path: Path) -> None:
    scene, out, res = _chips(tmp_path)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    assert list(rows[0]) == list(MANIFEST_COLUMNS)
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    with rasterio.open(scene) as src:
        for r in rows[:10]:
            with rasterio.open(out / r["path"]) as ds:
                row, col = int(r["row_off"]), int(r["col_off"])
                assert ds.crs == src.crs and ds.transform == src.window_transform(Window(col, row, 32, 32))
                assert np.array_equal(ds.read(), src.read(window=Window(col, row, 32, 32)))
                assert ds.descriptions == ("B04", "B03", "B02")
                assert ds.tags()["TIFFTAG_DATETIME"] == "2021:06:01 10:00:00"
                assert (float(r["minx"]), float(r["maxy"])) == (ds.bounds.left, ds.bounds.top)
            assert r["acquired"] == "2021-06-01" and r["scene"] == "scene" and r["crs"] == "EPSG:32632"
    skipped = list(csv.DictReader((out / "skipped.csv").open()))
    assert any(s["what"] == "label" and s["kind"] == "outside" for s in skipped)
    assert all(s["reason"] for s in skipped)
    lineage = json.loads((out / "chips.json").read_text())["labelled"]
    assert lineage["split"]["distances"]["train-test"]["min_m"] >= 640
    # a chip folder is a data spec of its own layout, read as a manifest
    assert resolve_spec(str(out)).layout == "chips"
    assert len(open_spec(f"{out}:test")) == sum(r["split"] == "test" for r in rows)
    check = CliRunner().invoke(data_app, ["check", str(out), "--no-progress"], env=ENV)
    assert check.exit_code == 0, check.output
    assert "train-test: smallest distance" in check.output and "outside 1" in check.output


def test_a_manifest_that_lies_about_a_chip_is_an_error(tmp_path: Path) -> None:
    _, out, res = _chips(tmp_path)
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((out / "manifest.csv").open()))
    rows[0]["minx"] = str(float(rows[0]["minx"]) + 100)
    with (out / "manifest.csv").open("w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=list(MANIFEST_COLUMNS))
        wr.writeheader()
        wr.writerows(rows)
    check = CliRunner().invoke(data_app, ["check", str(out), "--no-progress"], env=ENV)
    assert check.exit_code == 1 and "place" in check.output and "are not the row's" in check.output


def test_chips_refuse_to_overwrite_and_name_files_safely(tmp_path: Path) -> None:
    _, out, res = _chips(tmp_path)
    assert res.exit_code == 0
    again = CliRunner().invoke(data_app, ["chips", str(tmp_path / "scene.tif"), "--labels", str(tmp_path / "l.gpkg"),
                                          "--out", str(out), "--no-progress"], env=ENV)
    assert again.exit_code != 0 and "--overwrite" in str(again.exception or again.output)
    assert safe_name("../../etc/passwd") == "etc_passwd" and safe_name("[/x] a b") == "x_a_b" and safe_name("..") == "x"
