"""vision.data.labels: label files in the three formats, any CRS; every refused feature named
with its reason (nothing dropped silently)."""

from __future__ import annotations

from pathlib import Path

import pytest
import shapely

from tests.vision.labelled_helpers import pixel_box, pixel_point, to_crs, write_labels
from vision.data.labels import LabelFileError, read_labels


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg", ".shp"])
def test_points_and_polygons_in_each_format(tmp_path: Path, suffix: str) -> None:
    geoms = [pixel_box(0, 0, 64, 64), pixel_box(64, 0, 64, 64)]
    crs = "EPSG:4326" if suffix == ".geojson" else "EPSG:3035"
    p = write_labels(tmp_path / f"l{suffix}", to_crs(geoms, crs), ["Forest", "River"], crs=crs, ids=["a", "b"])
    ls = read_labels(p, "class", id_field="key")
    assert [(f.id, f.label) for f in ls.features] == [("a", "Forest"), ("b", "River")]
    assert ls.crs.to_epsg() == int(crs.split(":")[1]) and not ls.problems
    back = to_crs([ls.features[0].geometry], "EPSG:32632", src=crs)[0]
    assert shapely.equals_exact(shapely.normalize(back), shapely.normalize(geoms[0]), tolerance=1e-3)


def test_every_unusable_feature_is_a_problem_with_its_reason(tmp_path: Path) -> None:
    bowtie = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10), (0, 0)])
    line = shapely.LineString([(0, 0), (100, 100)])
    geoms = [pixel_box(0, 0, 8, 8), bowtie, line, None, pixel_point(3, 3), pixel_point(4, 4), pixel_point(5, 5)]
    p = write_labels(tmp_path / "bad.gpkg", geoms, ["Forest", "Forest", "Forest", "Forest", "Nope", None, 3],
                     geometry_type="Unknown")
    ls = read_labels(p, "class", classes=["Forest", "3"])
    assert [f.index for f in ls.features] == [0, 6] and ls.features[1].label == "3"
    got = {q.feature: (q.kind, q.reason) for q in ls.problems}
    assert got["#1"][0] == "geometry" and "Self-intersection" in got["#1"][1]
    assert got["#2"][0] == "geometry" and "LineString" in got["#2"][1]
    assert got["#3"] == ("geometry", "no geometry (null or empty)")
    assert got["#4"][0] == "class" and "'Nope' is not one of the 2 classes" in got["#4"][1]
    assert got["#5"] == ("class", "no 'class' value")


def test_files_that_cannot_be_labels_are_refused(tmp_path: Path) -> None:
    csv = tmp_path / "labels.csv"
    csv.write_text("x,y,class\n1,2,Forest\n")
    with pytest.raises(LabelFileError, match="not a GeoJSON, GeoPackage or Shapefile"):
        read_labels(csv, "class")
    with pytest.raises(LabelFileError, match="not found"):
        read_labels(tmp_path / "missing.geojson", "class")
    p = write_labels(tmp_path / "l.geojson", [pixel_box(0, 0, 8, 8)], ["Forest"], crs="EPSG:4326")
    with pytest.raises(LabelFileError, match="no attribute 'crop'"):
        read_labels(p, "crop")
    nocrs = write_labels(tmp_path / "n.gpkg", [pixel_box(0, 0, 8, 8)], ["Forest"], crs="")
    with pytest.raises(LabelFileError, match="has no CRS"):
        read_labels(nocrs, "class")
