"""Shared fixtures: tiny rasters written at test time, the synthetic chip set, an isolated
MLflow store, and access to the shared real data (skipped where absent)."""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder; tests that need it are skipped where it is absent."""
    from vision import settings

    d = settings.data_dir()
    if not (d / "eurosat-rgb" / "classes.txt").exists():
        pytest.skip(f"shared data not found at {d} (set VISION_DATA_DIR)")
    return d


@pytest.fixture
def write_tif(tmp_path: Path) -> Callable[..., Path]:
    """Factory: write a small GeoTIFF with given bands, dtype, CRS, nodata."""

    def make(name: str = "chip.tif", data: np.ndarray | None = None, count: int = 3,
             size: int = 32, dtype: str = "uint16", crs: str | None = "EPSG:32632",
             nodata: float | None = None, descriptions: list[str] | None = None,
             folder: Path | None = None) -> Path:
        if data is None:
            # crc32, not hash(): str hashes are salted per process, so the pixels changed
            # from run to run (and between a test and the subprocess it starts).
            rng = np.random.default_rng(zlib.crc32(name.encode()))
            data = rng.integers(1, 3000, size=(count, size, size)).astype(dtype)
        path = (folder or tmp_path) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        profile = dict(driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=str(data.dtype), nodata=nodata)
        if crs is not None:
            profile.update(crs=crs, transform=from_origin(500000, 5600000, 10, 10))
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(data)
            if descriptions:
                ds.descriptions = tuple(descriptions)
        return path

    return make


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's synthetic 6-band, 4-class chip set (small)."""
    from vision.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic"),
                                   per_class={"train": 24, "val": 8, "test": 8}, size=32)


@pytest.fixture
def mlflow_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh local SQLite MLflow store for one test, in its own working directory."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    yield uri
