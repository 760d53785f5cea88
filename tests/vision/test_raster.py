"""`open_raster`'s size guards: absurd headers and headers no codec could make true."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from vision.errors import UnreadableInputError
from vision.raster import MAX_COMPRESSION_RATIO, open_raster

TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)


def _sparse(path: Path, size: int, compress: str | None, block: int = 512) -> Path:
    """A GeoTIFF of ``size`` x ``size`` x 3 with no tile written (only its index)."""
    profile: dict[str, object] = {
        "driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
        "tiled": True, "blockxsize": block, "blockysize": block, "crs": "EPSG:32631",
        "transform": TRANSFORM, "SPARSE_OK": True}
    if compress:
        profile["compress"] = compress
    with rasterio.open(path, "w", **profile):
        pass
    return path


@pytest.mark.parametrize("compress", ["deflate", "lzw", "zstd", None])
def test_a_header_no_codec_could_make_true_is_refused(tmp_path: Path, compress: str | None) -> None:
    path = _sparse(tmp_path / "lie.tif", 100_000, compress, block=1024)
    with pytest.raises(UnreadableInputError, match="the header is wrong or the file is truncated"), \
            open_raster(path):
        pass


@pytest.mark.parametrize("compress", ["deflate", "lzw", "zstd", "packbits", None])
def test_real_files_are_not_refused(tmp_path: Path, compress: str | None) -> None:
    """Constant data, the best case of every codec, still opens: the bounds hold."""
    path = tmp_path / "flat.tif"
    profile: dict[str, object] = {"driver": "GTiff", "width": 2048, "height": 2048, "count": 3,
                                  "dtype": "uint8", "tiled": True, "crs": "EPSG:32631",
                                  "transform": TRANSFORM}
    if compress:
        profile["compress"] = compress
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(np.zeros((3, 2048, 2048), np.uint8))
    ratio = 2048 * 2048 * 3 / path.stat().st_size
    assert ratio < MAX_COMPRESSION_RATIO[compress or "none"] / 1.5
    with open_raster(path) as ds:
        assert ds.width == 2048


def test_real_scenes_open(data_dir: Path) -> None:
    for p in sorted((data_dir / "scenes").glob("*.tif")):
        with open_raster(p) as ds:
            assert ds.width > 0
