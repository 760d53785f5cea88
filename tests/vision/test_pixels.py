"""vision.data.pixels: what a training set's pixels mean and their size on the ground."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vision.data import FolderSource
from vision.data.pixels import EUROSAT_GSD_M, SYNTHETIC, pixel_facts
from vision.errors import ConfigError
from vision.radiometry import EUROSAT_MS, EUROSAT_RGB


def _tif_folder(write_tif, root: Path, dtype: str, crs: str | None = "EPSG:32632") -> FolderSource:
    for cls in ("a", "b"):
        write_tif(f"{cls}/x.tif", count=4, dtype=dtype, crs=crs, folder=root)
    return FolderSource(root)


def test_known_sources_record_their_kind_and_10_m(synthetic_root: Path) -> None:
    src = FolderSource(synthetic_root / "train")
    assert pixel_facts(src, "eurosat-rgb").radiometry == EUROSAT_RGB
    assert pixel_facts(src, "eurosat-ms").radiometry == EUROSAT_MS
    facts = pixel_facts(src, "synthetic")
    assert facts.radiometry == SYNTHETIC and facts.gsd_m == EUROSAT_GSD_M


def test_geotiff_chips_say_what_their_tags_say(synthetic_root: Path) -> None:
    # The synthetic chips declare reflectance = DN * 1e-4 in their scale tags, and 10 m pixels.
    facts = pixel_facts(FolderSource(synthetic_root / "train"), "folder")
    assert facts.radiometry.kind == "reflectance" and facts.radiometry.scale == pytest.approx(1e-4)
    assert facts.gsd_m == pytest.approx(10.0)
    assert any("processing level" in w for w in facts.warnings)


def test_undeclared_16_bit_chips_are_refused_unless_the_recipe_declares_them(write_tif, tmp_path: Path) -> None:
    src = _tif_folder(write_tif, tmp_path / "ds", "uint16")
    with pytest.raises(ConfigError, match="data.radiometry"):
        pixel_facts(src, "folder")
    declared = {"kind": "reflectance", "level": "L2A", "scale": 0.0001}
    facts = pixel_facts(src, "folder", declared, 20.0)
    assert facts.radiometry.level == "L2A" and facts.gsd_m == 20.0


def test_8_bit_chips_are_display_data_and_jpegs_have_no_known_gsd(write_tif, tmp_path: Path) -> None:
    facts = pixel_facts(_tif_folder(write_tif, tmp_path / "u8", "uint8"), "folder")
    assert facts.radiometry.kind == "display" and facts.radiometry.bits == 8
    root = tmp_path / "jpg"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / cls / "c.jpg")
    jp = pixel_facts(FolderSource(root), "folder")
    assert jp.radiometry.kind == "display" and jp.gsd_m is None
    assert any("data.gsd_m" in w for w in jp.warnings)


def test_a_vision_radiometry_tag_is_what_the_chips_mean(write_tif, tmp_path: Path) -> None:
    import rasterio

    src = _tif_folder(write_tif, tmp_path / "tagged", "uint16")
    for ref in src.refs:
        with rasterio.open(ref.path, "r+") as ds:
            ds.update_tags(vision_radiometry='{"kind": "reflectance", "level": "L1C", "scale": 0.0001}')
    facts = pixel_facts(src, "manifest")
    assert facts.radiometry.level == "L1C" and facts.warnings == ()
