"""`vision data check` on labelled scenes: every kind of unusable label reported with its
reason and a count; duplicates (same place, same date); the split's distances."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import rasterio
import shapely
from rasterio.windows import Window
from typer.testing import CliRunner

from tests.vision.labelled_helpers import pixel_box, pixel_point, to_crs, write_labels, write_scene
from vision.data.check import check_labelled
from vision.data.commands import data_app


def _bad_labels(tmp_path: Path) -> tuple[Path, Path, Path]:
    scene = write_scene(tmp_path / "scene.tif", 256, 256)
    bowtie = shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1), (0, 0)])
    far_point = pixel_point(-5000, 128)  # 50 km north of the scene
    geoms = [pixel_box(0, 0, 64, 64), bowtie, pixel_box(64, 64, 64, 64), far_point, pixel_box(200, 200, 10, 10)]
    geoms = [to_crs([g], "EPSG:4326")[0] if g is not bowtie else g for g in geoms]
    a = write_labels(tmp_path / "a.geojson", geoms, ["Forest", "Forest", "Wheat", "River", "River"], crs="EPSG:4326",
                     ids=["good", "bowtie", "wheat", "far", "tiny"], geometry_type="Unknown")
    # coordinates of the scene's zone 32N written as zone 33N: the file lies over no scene
    b = write_labels(tmp_path / "b.gpkg", [pixel_point(30, 30), pixel_point(90, 90)], ["Forest", "River"],
                     crs="EPSG:32633", ids=["b1", "b2"])
    return scene, a, b


def test_every_unusable_label_is_reported_with_its_reason_and_counted(tmp_path: Path) -> None:
    scene, a, b = _bad_labels(tmp_path)
    report = check_labelled([str(scene)], labels=[a, b], classes=["Forest", "River"], size=(32, 32), id_field="key",
                            progress=False)
    assert report.labelled == {"geometry": 1, "class": 1, "crs": 2, "outside": 1, "too-small": 1}
    issues = {i.path: (i.kind, i.message) for i in [*report.errors, *report.warnings]}
    assert issues["a.geojson#bowtie"][0] == "geometry" and "Self-intersection" in issues["a.geojson#bowtie"][1]
    kind, why = issues["a.geojson#wheat"]
    assert kind == "class" and "'Wheat' is not one of the 2 classes" in why
    assert issues["a.geojson#far"] == ("outside", "outside every scene (class River)")
    kind, why = issues["a.geojson#tiny"]
    assert kind == "too-small" and "less than 0.75 of one 32x32 window" in why
    for k in ("b1", "b2"):
        kind, why = issues[f"b.gpkg#{k}"]
        assert kind == "crs" and "none of the 2 labels of b.gpkg (CRS EPSG:32633) lies over any scene" in why
    assert not report.ok and {e.kind for e in report.errors} == {"geometry", "class", "crs"}
    assert report.class_counts == {"train": {"Forest": 4, "River": 0}}  # the good 64 px polygon: 4 windows


def test_the_cli_prints_reasons_and_counts_and_exits_1(tmp_path: Path) -> None:
    scene, a, b = _bad_labels(tmp_path)
    out = tmp_path / "report.json"
    res = CliRunner().invoke(data_app, ["check", str(scene), "--labels", str(a), "--labels", str(b), "--classes",
                                        "Forest,River", "--size", "32", "--id-field", "key", "--json", str(out),
                                        "--no-progress"], env={"COLUMNS": "200"})
    assert res.exit_code == 1, res.output
    assert "Errors (4: geometry 1, class 1, crs 2)" in res.output
    assert "outside 1" in res.output and "too-small 1" in res.output
    assert "Labels that gave no window: 6 (geometry 1, class 1, outside 1, too-small 1, crs 2)" in res.output
    assert "split not made: the windows fall in only 1 block(s) of 2000 m" in res.output
    saved = json.loads(out.read_text())
    assert saved["labelled"]["crs"] == 2 and not saved["ok"]


def _export_chip(scene: Path, folder: Path, window: tuple[int, int, int, int], date: str | None) -> Path:
    """A review-export-like manifest with one GeoTIFF chip cut from ``scene``."""
    r, c, h, w = window
    (folder / "chips").mkdir(parents=True, exist_ok=True)
    with rasterio.open(scene) as ds:
        profile = ds.profile | {"width": w, "height": h, "transform": ds.window_transform(Window(c, r, w, h))}
        arr = ds.read(window=Window(c, r, w, h))
    with rasterio.open(folder / "chips" / "c.tif", "w", **profile) as out:
        out.write(arr)
        if date:
            out.update_tags(TIFFTAG_DATETIME=date)
    with (folder / "manifest.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "group"], ["chips/c.tif", "Forest", "job1"]])
    return folder / "manifest.csv"


def test_the_same_place_on_the_same_date_is_a_duplicate(tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "scene.tif", 128, 128, tags={"TIFFTAG_DATETIME": "2021:06:01 10:00:00"})
    points = write_labels(tmp_path / "field.gpkg", [pixel_point(48, 48), pixel_point(16, 112)], ["Forest", "Forest"],
                          ids=["f1", "f2"])
    same = _export_chip(scene, tmp_path / "same", (32, 32, 32, 32), "2021:06:01 10:00:00")
    rep = check_labelled([str(scene)], labels=[points], manifests=[same], size=(32, 32), id_field="key",
                         progress=False)
    dup = [e for e in rep.errors if e.kind == "duplicate-place"]
    assert len(dup) == 1 and "overlap 100%" in dup[0].message and "the same date 2021-06-01" in dup[0].message
    other = _export_chip(scene, tmp_path / "other", (32, 32, 32, 32), "2022:01:01 10:00:00")
    rep = check_labelled([str(scene)], labels=[points], manifests=[other], size=(32, 32), progress=False)
    assert not [i for i in [*rep.errors, *rep.warnings] if "duplicate" in i.kind]  # a time series, not a copy
    undated = _export_chip(scene, tmp_path / "undated", (32, 32, 32, 32), None)
    rep = check_labelled([str(scene)], labels=[points], manifests=[undated], size=(32, 32), progress=False)
    assert [w.kind for w in rep.warnings if "duplicate" in w.kind] == ["possible-duplicate"]


def test_the_split_distances_are_reported(tmp_path: Path) -> None:
    write_scene(tmp_path / "scene.tif", 512, 512)
    boxes = [pixel_box(r, c, 32, 32) for r in range(0, 512, 32) for c in range(0, 512, 32)]
    labels = write_labels(tmp_path / "l.gpkg", boxes, ["Forest"] * len(boxes))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "data:\n  source: scenes\n  root: " + str(tmp_path) + "\n  scenes: [scene.tif]\n  labels: [l.gpkg]\n"
        "  split: {method: blocks, block_m: 640, val: 0.1, test: 0.1, seed: 0}\n"
        "model: {architecture: resnet18, name: x, input_size: [32, 32]}\n")
    rep = check_labelled([str(recipe)], progress=False)
    d = rep.spatial["distances"] if rep.spatial else {}
    assert d["train-test"]["min_m"] >= 640 and d["train-val"]["min_m"] >= 640
    assert rep.spatial is not None and rep.spatial["method"] == "blocks" and rep.spatial["buffer_dropped"] > 0
    assert labels.exists()
