from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml


@pytest.fixture
def tiny_recipe(synthetic_root: Path, tmp_path: Path):
    """Factory: write a small recipe on the synthetic set (the model is not the subject)."""

    def make(**overrides: Any) -> Path:
        raw: dict[str, Any] = {
            "seed": 7,
            "experiment": "tests",
            "data": {"source": "folder", "root": str(synthetic_root), "num_workers": 0},
            "model": {"architecture": "efficientnet_lite0", "weights": "imagenet",
                      "name": "tiny_synthetic", "input_size": [32, 32]},
            "augmentations": [{"name": "HorizontalFlip"}, {"name": "RandomRotate90"}],
            "train": {"epochs": 3, "batch_size": 8, "lr": 2e-3, "warmup_epochs": 0.2, "threads": 2},
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
