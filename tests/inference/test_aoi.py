"""inference.aoi: loading areas of interest (GeoJSON, GeoPackage, default id field, refused
features), the windows of a scene that meet them (checked window by window with shapely in the
AOI's own CRS), and the areas over no input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer

from inference.aoi import AoiError, AoiFeatureError, AoiOverlapError, AreasOfInterest
from inference.tiling import TileGrid
from vision import geo

UTM29 = "EPSG:32629"
#: The top-left 250 x 250 pixels of the 29RKH 100 m grid (windows reach past its edges).
T29 = Affine(100.0, 0.0, 199980.0, 0.0, -100.0, 2800020.0)
SIZE = 250
#: An irregular pentagon over part of the scene, drawn in UTM 29N, stored in EPSG:4326.
PENTAGON_UTM = shapely.Polygon([(203333.3, 2797111.1), (215123.4, 2795555.5), (221543.2, 2786012.3),
                                (210987.6, 2778456.7), (205432.1, 2783210.9)])
SYDNEY = shapely.box(150.9, -34.0, 151.3, -33.7)


def to_ll(geom: shapely.Geometry, crs: str = UTM29) -> shapely.Geometry:
    return geo.reproject(geom, crs, "EPSG:4326")


def write_geojson(path: Path, features: list[tuple[shapely.Geometry, dict[str, object]]]) -> Path:
    fc = {"type": "FeatureCollection",
          "features": [{"type": "Feature", "properties": props, "geometry": json.loads(shapely.to_geojson(g))}
                       for g, props in features]}
    path.write_text(json.dumps(fc))
    return path


def write_scene(path: Path, crs: str = UTM29, transform: Affine = T29, size: int = SIZE) -> Path:
    """A 3-band uint8 GeoTIFF (the planner's view of a scene: CRS, transform, size)."""
    rng = np.random.default_rng(0)
    with rasterio.open(path, "w", driver="GTiff", width=size, height=size, count=3, dtype="uint8",
                       crs=crs, transform=transform, tiled=True, blockxsize=64, blockysize=64) as dst:
        dst.write(rng.integers(0, 255, (3, size, size), dtype=np.uint8))
    return path


def scene_header(path: Path) -> tuple[str, Affine, int, int]:
    with rasterio.open(path) as src:
        return src.crs.to_string(), src.transform, src.height, src.width


def grid_windows(grid: TileGrid) -> np.ndarray:
    return np.array([grid.window(i, j) for i in range(grid.rows) for j in range(grid.cols)])


def brute_force_ids(aoi_file: AreasOfInterest, crs: str, t: Affine, height: int, width: int,
                    windows: np.ndarray) -> list[str | None]:
    """Per window, the first area whose interior it meets, tested in the AOI file's CRS: the
    window's outline (densified) taken there, clipped to the scene's footprint there."""
    tr = Transformer.from_crs(crs, aoi_file.crs, always_xy=True)
    fp = geo.footprint(crs, t, width, height)
    fp_there = shapely.transform(shapely.segmentize(fp, 100.0),
                                 lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    out: list[str | None] = []
    for r, c, h, w in windows.tolist():
        poly = shapely.Polygon([t * (c, r), t * (c + w, r), t * (c + w, r + h), t * (c, r + h)])
        there = shapely.transform(shapely.segmentize(poly, 100.0),
                                  lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        there = there.intersection(fp_there)
        out.append(next((a.id for a in aoi_file.aois if there.intersection(a.geometry).area > 0), None))
    return out


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_scene(tmp_path / "scene_29rkh.tif")


@pytest.fixture
def aoi_file(tmp_path: Path) -> Path:
    """A pentagon, a multipolygon (two parts, one reaching past the scene's east edge), and an
    area near Sydney, in EPSG:4326 with an ``id`` field."""
    multi = shapely.MultiPolygon([shapely.box(201111.1, 2776543.2, 204567.8, 2781234.5),
                                  shapely.box(219876.5, 2797654.3, 228765.4, 2799876.5)])
    return write_geojson(tmp_path / "aoi.geojson", [
        (to_ll(PENTAGON_UTM), {"id": "pentagon", "name": "P"}),
        (to_ll(multi), {"id": "two-fields", "name": "M"}),
        (SYDNEY, {"id": "sydney", "name": "S"}),
    ])


def test_windows_kept_are_exactly_those_meeting_an_area(scene: Path, aoi_file: Path) -> None:
    aois = AreasOfInterest.load(aoi_file)
    assert aois.id_field == "id" and aois.ids == ("pentagon", "two-fields", "sydney")
    crs, t, h, w = scene_header(scene)
    for grid in (TileGrid(h, w, (16, 16), (16, 16)), TileGrid(h, w, (16, 16), (8, 8))):
        windows = grid_windows(grid)
        sel = aois.select(crs, t, h, w, windows)
        expected = brute_force_ids(aois, crs, t, h, w, windows)
        assert sel.aoi_ids() == expected
        assert sel.keep.tolist() == [e is not None for e in expected]
        assert 0 < sel.n_kept < 0.75 * len(windows)
        assert {e for e in expected if e} == {"pentagon", "two-fields"}
        k = int(np.flatnonzero(sel.keep)[0])
        assert sel.aoi_id(k) == expected[k] and sel.aoi_id(int(np.flatnonzero(~sel.keep)[0])) is None


def test_the_first_area_in_file_order_wins(tmp_path: Path, scene: Path) -> None:
    inner = shapely.box(205000, 2785000, 212000, 2792000)
    outer = shapely.box(203000, 2783000, 214000, 2794000)
    p = write_geojson(tmp_path / "nested.geojson", [(to_ll(inner), {"id": "inner"}), (to_ll(outer), {"id": "outer"})])
    aois = AreasOfInterest.load(p)
    crs, t, h, w = scene_header(scene)
    windows = grid_windows(TileGrid(h, w, (16, 16), (16, 16)))
    ids = aois.select(crs, t, h, w, windows).aoi_ids()
    assert ids == brute_force_ids(aois, crs, t, h, w, windows)
    assert ids.count("inner") > 0 and ids.count("outer") > 0
    # the inner area took all its windows; both overlap the scene
    assert aois.unmatched() == [] and aois.no_overlap_error() is None


def test_an_area_in_another_hemisphere_is_named(scene: Path, aoi_file: Path) -> None:
    aois = AreasOfInterest.load(aoi_file)
    assert aois.unmatched() == ["pentagon", "two-fields", "sydney"]  # nothing selected yet
    crs, t, h, w = scene_header(scene)
    aois.select(crs, t, h, w, grid_windows(TileGrid(h, w, (16, 16), (16, 16))))
    assert aois.unmatched() == ["sydney"]
    err = aois.no_overlap_error()
    assert isinstance(err, AoiOverlapError) and err.ids == ("sydney",)
    assert str(err) == (f"--aoi {aoi_file}: 1 area overlaps no input: 'sydney' "
                        "(check the file's CRS and that the inputs cover them)")
    assert aois.to_manifest()["unmatched"] == ["sydney"]


def test_a_geopackage_copy_in_utm_selects_the_same_windows(tmp_path: Path, scene: Path, aoi_file: Path) -> None:
    src = AreasOfInterest.load(aoi_file)
    gpkg = tmp_path / "aoi.gpkg"
    geoms = np.array([shapely.to_wkb(geo.reproject(a.geometry, "EPSG:4326", UTM29)) for a in src.aois[:2]],
                     dtype=object)
    pyogrio.raw.write(gpkg, geoms, [np.array(["pentagon", "two-fields"], dtype=object)], ["name"],
                      driver="GPKG", crs=UTM29, geometry_type="MultiPolygon", layer="areas")
    aois = AreasOfInterest.load(gpkg)
    assert aois.id_field == "name" and aois.ids == ("pentagon", "two-fields") and aois.crs.to_epsg() == 32629
    crs, t, h, w = scene_header(scene)
    windows = grid_windows(TileGrid(h, w, (16, 16), (16, 16)))
    assert aois.select(crs, t, h, w, windows).aoi_ids() == src.select(crs, t, h, w, windows).aoi_ids()


def test_default_and_chosen_id_fields(tmp_path: Path) -> None:
    box = to_ll(shapely.box(203000, 2783000, 214000, 2794000))
    no_fields = write_geojson(tmp_path / "plain.geojson", [(box, {}), (box.buffer(-0.01), {})])
    assert AreasOfInterest.load(no_fields).ids == ("0", "1")
    named = write_geojson(tmp_path / "named.geojson", [(box, {"Name": "north", "code": 7})])
    assert AreasOfInterest.load(named).ids == ("north",)
    assert AreasOfInterest.load(named, id_field="code").ids == ("7",)
    with pytest.raises(AoiError, match=r"^--aoi .*named.geojson: no field 'district'"):
        AreasOfInterest.load(named, id_field="district")
    dup = write_geojson(tmp_path / "dup.geojson", [(box, {"id": "a"}), (box, {"id": "a"})])
    with pytest.raises(AoiError, match=r"more than one feature.*choose another with --aoi-field"):
        AreasOfInterest.load(dup)


def test_refused_features_are_one_line_errors_naming_file_and_feature(tmp_path: Path) -> None:
    bowtie = shapely.Polygon([(-11.9, 25.2), (-11.8, 25.3), (-11.8, 25.2), (-11.9, 25.3), (-11.9, 25.2)])
    ok = to_ll(PENTAGON_UTM)
    p = write_geojson(tmp_path / "bad.geojson", [(ok, {"id": "good"}), (bowtie, {"id": "bow-tie"}),
                                                 (shapely.LineString([(0, 0), (1, 1)]), {"id": "line"}),
                                                 (shapely.Polygon(), {"id": "empty"})])
    aois = AreasOfInterest.load(p)
    assert aois.ids == ("good",)
    by_feature = {e.feature: e for e in aois.problems}
    assert set(by_feature) == {"bow-tie", "line", "empty"}
    assert all(isinstance(e, AoiFeatureError) and "\n" not in str(e) for e in aois.problems)
    assert str(by_feature["bow-tie"]).startswith(f"--aoi {p}: feature bow-tie: invalid geometry: Self-intersection")
    assert "LineString, not a Polygon" in str(by_feature["line"])
    assert "no geometry" in str(by_feature["empty"])
    assert aois.to_manifest()["problems"] == [str(e) for e in aois.problems]
    only_bad = write_geojson(tmp_path / "only_bad.geojson", [(bowtie, {"id": "bow-tie"})])
    with pytest.raises(AoiError, match=r"only_bad.geojson: no usable area: feature bow-tie: invalid geometry"):
        AreasOfInterest.load(only_bad)


@pytest.mark.parametrize("name, content, message", [
    ("broken.geojson", "{not json", "unreadable AOI file"),
    ("empty.geojson", '{"type": "FeatureCollection", "features": []}', "no features"),
    ("scene.geojson", "II*\x00 a TIFF", "not a GeoJSON or GeoPackage"),
])
def test_unusable_files_are_one_line_errors(tmp_path: Path, name: str, content: str, message: str) -> None:
    (tmp_path / name).write_text(content)
    with pytest.raises(AoiError, match=message) as info:
        AreasOfInterest.load(tmp_path / name)
    assert str(info.value).startswith(f"--aoi {tmp_path / name}: ") and "\n" not in str(info.value)
    with pytest.raises(AoiError, match=r"absent.gpkg: AOI file not found"):
        AreasOfInterest.load(tmp_path / "absent.gpkg")


def test_a_geopackage_without_a_crs_is_refused(tmp_path: Path) -> None:
    gpkg = tmp_path / "nocrs.gpkg"
    pyogrio.raw.write(gpkg, np.array([shapely.to_wkb(PENTAGON_UTM)], dtype=object), [np.array(["a"], dtype=object)],
                      ["id"], driver="GPKG", geometry_type="Polygon")
    with pytest.raises(AoiError, match=r"^--aoi .*nocrs.gpkg: the layer has no CRS"):
        AreasOfInterest.load(gpkg)


def test_geographic_scene_and_rotated_transforms(tmp_path: Path) -> None:
    """An EPSG:4326 scene, and a scene whose transform is rotated: still checked window by window."""
    ll = write_scene(tmp_path / "ll.tif", "EPSG:4326", Affine(0.001, 0, -11.95, 0, -0.001, 25.30), 250)
    aoi = to_ll(PENTAGON_UTM)
    p = write_geojson(tmp_path / "a.geojson", [(aoi, {"id": "p"})])
    aois = AreasOfInterest.load(p)
    crs, t, h, w = scene_header(ll)
    windows = grid_windows(TileGrid(h, w, (16, 16), (12, 12)))
    sel = aois.select(crs, t, h, w, windows)
    assert sel.n_kept > 0 and sel.aoi_ids() == brute_force_ids(aois, crs, t, h, w, windows)
    rot = T29 * Affine.rotation(10)
    windows = grid_windows(TileGrid(SIZE, SIZE, (16, 16), (16, 16)))
    sel = aois.select(UTM29, rot, SIZE, SIZE, windows)
    assert sel.n_kept > 0 and sel.aoi_ids() == brute_force_ids(aois, UTM29, rot, SIZE, SIZE, windows)


def test_no_windows_and_no_overlap() -> None:
    aois = AreasOfInterest(path="x.geojson", crs=geo.WGS84, aois=(geo.Aoi("s", SYDNEY),))
    sel = aois.select(UTM29, T29, SIZE, SIZE, np.zeros((0, 4), dtype=int))
    assert len(sel) == 0 and sel.n_kept == 0
    sel = aois.select(UTM29, T29, SIZE, SIZE, [(0, 0, 16, 16)])
    assert sel.keep.tolist() == [False] and sel.aoi_ids() == [None]
    assert isinstance(aois.no_overlap_error(), AoiOverlapError)



def test_a_projected_aoi_file_over_a_world_lonlat_scene(tmp_path: Path) -> None:
    """A UTM 56S area (Sydney) over a lon/lat scene of the whole world is found (the world's
    outline has no coordinates in UTM 56S), and the UTM 29N tile does not overlap it."""
    syd = geo.reproject(SYDNEY, "EPSG:4326", "EPSG:32756")
    aois = AreasOfInterest(path="syd.gpkg", crs=geo.CRS.from_epsg(32756), aois=(geo.Aoi("syd", syd),))
    assert not aois.select(UTM29, T29, SIZE, SIZE, [(0, 0, 16, 16)]).keep.any()
    assert aois.unmatched() == ["syd"]
    world = Affine(0.1, 0, -180, 0, -0.1, 90)
    windows = grid_windows(TileGrid(1800, 3600, (16, 16), (16, 16)))
    sel = aois.select("EPSG:4326", world, 1800, 3600, windows)
    assert sel.n_kept == len(brute_force_ids(aois, "EPSG:4326", world, 1800, 3600, windows[sel.keep])) > 0
    assert aois.unmatched() == []


def test_lonlat_scenes_past_the_antimeridian_and_world_wide() -> None:
    """A lon/lat scene from 170° to 190° E meets an area at -175° (its 185°), and a world-wide
    lon/lat scene meets an area in the same CRS (both missed by `vision.geo.aoi_in_scene`)."""
    fiji = geo.Aoi("fiji", shapely.box(-176.0, -15.0, -174.0, -14.0))
    aois = AreasOfInterest(path="f.geojson", crs=geo.WGS84, aois=(fiji, geo.Aoi("sydney", SYDNEY)))
    t = Affine(0.01, 0, 170.0, 0, -0.01, -10.0)
    windows = grid_windows(TileGrid(1000, 2000, (50, 50), (50, 50)))
    sel = aois.select("EPSG:4326", t, 1000, 2000, windows)
    cols = windows[sel.keep][:, 1]
    # 184..186 E is columns 1400..1600; rows 400..500 (14..15 S)
    assert sel.n_kept == 4 * 2 and cols.min() == 1400 and cols.max() == 1550
    assert set(sel.aoi_ids()) == {"fiji", None} and aois.unmatched() == ["sydney"]
    world = Affine(0.1, 0, -180, 0, -0.1, 90)
    sel = aois.select("EPSG:4326", world, 1800, 3600, grid_windows(TileGrid(1800, 3600, (16, 16), (16, 16))))
    assert {"fiji", "sydney"} <= set(sel.aoi_ids()) and aois.unmatched() == []
