"""vision.radiometry: what pixel values mean, derived from STAC and GeoTIFF, reconciled with a
model's (harmonised, refused, or run anyway and recorded)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vision.errors import InputError
from vision.radiometry import (
    EUROSAT_MS,
    EUROSAT_RGB,
    IDENTITY,
    UNKNOWN,
    Harmonisation,
    Radiometry,
    RadiometryMismatch,
    geotiff_radiometry,
    guess_radiometry,
    parse_baseline,
    reconcile,
    stac_radiometry,
)

L2A = Radiometry("reflectance", bits=16, level="L2A", scale=1e-4, offset=0.0, source="an L2A model")
S2_L2A_PROPS = {"s2:product_type": "S2MSI2A", "s2:processing_baseline": "02.14",
                "earthsearch:boa_offset_applied": False, "constellation": "sentinel-2"}
RB = {"nodata": 0, "data_type": "uint16", "scale": 0.0001, "offset": 0}


def _item_props(data_dir: Path) -> dict[str, object]:
    d = json.loads((data_dir / "s2-l2a-29RKH" / "S2A_29RKH_20200219_0_L2A.json").read_text())
    return d["properties"]


def test_json_round_trip_and_the_eurosat_constants() -> None:
    for r in (EUROSAT_RGB, EUROSAT_MS, L2A, UNKNOWN):
        assert Radiometry.from_obj(r.to_json()) == r
        assert Radiometry.from_obj(r.to_obj()) == r
    assert EUROSAT_RGB.to_obj() == {"kind": "display", "bits": 8, "source": "EuroSAT RGB JPEG"}
    assert (EUROSAT_MS.kind, EUROSAT_MS.level, EUROSAT_MS.scale, EUROSAT_MS.offset) == ("reflectance", "L1C", 1e-4, 0.0)
    assert Radiometry.from_obj(None) == UNKNOWN
    # the ARCHITECTURE example reads
    ex = Radiometry.from_obj({"kind": "reflectance", "level": "L1C", "scale": 0.0001, "offset": 0.0,
                              "source": "EuroSAT MS", "future": 1})
    assert ex.level == "L1C" and ex.scale == 1e-4


@pytest.mark.parametrize("obj", [
    {"kind": "radiance"}, {"kind": "reflectance", "level": "L3"}, {"kind": "reflectance", "scale": 0},
    {"kind": "display", "bits": 0}, {"kind": "reflectance", "scale": "big"}, [1, 2], "not json",
    {"kind": "display", "source": 5},
])
def test_a_bad_radiometry_object_is_refused(obj: object) -> None:
    with pytest.raises(ValueError):
        Radiometry.from_obj(obj)


def test_29rkh_reflectance_and_visual_assets(data_dir: Path) -> None:
    props = _item_props(data_dir)
    red = stac_radiometry(props, RB, "uint16", ("data", "reflectance"), ["B04"], "29RKH/red")
    assert red.radiometry == Radiometry("reflectance", bits=16, level="L2A", scale=1e-4, offset=0.0,
                                        baseline="02.14", source="29RKH/red")
    assert red.warnings == ()  # everything was declared
    tci = stac_radiometry(props, None, "uint8", ("visual",), ["B04", "B03", "B02"], "29RKH/visual")
    assert tci.radiometry.kind == "display" and tci.radiometry.bits == 8 and tci.warnings == ()


@pytest.mark.parametrize("extra, rb_offset, offset, warned", [
    ({"earthsearch:boa_offset_applied": False}, None, -0.1, False),   # the numbers carry +1000
    ({}, None, -0.1, True),                                            # assumed, with a warning
    ({"earthsearch:boa_offset_applied": False}, -0.1, -0.1, False),    # declared as earth-search does
    ({"earthsearch:boa_offset_applied": False}, 0, -0.1, True),        # a contradiction, corrected
    ({"earthsearch:boa_offset_applied": True}, None, 0.0, False),      # already removed
])
def test_baseline_04_offset(extra: dict[str, object], rb_offset: float | None, offset: float, warned: bool) -> None:
    props = {"s2:product_type": "S2MSI1C", "s2:processing_baseline": "04.00", **extra}
    rb = {"data_type": "uint16", "scale": 0.0001, **({"offset": rb_offset} if rb_offset is not None else {})}
    d = stac_radiometry(props, rb, "uint16", ("data",), ["B04"], "x")
    assert d.radiometry.level == "L1C" and d.radiometry.offset == pytest.approx(offset)
    assert bool(d.warnings) is warned
    # and the 2023 numbers map onto the 2017 ones: DN - 1000
    rec = reconcile(EUROSAT_MS, d.radiometry, bands=2)
    if offset:
        assert rec.harmonisation.gain == (1.0, 1.0) and rec.harmonisation.bias == (-1000.0, -1000.0)
        assert "x * 1 -1000" in rec.harmonisation.reason
    else:
        assert rec.harmonisation.identity


def test_an_undeclared_sentinel2_asset_is_taken_with_warnings_for_each_assumption() -> None:
    props = {"constellation": "sentinel-2", "datetime": "2023-12-19T16:11:15Z"}
    ids = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
    d = stac_radiometry(props, {"data_type": "uint16", "nodata": 0}, "uint16", ("data",), ids, "eurosat100/raster")
    assert d.radiometry.level == "L1C" and d.radiometry.scale == 1e-4 and d.radiometry.offset == 0.0
    text = " ".join(d.warnings)
    assert "B10" in text and "assumed 0.0001" in text and "before 04.00" in text and "after 2022-01-25" in text
    reconcile(EUROSAT_MS, d.radiometry)  # fits, with those warnings on record


def test_guesses_from_dtype_and_band_names() -> None:
    assert guess_radiometry("uint8", [None] * 3, "f").radiometry.kind == "display"
    l1c = guess_radiometry("uint16", ["B01", "B10", "B12"], "f")
    assert l1c.radiometry.level == "L1C" and l1c.warnings
    l2a = guess_radiometry("uint16", ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B11", "B12",
                                      "B8A"], "f")
    assert l2a.radiometry.level == "L2A"
    for dt, names in (("uint16", [None] * 3), ("float32", ["B04"]), ("uint16", ["B04", "B03", "B02"])):
        g = guess_radiometry(dt, names, "f")
        assert g.radiometry.kind == "unknown" and "not declared" in g.warnings[0]


def test_geotiff_scale_offset_tags() -> None:
    d = geotiff_radiometry("uint16", [2.75e-5] * 2, [-0.2] * 2, ["B04", "B03"], "ls.tif")
    assert d.radiometry.kind == "reflectance" and d.radiometry.scale == 2.75e-5 and d.radiometry.offset == -0.2
    assert "processing level" in d.warnings[0]
    assert geotiff_radiometry("uint16", [1e-4, 2e-4], [0, 0], [None, None], "x").radiometry.kind == "unknown"
    # no tags (GDAL says 1/0): the guess
    assert geotiff_radiometry("uint8", [1.0] * 3, [0.0] * 3, [None] * 3, "x").radiometry.kind == "display"


def test_refusals_name_both_sides_and_what_to_do() -> None:
    with pytest.raises(RadiometryMismatch, match=r"L1C top-of-atmosphere.*L2A surface.*give the L1C product") as e:
        reconcile(EUROSAT_MS, L2A)
    assert "--allow-radiometry-mismatch" in str(e.value) and isinstance(e.value, InputError)
    with pytest.raises(RadiometryMismatch, match=r"8-bit display composite.*reflectance.*'visual' asset"):
        reconcile(EUROSAT_RGB, L2A)
    with pytest.raises(RadiometryMismatch, match="unknown meaning"):
        reconcile(EUROSAT_MS, Radiometry("unknown", bits=16, source="x.tif"))
    with pytest.raises(RadiometryMismatch, match="give 8-bit display data"):
        reconcile(EUROSAT_RGB, Radiometry("display", bits=16))
    with pytest.raises(RadiometryMismatch, match="reflectance data"):
        reconcile(EUROSAT_MS, EUROSAT_RGB)


def test_allow_mismatch_records_instead_of_refusing() -> None:
    rec = reconcile(EUROSAT_MS, L2A, bands=3, allow_mismatch=True)
    assert rec.mismatch and "L1C" in rec.mismatch and "L2A" in rec.mismatch
    assert rec.harmonisation is IDENTITY
    assert json.loads(json.dumps(rec.to_obj()))["mismatch"] == rec.mismatch


def test_a_schema_1_model_takes_anything_with_a_warning() -> None:
    rec = reconcile(UNKNOWN, Radiometry("unknown", bits=16))
    assert rec.mismatch is None and "schema 1" in rec.warnings[0]


def test_an_undeclared_level_is_taken_with_a_warning() -> None:
    rec = reconcile(EUROSAT_MS, Radiometry("reflectance", scale=1e-4, offset=0.0))
    assert rec.harmonisation.identity and "not declared" in rec.warnings[0]


def test_harmonisation_is_exact_on_integer_numbers() -> None:
    rng = np.random.default_rng(0)
    dn = rng.integers(1, 20000, size=(3, 16, 16)).astype(np.uint16)
    new = reconcile(EUROSAT_MS, Radiometry("reflectance", level="L1C", scale=1e-4, offset=-0.1), bands=3)
    out = new.harmonisation.apply(dn + np.uint16(1000))
    assert out.dtype == np.float32 and np.array_equal(out, dn.astype(np.float32))
    assert IDENTITY.apply(dn) is dn
    stacked = Harmonisation.stack([IDENTITY, Harmonisation((1.0,), (-1000.0,), "04.00")])
    assert stacked.gain == (1.0, 1.0) and stacked.bias == (0.0, -1000.0) and stacked.reason == "04.00"
    scaled = reconcile(EUROSAT_MS, Radiometry("reflectance", level="L1C", scale=1e-3, offset=0.0)).harmonisation
    assert scaled.gain == (10.0,) and scaled.bias == (0.0,)


def test_parse_baseline() -> None:
    assert parse_baseline("04.00") == (4, 0) and parse_baseline("02.14") == (2, 14)
    assert parse_baseline("N0214") is None and parse_baseline(4.0) is None
