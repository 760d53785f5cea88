"""`bench/make_change_pairs.py` builds its dates honestly: every clear window holds the real
EuroSAT chip the truth names, and the truth matches the pixels and the STAC items."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import rasterio

from vision.data.decode import decode_image_bytes
from vision.stac import read_stac


def _chips(data_dir: Path, keys: set[str]) -> dict[str, np.ndarray]:
    out = {}
    for shard in sorted((data_dir / "eurosat-rgb").glob("*.tar.gz")):
        with tarfile.open(shard, "r:gz") as tar:
            for m in tar:
                key = Path(m.name).stem
                if m.name.endswith(".jpg") and key in keys:
                    f = tar.extractfile(m)
                    assert f is not None
                    out[key] = decode_image_bytes(f.read(), key)
        if len(out) == len(keys):
            break
    return out


def test_clear_windows_are_the_named_real_chips(pairs: Path, data_dir: Path) -> None:
    meta = json.loads((pairs / "pairs.json").read_text())
    chips = meta["chips_per_date"]["d1"]
    real = _chips(data_dir, set(chips.values()))
    truth = pq.read_table(pairs / "truth-d0-d1.parquet").to_pylist()
    cloudy = {(r["row_off"] // 64, r["col_off"] // 64) for r in truth if r["cloudy_1"]}
    with rasterio.open(pairs / "d1.tif") as ds:
        img = ds.read()
    checked = 0
    for ij, key in chips.items():
        i, j = map(int, ij.split(","))
        window = img[:, i * 64:(i + 1) * 64, j * 64:(j + 1) * 64].transpose(1, 2, 0)
        if (i, j) in cloudy:
            assert not np.array_equal(window, np.clip(real[key], 1, 255))
            continue
        assert np.array_equal(window, np.clip(real[key], 1, 255)), (ij, key)  # 0 is the nodata value
        row = next(r for r in truth if (r["row_off"], r["col_off"]) == (i * 64, j * 64))
        assert row["class_1"] == key.rsplit("_", 1)[0]
        checked += 1
    assert checked >= 100
    assert meta["chip_shards"][0] == "eurosat-rgb-test-000000.tar.gz"


def test_truth_changes_are_real_replacements_and_the_items_are_readable(pairs: Path) -> None:
    truth = pq.read_table(pairs / "truth-d0-d1.parquet").to_pylist()
    appeared = [r for r in truth if r["class_0"] in ("HerbaceousVegetation", "Forest") and r["class_1"] == "AnnualCrop"]
    assert len(appeared) >= 8
    assert sum(r["cloudy_1"] for r in truth) >= 4 and sum(r["nodata_0"] for r in truth) == 6
    for name in ("d0", "d1", "d2", "d1-3857"):
        read = read_stac(pairs / f"{name}.item.json")
        assert not read.errors
        (item,) = read.items
        assert item.scl is not None and item.acquired is not None and "visual" in item.assets
    with rasterio.open(pairs / "d1-3857.tif") as ds, rasterio.open(pairs / "d1-3857.scl.tif") as scl:
        assert ds.crs.to_string() == "EPSG:3857" and scl.crs.to_string() == "EPSG:3857"
        assert set(np.unique(scl.read(1))) >= {0, 8, 9}
