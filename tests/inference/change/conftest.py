"""Fixtures for the change tests: multi-date scenes built from real EuroSAT chips
(`bench/make_change_pairs.py`, small), simulated job folders of them (`jobs.simulate_job`), and
`vision change` run in-process."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from affine import Affine

from tests.cli_runner import runner
from tests.inference.change.jobs import SceneSpec, pairs_module, simulate_job, write_job

CLASSES = ["AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
           "PermanentCrop", "Residential", "River", "SeaLake"]
DATES = ("d0", "d1", "d2", "d1-3857")
REPO_ROOT = Path(__file__).resolve().parents[3]


def load_bench(name: str) -> Any:
    """A ``bench/NAME.py`` script as a module (the tests run the benchmarks' own code)."""
    key = f"bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, REPO_ROOT / "bench" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[key] = mod
        spec.loader.exec_module(mod)
    return sys.modules[key]


@pytest.fixture(scope="session")
def pairs(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12 x 12-window pair (and third date, and EPSG:3857 copy) from real chips."""
    root = tmp_path_factory.mktemp("pairs")
    pairs_module().build(root, data_dir, windows=12, seed=3)
    return root


@pytest.fixture(scope="session")
def sim_jobs(pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Simulated schema-2 jobs of every date (a 95 %-accurate simulated model)."""
    root = tmp_path_factory.mktemp("jobs")
    return {n: simulate_job(pairs, n, root / n, accuracy=0.95) for n in DATES}


@pytest.fixture(scope="session")
def perfect_jobs(pairs: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Simulated schema-2 jobs whose model is always right."""
    root = tmp_path_factory.mktemp("perfect")
    return {n: simulate_job(pairs, n, root / n, accuracy=1.0) for n in DATES}


_run_change = runner("inference.change")


def run_cli(*args: str) -> tuple[int, str]:
    """``vision change ARGS...`` with only the change command; returns (exit code, output)."""
    return _run_change("change", *args)


def grid_job(folder: Path, status: np.ndarray, labels: np.ndarray, p: float = 0.9, *, crs: str = "EPSG:32632",
             origin: tuple[float, float] = (500_000.0, 5_350_000.0), pixel: float = 10.0, window: int = 64,
             stride: int | None = None, acquired: str | None = "2024-06-01T10:00:00Z", schema: int = 2,
             path: str | None = None, classes: list[str] = CLASSES, job_status: str = "finished",
             aoi_id: np.ndarray | None = None, **kw: object) -> Path:
    """A one-scene job whose windows have the given statuses and top classes (probability ``p``)."""
    rows, cols = status.shape
    stride = stride or window
    k = len(classes)
    probs = np.full((rows, cols, k), (1 - p) / (k - 1), np.float32)
    for i in range(rows):
        for j in range(cols):
            probs[i, j, int(labels[i, j])] = p
    shape = ((rows - 1) * stride + window, (cols - 1) * stride + window)
    spec = SceneSpec(path or str(folder.parent / f"{folder.name}.tif"), crs,
                     Affine(pixel, 0, origin[0], 0, -pixel, origin[1]), shape, status.astype(object), probs,
                     window=window, stride=stride, acquired=acquired, item_id=folder.name, sha256="ab" * 32,
                     aoi_id=aoi_id)
    return write_job(folder, [spec], classes, schema=schema, status=job_status, **kw)  # type: ignore[arg-type]


@pytest.fixture
def make_grid_job(tmp_path: Path) -> Callable[..., Path]:
    def make(name: str, status: np.ndarray, labels: np.ndarray, **kw: object) -> Path:
        return grid_job(tmp_path / name, status, labels, **kw)  # type: ignore[arg-type]

    return make
