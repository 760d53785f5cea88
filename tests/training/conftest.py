from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture
def tiny_recipe(synthetic_root: Path, tmp_path: Path):
    """Factory: write a small recipe on the synthetic set (the model is not the subject, so it
    is the test architecture `tiny_cnn`: real training in seconds, to a confident model)."""

    def make(**overrides: Any) -> Path:
        raw: dict[str, Any] = {
            "seed": 7,
            "experiment": "tests",
            "data": {"source": "folder", "root": str(synthetic_root), "num_workers": 0},
            "model": {"architecture": "tiny_cnn", "weights": "none",
                      "name": "tiny_synthetic", "input_size": [32, 32]},
            "augmentations": [{"name": "HorizontalFlip"}, {"name": "RandomRotate90"}],
            "train": {"epochs": 3, "batch_size": 8, "lr": 2e-3, "warmup_epochs": 0.2,
                      "threads": 1},  # one thread: a small model on a shared, busy machine
            "calibration": {"targets": {"Cropland": {"recall": 0.9}}},
        }
        for key, value in overrides.items():
            node = raw
            parts = key.split("__")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = value
        path = tmp_path / "recipe.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    return make


@pytest.fixture(scope="session")
def trained_run(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished `tiny_cnn` run with 8 test-time views (d8), trained once per session, in
    its own MLflow store. Tests read it and write their outputs elsewhere."""
    from training.trainer import run_training
    from vision.config import validate_experiment

    base = tmp_path_factory.mktemp("trained")
    raw = {"seed": 7, "experiment": "tests", "data": {"source": "folder", "root": str(synthetic_root),
                                                      "num_workers": 0},
           "model": {"architecture": "tiny_cnn", "weights": "none", "name": "tiny_trained",
                     "input_size": [32, 32], "tta": "d8"},
           "augmentations": [{"name": "HorizontalFlip"}, {"name": "RandomRotate90"}],
           "train": {"epochs": 3, "batch_size": 8, "lr": 2e-3, "warmup_epochs": 0.2, "threads": 1}}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{base / 'mlflow.db'}")
        run_training(validate_experiment(raw), base / "run", recipe="trained_run")
    return base / "run"
