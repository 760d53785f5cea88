"""vision.stac: STAC items, collections and catalogs from local files; a model's bands matched
to assets, with the reasons recorded (real data: s2-l2a-29RKH, stac-eurosat100)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from vision.bands import EUROSAT_MS_BANDS
from vision.errors import BandMismatchError, InputError
from vision.radiometry import EUROSAT_MS, EUROSAT_RGB, Radiometry, RadiometryMismatch
from vision.stac import StacError, band_id, plan_item, read_stac

ITEM = "S2A_29RKH_20200219_0_L2A.json"
L2A = Radiometry("reflectance", bits=16, level="L2A", scale=1e-4, offset=0.0, source="an L2A model")
MS_NO_B10 = [b for b in EUROSAT_MS_BANDS if b != "B10"]


def _item_dict(data_dir: Path) -> dict[str, Any]:
    return json.loads((data_dir / "s2-l2a-29RKH" / ITEM).read_text())


def _write_item(tmp: Path, d: dict[str, Any], data_dir: Path, absolute: bool = True) -> Path:
    """A copy of the 29RKH item in ``tmp`` whose hrefs point at the real files."""
    for a in d["assets"].values():
        if a["href"].startswith("./"):
            real = data_dir / "s2-l2a-29RKH" / a["href"][2:]
            a["href"] = str(real) if absolute else os.path.relpath(real, tmp)
    d["links"] = [lk for lk in d["links"] if lk["rel"] != "self"]
    p = tmp / "item.json"
    p.write_text(json.dumps(d))
    return p


def test_the_29rkh_item_is_read(data_dir: Path) -> None:
    read = read_stac(data_dir / "s2-l2a-29RKH" / ITEM)
    assert read.errors == [] and len(read.items) == 1
    item = read.items[0]
    assert item.id == "S2A_29RKH_20200219_0_L2A"
    assert item.acquired == datetime(2020, 2, 19, 11, 34, 25, 405000, tzinfo=UTC)
    assert item.scl is not None and item.scl.key == "scl" and item.scl.path.endswith("SCL.tif")
    assert item.assets["red"].path == str((data_dir / "s2-l2a-29RKH" / "B04.tif").resolve())
    assert [b.band_id for b in item.assets["visual"].bands] == ["B04", "B03", "B02"]
    assert item.assets["nir08"].bands[0].band_id == "B8A" and item.assets["red"].bands_from == "asset"


def test_the_rgb_model_takes_the_visual_asset_and_refuses_the_reflectance_ones(data_dir: Path) -> None:
    item = read_stac(data_dir / "s2-l2a-29RKH" / ITEM).items[0]
    plan = plan_item(item, ["B04", "B03", "B02"], EUROSAT_RGB)
    assert [(s.asset, s.index) for s in plan.sources] == [("visual", 0), ("visual", 1), ("visual", 2)]
    assert all(s.path.endswith("TCI.tif") for s in plan.sources)
    for s, refused in zip(plan.sources, ("red", "green", "blue"), strict=True):
        assert "8-bit display composite fits the model" in s.reason
        assert [a for a, _ in s.refused] == [refused]
        assert "L2A surface reflectance" in s.refused[0][1] and "'visual' asset" in s.refused[0][1]
    assert plan.harmonisation.identity and plan.mismatch is None and plan.warnings == ()
    manifest = json.loads(json.dumps(plan.to_manifest()))
    assert manifest["bands"][0]["asset"] == "visual" and manifest["bands"][0]["refused"][0]["asset"] == "red"
    assert manifest["acquired"] == "2020-02-19T11:34:25.405000+00:00"


def test_an_l1c_model_on_the_l2a_item_is_refused_naming_both(data_dir: Path) -> None:
    item = read_stac(data_dir / "s2-l2a-29RKH" / ITEM).items[0]
    with pytest.raises(RadiometryMismatch, match=r"trained on L1C .* the input is L2A") as e:
        plan_item(item, MS_NO_B10, EUROSAT_MS)
    assert "--allow-radiometry-mismatch" in str(e.value)
    plan = plan_item(item, MS_NO_B10, EUROSAT_MS, allow_mismatch=True)
    assert plan.mismatch is not None and "L1C" in plan.mismatch and "L2A" in plan.mismatch
    assert plan.to_manifest()["radiometry_mismatch"] == plan.mismatch
    # B10 is not in L2A at all: that is a band mismatch, not a radiometric one
    with pytest.raises(BandMismatchError, match=r"\['B10'\]"):
        plan_item(item, list(EUROSAT_MS_BANDS), EUROSAT_MS)


def test_per_band_assets_by_sentinel2_names(data_dir: Path) -> None:
    item = read_stac(data_dir / "s2-l2a-29RKH" / ITEM).items[0]
    plan = plan_item(item, MS_NO_B10, L2A)
    assert {s.band: s.asset for s in plan.sources} == {
        "B01": "coastal", "B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1", "B06": "rededge2",
        "B07": "rededge3", "B08": "nir", "B09": "nir09", "B11": "swir16", "B12": "swir22", "B8A": "nir08"}
    assert all(s.index == 0 and s.nodata == 0 for s in plan.sources)
    # the reflectance assets are preferred over the visual one only because the model says so
    assert [s.asset for s in plan_item(item, ["red", "nir08"], L2A).sources] == ["red", "nir08"]


def test_band_ids_of_the_names_catalogs_use() -> None:
    assert band_id("B08A") == "B8A" and band_id("b8a") == "B8A" and band_id("nir08") == "B8A"
    assert band_id("rededge1") == "B05" and band_id(None, "red") == "B04" and band_id("B4") == "B04"
    assert band_id("ndvi") == "ndvi" and band_id(None, "rededge") is None
    assert band_id("B5", "nir") == "B08" and band_id("B05", "rededge") == "B05"  # Landsat B5 is NIR


def test_stac_eurosat100_catalog(data_dir: Path) -> None:
    cat = data_dir / "stac-eurosat100" / "stac" / "subset" / "catalog.json"
    read = read_stac(cat)
    assert read.errors == [] and len(read.items) == 83
    assert len({i.id for i in read.items}) == 83
    item = read.items[0]
    raster = item.assets["raster"]
    assert "thumbnail" not in item.assets  # a preview is not data
    assert raster.bands_from == "item" and [b.band_id for b in raster.bands][8] == "B8A"  # declared as "B08A"
    plan = plan_item(item, list(EUROSAT_MS_BANDS), EUROSAT_MS)
    assert {s.asset for s in plan.sources} == {"raster"}
    assert plan.sources[-1].band == "B8A" and plan.sources[-1].index == 8  # as the catalog declares it
    text = " ".join(plan.warnings)
    assert "B10" in text and "assumed 0.0001" in text and "band order taken from the item" in text
    assert plan.item_id == item.id and plan.acquired is not None
    # the RGB model refuses these 16-bit chips
    with pytest.raises(RadiometryMismatch, match="8-bit display"):
        plan_item(item, ["B04", "B03", "B02"], EUROSAT_RGB)


def test_a_collection_gives_its_own_items(data_dir: Path) -> None:
    col = data_dir / "stac-eurosat100" / "stac" / "subset" / "test" / "collection.json"
    read = read_stac(col)
    assert read.items and all(i.collection == "EuroSAT-subset-test" for i in read.items)
    assert len(read.items) == len(list(col.parent.glob("item-*.json")))


def test_relative_and_absolute_hrefs(data_dir: Path, tmp_path: Path) -> None:
    for absolute in (True, False):
        p = _write_item(tmp_path, _item_dict(data_dir), data_dir, absolute)
        item = read_stac(p).items[0]
        assert item.assets["red"].path == str((data_dir / "s2-l2a-29RKH" / "B04.tif").resolve())


def test_a_symlinked_asset_resolves_to_the_real_file(data_dir: Path, tmp_path: Path) -> None:
    d = _item_dict(data_dir)
    link = tmp_path / "linked.tif"
    link.symlink_to(data_dir / "s2-l2a-29RKH" / "TCI.tif")
    p = _write_item(tmp_path, d, data_dir)
    d = json.loads(p.read_text())
    d["assets"]["visual"]["href"] = "./linked.tif"
    p.write_text(json.dumps(d))
    item = read_stac(p).items[0]
    assert item.assets["visual"].path == str((data_dir / "s2-l2a-29RKH" / "TCI.tif").resolve())
    # confined to roots, the same link is refused: it leaves the allowed folder
    item = read_stac(p, roots=[tmp_path]).items[0]
    assert item.assets["visual"].path is None and "outside the allowed folders" in str(item.assets["visual"].error)


def test_remote_and_missing_asset_hrefs_are_clear_errors_naming_the_asset(data_dir: Path, tmp_path: Path) -> None:
    d = _item_dict(data_dir)
    p = _write_item(tmp_path, d, data_dir)
    d = json.loads(p.read_text())
    d["assets"]["visual"]["href"] = "https://example.com/TCI.tif"
    d["assets"]["red"]["href"] = "https://example.com/B04.tif"
    d["assets"]["nir08"]["href"] = str(tmp_path / "gone.tif")
    p.write_text(json.dumps(d))
    item = read_stac(p).items[0]
    with pytest.raises(StacError, match=r"asset 'visual' .* https://example.com/TCI.tif is remote; jobs run offline"):
        plan_item(item, ["B04", "B03", "B02"], EUROSAT_RGB)
    with pytest.raises(StacError, match=r"asset 'nir08' .* file not found: .*gone.tif"):
        plan_item(item, ["B8A"], L2A)
    # another band of the same item is unaffected
    assert plan_item(item, ["B03"], L2A).sources[0].asset == "green"
    assert issubclass(StacError, InputError)


def test_a_remote_stac_file_or_link_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StacError, match="remote"):
        read_stac("https://earth-search.aws.element84.com/v1/collections/sentinel-2-l2a")
    cat = {"type": "Catalog", "stac_version": "1.0.0", "id": "c", "description": "d", "links": [
        {"rel": "child", "href": "https://example.com/collection.json"},
        {"rel": "child", "href": "./missing/collection.json"},
        {"rel": "child", "href": "./catalog.json"},  # a cycle: read once
    ]}
    (tmp_path / "catalog.json").write_text(json.dumps(cat))
    read = read_stac(tmp_path / "catalog.json")
    assert read.items == [] and len(read.errors) == 2
    reasons = " ".join(r for _, r in read.errors)
    assert "https://example.com/collection.json is remote" in reasons and "file not found" in reasons


def test_not_stac_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(StacError, match="not a STAC Item"):
        read_stac(tmp_path / "a.json")
    (tmp_path / "b.json").write_text("{nope")
    with pytest.raises(StacError, match="not JSON"):
        read_stac(tmp_path / "b.json")
    with pytest.raises(StacError, match="file not found"):
        read_stac(tmp_path / "absent.json")


def test_bands_the_item_does_not_have(data_dir: Path) -> None:
    item = read_stac(data_dir / "s2-l2a-29RKH" / ITEM).items[0]
    with pytest.raises(BandMismatchError, match=r"no asset has the model's bands \['ndvi'\]"):
        plan_item(item, ["B04", "ndvi"], L2A)


def test_start_datetime_and_stac_1_1_bands(tmp_path: Path, write_tif: Any) -> None:
    tif = write_tif("x.tif", count=2, dtype="uint16")
    item = {"type": "Feature", "stac_version": "1.1.0", "id": "x", "geometry": None, "links": [],
            "properties": {"datetime": None, "start_datetime": "2021-06-01T10:00:00Z",
                           "end_datetime": "2021-06-01T11:00:00Z"},
            "assets": {"data": {"href": str(tif), "type": "image/tiff; application=geotiff",
                                "bands": [{"name": "b1", "eo:common_name": "red"},
                                          {"name": "b2", "eo:common_name": "nir"}],
                                "raster:bands": [{"scale": 0.0001, "data_type": "uint16"}] * 2}}}
    (tmp_path / "x.json").write_text(json.dumps(item))
    it = read_stac(tmp_path / "x.json").items[0]
    assert it.acquired == datetime(2021, 6, 1, 10, tzinfo=UTC)
    plan = plan_item(it, ["B08", "B04"], Radiometry("reflectance", scale=1e-4, offset=0.0))
    assert [s.index for s in plan.sources] == [1, 0]


def test_an_asset_whose_catalog_entry_lies(data_dir: Path, tmp_path: Path) -> None:
    from vision.errors import UnreadableInputError
    from vision.scene import open_scene

    d = _item_dict(data_dir)
    p = _write_item(tmp_path, d, data_dir)
    d = json.loads(p.read_text())
    d["assets"]["visual"]["href"] = d["assets"]["red"]["href"]  # one uint16 band, "uint8 red/green/blue" declared
    d["assets"]["visual"]["raster:bands"] = [{"data_type": "uint8"}] * 3
    p.write_text(json.dumps(d))
    item = read_stac(p).items[0]
    # the file's header decides: 16-bit reflectance, refused for the 8-bit model
    with pytest.raises(RadiometryMismatch, match=r"asset 'visual': .*reflectance"):
        plan_item(item, ["B04", "B03", "B02"], EUROSAT_RGB)
    plan = plan_item(item, ["B04", "B03"], L2A)
    assert [s.asset for s in plan.sources] == ["visual", "visual"]  # fewest files: the 'visual' asset
    assert any("raster:bands says uint8, the file is uint16" in w for w in plan.warnings)
    with pytest.raises(UnreadableInputError, match=r"has 1 bands, no band 2 for B03"), open_scene(plan):
        pass
