"""`vision infer` on STAC items: the 29RKH product through its assets, the radiometric
contract (refusals naming both sides, the override recorded, the baseline 04.00 offset
harmonised) and the end-to-end equality of the item and the stacked file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
from affine import Affine

from inference.runner import JobOptions, run_job
from vision.radiometry import EUROSAT_MS, EUROSAT_RGB, Radiometry

from .conftest import RGB_BANDS

ITEM = "S2A_29RKH_20200219_0_L2A.json"
STACKED = "S2A_29RKH_20200219_L2A_12band_100m.tif"
#: The stacked file's band order (EuroSAT order without B10, which L2A does not have).
L2A_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B11", "B12", "B8A"]
L2A = Radiometry("reflectance", bits=16, level="L2A", scale=1e-4, offset=0.0, source="a test L2A model")


def _run(inputs: list[Path], model: Path, out: Path, **kw: Any) -> Any:
    return run_job(JobOptions(inputs=tuple(str(p) for p in inputs), model=str(model), out=out,
                              progress=False, threads=1, workers=2, **kw))


def _manifest(out: Path) -> dict[str, Any]:
    return json.loads((out / "manifest.json").read_text())


def _rows(out: Path) -> list[dict[str, Any]]:
    return sorted(pq.read_table(out / "predictions.parquet").to_pylist(),
                  key=lambda r: (r["path"], r["row_off"] or 0, r["col_off"] or 0))


@pytest.fixture(scope="module")
def item_path(data_dir: Path) -> Path:
    return data_dir / "s2-l2a-29RKH" / ITEM


@pytest.fixture(scope="module")
def l2a_model(model_factory: Callable[..., Path]) -> Path:
    return model_factory(L2A_BANDS, mean=[1500.0] * 12, std=[800.0] * 12,
                         extra_meta={"radiometry": L2A, "gsd_m": 100.0})


def test_the_rgb_model_reads_the_item_through_its_visual_asset(
        item_path: Path, model_factory: Callable[..., Path], tmp_path: Path) -> None:
    """Acceptance 1: the TCI asset feeds B04/B03/B02, the 16-bit reflectance assets are
    refused naming both radiometries, outputs are in EPSG:32629 on the item's extent."""
    model = model_factory(RGB_BANDS, extra_meta={"radiometry": EUROSAT_RGB, "gsd_m": 10.0})
    # The fixture is decimated to 100 m: ten times coarser than the model's 10 m.
    refused = _run([item_path], model, tmp_path / "gsd")
    assert refused.exit_code == 1
    (err,) = _manifest(tmp_path / "gsd")["errors"]
    assert err["error"].startswith("GsdMismatch: ") and "100 m, 10x coarser than the 10 m" in err["error"]
    assert "--gsd native" in err["error"]

    out = tmp_path / "job"
    res = _run([item_path], model, out, gsd="native")
    assert res.exit_code == 0
    m = _manifest(out)
    assert m["model"]["radiometry"] == EUROSAT_RGB.to_obj() and m["model"]["gsd_m"] == 10.0
    (entry,) = m["inputs"]
    assert entry["item_id"] == "S2A_29RKH_20200219_0_L2A" and entry["read"] == "vision.scene"
    assert [(b["band"], b["asset"], b["band_index"]) for b in entry["bands"]] == [
        ("B04", "visual", 0), ("B03", "visual", 1), ("B02", "visual", 2)]
    for b, asset in zip(entry["bands"], ["red", "green", "blue"], strict=True):
        assert "8-bit display composite fits the model" in b["reason"]
        (ref,) = [r for r in b["refused"] if r["asset"] == asset]
        assert "8-bit display composite" in ref["reason"] and "L2A surface reflectance" in ref["reason"]
    assert "pixels kept at 100 m (--gsd native)" in entry["gsd"]["note"]
    assert entry["window_m"] == [6400.0, 6400.0] and entry["cloud_method"] == "scl"
    # Outputs on the visual asset's grid: the item's CRS and extent.
    visual = json.loads(item_path.read_text())["assets"]["visual"]
    t = Affine(*visual["proj:transform"][:6])
    h, w = visual["proj:shape"]
    want = (t.c, t.f + t.e * h, t.c + t.a * w, t.f)
    with rasterio.open(out / "S2A_29RKH_20200219_0_L2A.classes.tif") as ds:
        assert ds.crs.to_epsg() == 32629
        assert tuple(ds.bounds) == pytest.approx(want)
    rows = _rows(out)
    assert len(rows) == 18 * 18 and {r["item_id"] for r in rows} == {"S2A_29RKH_20200219_0_L2A"}
    assert {r["acquired"].isoformat() for r in rows} == {"2020-02-19T11:34:25.405000+00:00"}
    assert all(r["crs"] == "EPSG:32629" for r in rows)


def test_the_item_and_the_stacked_file_give_the_same_probabilities(
        item_path: Path, data_dir: Path, l2a_model: Path, tmp_path: Path) -> None:
    """Acceptance 2, end to end: the 12 bands read through the item with nearest resampling
    on the 100 m grid are the stacked file's pixels, so every window's probabilities agree."""
    a, b = tmp_path / "item", tmp_path / "file"
    assert _run([item_path], l2a_model, a, resampling="nearest", max_cloud=1.0).exit_code == 0
    assert _run([data_dir / "scenes" / STACKED], l2a_model, b).exit_code == 0
    ra, rb = _rows(a), _rows(b)
    assert len(ra) == len(rb) == 324
    assert [(r["row_off"], r["col_off"], r["status"]) for r in ra] == \
        [(r["row_off"], r["col_off"], r["status"]) for r in rb]
    ok = [(x, y) for x, y in zip(ra, rb, strict=True) if x["status"] == "ok"]
    assert len(ok) > 250
    diff = max(float(np.abs(np.subtract(x["probs"], y["probs"])).max()) for x, y in ok)
    assert diff == 0.0
    assert [x["label"] for x, _ in ok] == [y["label"] for _, y in ok]
    assert _manifest(a)["inputs"][0]["bands"][4]["asset"] == "rededge1"  # B05 from its 200 m file
    assert _manifest(b)["inputs"][0]["read"] == "file"  # the stacked file keeps the fast path


def test_an_l1c_model_refuses_the_l2a_item_and_the_override_runs_it(
        item_path: Path, model_factory: Callable[..., Path], tmp_path: Path) -> None:
    """Acceptance 3: L1C vs L2A named; --allow-radiometry-mismatch runs it and says so."""
    model = model_factory(L2A_BANDS, mean=[1500.0] * 12, std=[800.0] * 12,
                          extra_meta={"radiometry": EUROSAT_MS, "gsd_m": 100.0})
    assert _run([item_path], model, tmp_path / "refused").exit_code == 1
    (err,) = _manifest(tmp_path / "refused")["errors"]
    assert err["error"].startswith("RadiometryMismatch: ")
    assert "L1C top-of-atmosphere reflectance" in err["error"] and "L2A surface reflectance" in err["error"]
    assert "--allow-radiometry-mismatch" in err["error"]

    out = tmp_path / "allowed"
    assert _run([item_path], model, out, allow_radiometry_mismatch=True).exit_code == 0
    m = _manifest(out)
    assert m["options"]["allow_radiometry_mismatch"] is True
    (entry,) = m["inputs"]
    assert "L1C" in entry["radiometry_mismatch"] and "L2A" in entry["radiometry_mismatch"]
    assert all("radiometry mismatch allowed" in b["reason"] for b in entry["bands"])
    assert any("--allow-radiometry-mismatch: 0 chips and 1 scenes" in w for w in m["warnings"])
    assert m["counts"]["ok"] > 0


def test_the_stacked_l2a_file_is_refused_by_the_rgb_model(
        data_dir: Path, model_factory: Callable[..., Path], tmp_path: Path) -> None:
    model = model_factory(RGB_BANDS, extra_meta={"radiometry": EUROSAT_RGB, "gsd_m": 10.0})
    assert _run([data_dir / "scenes" / STACKED], model, tmp_path / "j").exit_code == 1
    (err,) = _manifest(tmp_path / "j")["errors"]
    assert err["error"].startswith("RadiometryMismatch: the model was trained on 8-bit display composite")
    assert "L2A reflectance" in err["error"] or "L2A surface reflectance" in err["error"]
    assert "'visual' asset, TCI" in err["error"]


def _offset_copy(src: Path, dest: Path) -> Path:
    """The item declared baseline 04.00 over band files written with DN + 1000 (nodata kept);
    SCL and TCI point at the originals."""
    d = json.loads((src / ITEM).read_text())
    d["properties"]["s2:processing_baseline"] = "04.00"
    d["properties"]["earthsearch:boa_offset_applied"] = False
    for asset in d["assets"].values():
        name = asset["href"][2:]
        rb = asset.get("raster:bands") or [{}]
        if rb[0].get("data_type") == "uint16" and name.startswith("B"):
            with rasterio.open(src / name) as ds:
                profile, arr = ds.profile, ds.read()
            shifted = np.where(arr == 0, 0, arr.astype(np.int64) + 1000).astype(np.uint16)
            with rasterio.open(dest / name, "w", **profile) as out:
                out.write(shifted)
            rb[0]["offset"] = -0.1  # as earth-search declares it
        else:
            asset["href"] = str(src / name)
    d["links"] = []
    p = dest / "item.json"
    p.write_text(json.dumps(d))
    return p


def test_a_baseline_04_copy_gives_the_same_probabilities(
        item_path: Path, l2a_model: Path, tmp_path: Path) -> None:
    """Acceptance 3: the 04.00 offset is harmonised (DN - 1000), so the copy's windows get
    exactly the original's probabilities."""
    (tmp_path / "copy").mkdir()
    copy = _offset_copy(item_path.parent, tmp_path / "copy")
    a, b = tmp_path / "orig", tmp_path / "offset"
    assert _run([item_path], l2a_model, a).exit_code == 0
    assert _run([copy], l2a_model, b).exit_code == 0
    entry = _manifest(b)["inputs"][0]
    assert entry["harmonisation"]["bias"] == [-1000.0] * 12
    assert all("harmonised" in x["reason"] for x in entry["bands"])
    ra, rb = _rows(a), _rows(b)
    assert [r["status"] for r in ra] == [r["status"] for r in rb]
    ok = [(x, y) for x, y in zip(ra, rb, strict=True) if x["status"] == "ok"]
    assert len(ok) > 250
    assert max(float(np.abs(np.subtract(x["probs"], y["probs"])).max()) for x, y in ok) == 0.0
    assert [x["cloud_fraction"] for x in ra] == [y["cloud_fraction"] for y in rb]


def test_the_quicklook_of_an_item_read_again_shows_its_visual_asset(
        item_path: Path, model_factory: Callable[..., Path]) -> None:
    """A scene whose chunks were read elsewhere (Ray, an earlier run) has its quicklook
    pixels read again through its band plan, not from its JSON file."""
    from inference.choices import Gsd
    from inference.inputs import stac_files
    from inference.model import load_model_info
    from inference.plan import make_plan
    from inference.quicklook import canvas_from_file
    from inference.scenes import FitOptions

    model = load_model_info(model_factory(RGB_BANDS, extra_meta={"radiometry": EUROSAT_RGB, "gsd_m": 10.0}))
    plan = make_plan([str(item_path)], model, (64, 64), fit=FitOptions(gsd=Gsd.NATIVE),
                     stac_files=stac_files([str(item_path)]))
    (scene,) = plan.scenes
    canvas = canvas_from_file(scene, model.bands)
    with rasterio.open(item_path.parent / "TCI.tif") as ds:
        tci = ds.read()
    want = tci[:, canvas.src_rows][:, :, canvas.src_cols]
    assert canvas.complete and canvas.valid.mean() > 0.9
    assert np.array_equal(canvas.data[:, canvas.valid], want[:, canvas.valid])


def test_input_roots_confine_the_files_an_item_names(
        item_path: Path, model_factory: Callable[..., Path], tmp_path: Path) -> None:
    """An item inside the allowed folder whose hrefs lead out of it (as the review worker's
    submissions could) is an error row with `--input-root`; the same item runs without it."""
    model = model_factory(RGB_BANDS, extra_meta={"radiometry": EUROSAT_RGB, "gsd_m": 100.0})
    item = json.loads(item_path.read_text())
    for asset in item["assets"].values():
        asset["href"] = str((item_path.parent / asset["href"]).resolve())
    root = tmp_path / "allowed"
    root.mkdir()
    copy = root / "item.json"
    copy.write_text(json.dumps(item))
    refused = _run([copy], model, tmp_path / "refused", input_roots=(root,))
    manifest = _manifest(tmp_path / "refused")
    assert refused.exit_code == 1 and manifest["counts"]["ok"] == 0
    assert "outside the allowed folders" in json.dumps(manifest["errors"])
    assert _run([copy], model, tmp_path / "free").exit_code == 0


def test_an_item_reached_twice_is_one_scene_and_no_scene_is_the_catalog(
        item_path: Path, model_factory: Callable[..., Path], tmp_path: Path) -> None:
    """A catalog and one of its items both given plan the item once (not every row twice);
    an item whose id is `catalog` does not overwrite the job's stac/catalog.json."""
    model = model_factory(RGB_BANDS, extra_meta={"radiometry": EUROSAT_RGB, "gsd_m": 100.0})
    item = json.loads(item_path.read_text())
    for asset in item["assets"].values():
        asset["href"] = str((item_path.parent / asset["href"]).resolve())
    item["id"] = "catalog"
    copy = tmp_path / "item.json"
    copy.write_text(json.dumps(item))
    cat = tmp_path / "cat.json"
    cat.write_text(json.dumps({"type": "Catalog", "stac_version": "1.0.0", "id": "c", "description": "d",
                               "links": [{"rel": "item", "href": str(copy), "type": "application/json"}]}))
    out = tmp_path / "job"
    assert _run([cat, copy], model, out, gsd="native").exit_code == 0
    rows = _rows(out)
    keys = [(r["row_off"], r["col_off"]) for r in rows]
    assert len(keys) == len(set(keys)) == 324
    stems = [s for s in _manifest(out)["outputs"] if s.startswith("stac/")]
    assert "stac/catalog.json" in stems and len(stems) == 2
    catalog = json.loads((out / "stac" / "catalog.json").read_text())
    assert catalog["type"] == "Catalog"
