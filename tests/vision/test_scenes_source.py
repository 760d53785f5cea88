"""vision.data.labelled / scenes / scene_source: labelled scenes as training windows.

Scenes and labels are written at test time; the EuroSAT fixture test builds real mosaics of
real chips with bench/make_labelled_scenes.py and compares every window with its chip.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from tests.vision.labelled_helpers import (
    PIXEL,
    X0,
    Y0,
    pixel_box,
    pixel_point,
    to_crs,
    write_labels,
    write_scene,
    write_scl_item,
)
from vision.data.labelled import LabelledSpec, build
from vision.data.sampling import SamplingOptions
from vision.data.scene_source import labelled_facts
from vision.data.splits import SplitRule
from vision.errors import ConfigError
from vision.radiometry import Radiometry
from vision.scene import Scene

REPO = Path(__file__).resolve().parents[2]
OPTS = SamplingOptions(size=(32, 32))
ALL_TRAIN = SplitRule("random", val=0.0, test=0.0)  # these scenes are too small to split


def _spec(tmp: Path, scenes: list[str], labels: list[str], **kw: object) -> LabelledSpec:
    base = dict(kind="scenes", base=tmp, scenes=((None, tuple(scenes)),), labels=tuple(labels), class_field="class",
                id_field="key", sampling=OPTS, split=ALL_TRAIN)
    base.update(kw)
    return LabelledSpec(**base)  # type: ignore[arg-type]


def _scene_pixels(path: Path, row: int, col: int, size: int = 32) -> np.ndarray:
    with rasterio.open(path) as ds:
        return np.moveaxis(ds.read(window=Window(col, row, size, size)), 0, -1)


def test_windows_are_the_scene_pixels_from_polygons_and_points_in_other_crss(tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "s.tif", 128, 128)
    boxes = [pixel_box(0, 0, 32, 32), pixel_box(32, 64, 32, 32), pixel_box(96, 96, 32, 32)]
    write_labels(tmp_path / "poly.geojson", to_crs(boxes, "EPSG:4326"), ["A", "B", "A"], crs="EPSG:4326",
                 ids=["p0", "p1", "p2"])
    points = [pixel_point(16, 16), pixel_point(48, 80), pixel_point(112, 112)]
    write_labels(tmp_path / "pts.gpkg", to_crs(points, "EPSG:3035"), ["A", "B", "A"], crs="EPSG:3035",
                 ids=["q0", "q1", "q2"])
    for labels in ("poly.geojson", "pts.gpkg"):
        data = build(_spec(tmp_path, ["s.tif"], [labels]), quiet=True, reuse=False)
        got = sorted((s.row, s.col, s.label) for s in data.samples)
        assert got == [(0, 0, "A"), (32, 64, "B"), (96, 96, "A")], labels
        for k, s in enumerate(data.samples):
            assert np.array_equal(data.read_window(k), _scene_pixels(scene, s.row, s.col))
        assert data.gsd_m == 10.0 and data.bands == ["B04", "B03", "B02"]
        assert data.radiometry.kind == "display" and data.radiometry.bits == 8
        assert any("8-bit data taken as a display composite" in w for w in data.warnings)


def test_nodata_and_edge_windows_are_skipped_and_counted(tmp_path: Path) -> None:
    write_scene(tmp_path / "s.tif", 96, 96, nodata=0, fill={(32, 32, 32, 32): 0})
    geoms = [pixel_point(16, 16), pixel_point(48, 48), pixel_point(90, 90)]
    write_labels(tmp_path / "l.gpkg", geoms, ["A", "A", "A"], ids=["ok", "hole", "edge"])
    data = build(_spec(tmp_path, ["s.tif"], ["l.gpkg"]), quiet=True, reuse=False)
    assert [s.feature_id for s in data.samples] == ["ok"]
    assert sorted((w.kind, w.candidate.feature_id) for w in data.window_skips) == [("edge", "edge"), ("nodata", "hole")]
    problems = {q.feature: (q.kind, q.reason) for q in data.label_problems}
    assert problems["hole"] == ("windows-skipped", "all its windows were skipped: nodata 1")
    assert problems["edge"] == ("windows-skipped", "all its windows were skipped: edge 1")
    lin = data.lineage()["labelled"]
    assert lin["windows"]["skipped"] == {"edge": 1, "nodata": 1}
    assert lin["skipped_labels"]["by_kind"] == {"windows-skipped": 2}


def test_cloudy_windows_are_skipped_by_the_scene_classification_layer(tmp_path: Path) -> None:
    item = write_scl_item(tmp_path / "item", cloudy=(0, 0, 32, 32))  # bands from its visual asset
    geoms = [pixel_point(16, 16), pixel_point(16, 80)]
    write_labels(tmp_path / "l.geojson", to_crs(geoms, "EPSG:4326"), ["A", "A"], crs="EPSG:4326", ids=["c", "clear"])
    data = build(_spec(tmp_path, [str(item)], ["l.geojson"]), quiet=True, reuse=False)
    assert data.cloud_methods == {"S2X_TEST": "scl"}
    assert [s.feature_id for s in data.samples] == ["clear"]
    (skip,) = data.window_skips
    assert skip.kind == "cloudy" and "cloud fraction 1.00 > max_cloud 0.5" in skip.reason
    assert data.columns()["acquired"] == ["2020-02-19"] and data.columns()["scene"] == ["S2X_TEST"]
    kept = build(_spec(tmp_path, [str(item)], ["l.geojson"], sampling=SamplingOptions(size=(32, 32), max_cloud=1.0)),
                 quiet=True, reuse=False)
    assert len(kept.samples) == 2


def test_pixels_of_unknown_meaning_need_data_radiometry(tmp_path: Path) -> None:
    write_scene(tmp_path / "s.tif", 64, 64, dtype="uint16", descriptions=None)
    write_labels(tmp_path / "l.gpkg", [pixel_point(32, 32)], ["A"])
    with pytest.raises(ConfigError, match="set data.radiometry"):
        build(_spec(tmp_path, ["s.tif"], ["l.gpkg"], id_field=None), quiet=True, reuse=False)
    declared = Radiometry("reflectance", bits=16, level="L2A", scale=1e-4, offset=0.0, source="recipe")
    data = build(_spec(tmp_path, ["s.tif"], ["l.gpkg"], id_field=None, radiometry=declared), quiet=True, reuse=False)
    ws = data.source(data.splits[0])
    assert ws.radiometry == declared and ws.gsd_m == 10.0
    assert any("(data.radiometry)" in w for w in data.warnings)


def test_a_scene_of_another_kind_is_refused_and_listed(tmp_path: Path) -> None:
    write_scene(tmp_path / "a.tif", 64, 64)
    write_scene(tmp_path / "b.tif", 64, 64, x0=X0 + 64 * PIXEL, dtype="uint16", descriptions=None,
                tags={})  # uint16 undeclared: unknown, reconciled against the 8-bit display of a.tif
    write_labels(tmp_path / "l.gpkg", [pixel_point(32, 32), pixel_point(32, 96)], ["A", "A"], ids=["a", "b"])
    data = build(_spec(tmp_path, ["a.tif", "b.tif"], ["l.gpkg"]), quiet=True, reuse=False)
    assert [s.feature_id for s in data.samples] == ["a"]
    (refused,) = data.scene_problems
    assert refused.path.endswith("b.tif") and "not declared" in refused.reason and "8-bit display" in refused.reason
    assert [(q.feature, q.kind) for q in data.label_problems] == [("b", "outside")]
    # a reflectance scene (declared by its scale tags) against 8-bit display data: refused too
    with rasterio.open(tmp_path / "b.tif", "r+") as ds:
        ds.scales, ds.offsets = (1e-4,) * 3, (0.0,) * 3
    data = build(_spec(tmp_path, ["a.tif", "b.tif"], ["l.gpkg"]), quiet=True, reuse=False)
    (refused,) = data.scene_problems
    assert "the model was trained on 8-bit display composite" in refused.reason


def test_scenes_at_different_gsds_need_gsd_m(tmp_path: Path) -> None:
    write_scene(tmp_path / "a.tif", 128, 128)
    write_scene(tmp_path / "b.tif", 32, 32, pixel=20.0, x0=X0 + 2000)
    write_labels(tmp_path / "l.gpkg", [pixel_point(32, 32)], ["A"])
    with pytest.raises(ConfigError, match="set data.gsd_m"):
        build(_spec(tmp_path, ["a.tif", "b.tif"], ["l.gpkg"], id_field=None), quiet=True, reuse=False)
    data = build(_spec(tmp_path, ["a.tif", "b.tif"], ["l.gpkg"], id_field=None, gsd_m=20.0), quiet=True, reuse=False)
    assert data.gsd_m == 20.0 and {s.gsd_m for s in data.scenes} == {20.0}
    assert data.scenes[0].grid.width == 64 and [(s.row, s.col) for s in data.samples] == [(0, 0)]  # a.tif at 20 m


def test_epochs_after_the_first_read_no_raster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_scene(tmp_path / "s.tif", 128, 128)
    write_labels(tmp_path / "l.gpkg", [pixel_box(0, 0, 128, 128)], ["A"])
    data = build(_spec(tmp_path, ["s.tif"], ["l.gpkg"], id_field=None), quiet=True, reuse=False)
    reads: list[object] = []
    real = Scene.read
    monkeypatch.setattr(Scene, "read", lambda self, w: reads.append(w) or real(self, w))
    src = data.source(None)
    first = [src.read(i).copy() for i in range(len(src))]
    again = [src.read(i) for i in range(len(src))]
    assert len(src) == 16 and reads == [] and data.raster_reads == 0
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    # with no room to keep them, every access is a windowed read of the scene (same pixels)
    small = build(_spec(tmp_path, ["s.tif"], ["l.gpkg"], id_field=None, cache_mb=0), quiet=True, reuse=False)
    src0 = small.source(None)
    reads.clear()
    assert np.array_equal(src0.read(3), first[3]) and small.raster_reads == 1 and len(reads) == 1
    small.close()


def test_groups_come_with_the_windows(tmp_path: Path) -> None:
    write_scene(tmp_path / "s.tif", 64, 64, tags={"TIFFTAG_DATETIME": "2021:06:01 10:30:00"})
    write_labels(tmp_path / "l.gpkg", [pixel_point(16, 16), pixel_point(48, 48)], ["A", "B"])
    write_labels(tmp_path / "aoi.geojson", to_crs([pixel_box(0, 0, 24, 24)], "EPSG:4326"), ["north"],
                 crs="EPSG:4326")
    data = build(_spec(tmp_path, ["s.tif"], ["l.gpkg"], id_field=None, aoi="aoi.geojson"), quiet=True, reuse=False)
    cols = data.columns()
    assert cols["scene"] == ["s", "s"] and cols["acquired"] == ["2021-06-01", "2021-06-01"]
    assert cols["aoi"] == ["0", "(none)"] and cols["label_source"] == ["l.gpkg", "l.gpkg"]
    src = data.source(data.splits[0])
    assert labelled_facts(src.limit(1)) is src  # found through a subset wrapper


def test_a_review_export_merges_with_field_points(tmp_path: Path) -> None:
    scene = write_scene(tmp_path / "s.tif", 128, 128)
    write_labels(tmp_path / "field.gpkg", [pixel_point(16, 16)], ["A"], ids=["f0"])
    # the review service's dataset export: manifest.csv (path,label,group) + GeoTIFF chips
    export = tmp_path / "export"
    (export / "chips").mkdir(parents=True)
    with rasterio.open(scene) as ds:
        profile = ds.profile | {"width": 32, "height": 32, "transform": ds.window_transform(Window(64, 64, 32, 32))}
        arr = ds.read(window=Window(64, 64, 32, 32))
    with rasterio.open(export / "chips" / "item1.tif", "w", **profile) as out:
        out.write(arr)
    with (export / "manifest.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["path", "label", "group"], ["chips/item1.tif", "B", "job7"]])
    data = build(_spec(tmp_path, ["s.tif"], ["field.gpkg"], manifests=("export/manifest.csv",)),
                 quiet=True, reuse=False)
    got = {(s.label, s.source, s.group) for s in data.samples}
    assert got == {("A", "field.gpkg", None), ("B", "manifest:manifest.csv", "job7")}
    chip = next(k for k, s in enumerate(data.samples) if s.label == "B")
    assert np.array_equal(data.read_window(chip), np.moveaxis(arr, 0, -1))
    assert data.ref_path(chip) == str((export / "chips" / "item1.tif").resolve())


@pytest.mark.data
def test_the_eurosat_fixture_windows_are_the_chips(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "fixture"
    run = subprocess.run([sys.executable, str(REPO / "bench" / "make_labelled_scenes.py"), "--out", str(out),
                          "--limit", "40", "--verify"], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [ln for ln in run.stdout.splitlines() if "max abs difference" in ln]
    assert len(lines) == 2  # polygons (GeoJSON, EPSG:4326) and points (GeoPackage, EPSG:3035)
    for ln in lines:
        assert "120 windows (train 40, val 40, test 40)" in ln and "from the shard chips 0," in ln, ln
        assert "chips without a window 0" in ln and "labels skipped 0" in ln
    with rasterio.open(out / "train.tif") as ds:
        assert ds.crs.to_epsg() == 32632 and ds.res == (10.0, 10.0) and ds.descriptions == ("B04", "B03", "B02")
    # 40 chips: an 8 x 5 grid, none empty; 39 leave a masked cell, which is never sampled
    assert Y0 == 5_600_000.0
