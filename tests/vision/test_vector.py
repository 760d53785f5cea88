"""vision.vector: the one check of a vector file before GDAL opens it (labels and AOIs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import shapely

from tests.vision.labelled_helpers import write_labels
from vision.errors import VisionError
from vision.vector import layer_crs, vector_file


class _Refused(VisionError):
    pass


ALL = ("GeoJSON", "GPKG", "ESRI Shapefile")


def _write(path: Path) -> Path:
    """A one-polygon file, its format from the suffix (`write_labels`)."""
    return write_labels(path, [shapely.box(0, 0, 10, 10)], ["Forest"], crs="EPSG:32629")


def test_each_format_is_told_by_its_first_bytes_not_its_name(tmp_path: Path) -> None:
    gpkg = _write(tmp_path / "a.gpkg")
    shp = _write(tmp_path / "a.shp")
    geojson = _write(tmp_path / "a.geojson")
    for p, driver in ((gpkg, "GPKG"), (shp, "ESRI Shapefile"), (geojson, "GeoJSON")):
        assert vector_file(p, drivers=ALL, what="label file", max_bytes=1 << 20, error=_Refused) == (p, driver)
    renamed = tmp_path / "really_a_geopackage.geojson"
    renamed.write_bytes(gpkg.read_bytes())
    assert vector_file(renamed, drivers=ALL, what="label file", max_bytes=1 << 20, error=_Refused)[1] == "GPKG"
    # A shapefile's magic in a file not named .shp is not a shapefile (GDAL would want its .dbf).
    odd = tmp_path / "a.dat"
    odd.write_bytes(shp.read_bytes())
    with pytest.raises(_Refused, match="not a GeoJSON, GeoPackage or Shapefile"):
        vector_file(odd, drivers=ALL, what="label file", max_bytes=1 << 20, error=_Refused)


@pytest.mark.parametrize("content", ["<VRTDataset><OGRVRTLayer/></VRTDataset>", "x,y\n1,2\n", ""])
def test_files_gdal_must_never_open_are_refused(tmp_path: Path, content: str) -> None:
    p = tmp_path / "labels.geojson"
    p.write_text(content)
    with pytest.raises(_Refused, match=rf"{p}: not a GeoJSON or GeoPackage AOI file"):
        vector_file(p, drivers=("GeoJSON", "GPKG"), what="AOI file", max_bytes=1 << 20, error=_Refused)


def test_missing_folders_and_oversized_files(tmp_path: Path) -> None:
    kw = {"drivers": ALL, "what": "label file", "error": _Refused}
    with pytest.raises(_Refused, match="label file not found"):
        vector_file(tmp_path / "absent.gpkg", max_bytes=1 << 20, **kw)
    with pytest.raises(_Refused, match="label file not found"):
        vector_file(tmp_path, max_bytes=1 << 20, **kw)
    big = _write(tmp_path / "big.gpkg")
    with pytest.raises(_Refused, match="label file larger than 0 MiB"):
        vector_file(big, max_bytes=1024, **kw)


def test_a_layers_crs_geojson_defaults_to_wgs84_others_must_declare_it(tmp_path: Path) -> None:
    p = tmp_path / "x"
    assert layer_crs(p, {"crs": None}, "GeoJSON", hint="h", error=_Refused).to_epsg() == 4326
    assert layer_crs(p, {"crs": "EPSG:32629"}, "GPKG", hint="h", error=_Refused).to_epsg() == 32629
    with pytest.raises(_Refused, match=r"the layer has no CRS; set one \(e.g. EPSG:4326\)"):
        layer_crs(p, {"crs": ""}, "GPKG", hint="e.g. EPSG:4326", error=_Refused)
    with pytest.raises(_Refused, match="unusable CRS 'EPSG:999999'"):
        layer_crs(p, {"crs": "EPSG:999999"}, "GeoJSON", hint="h", error=_Refused)
