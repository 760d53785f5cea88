"""`vision train` from labelled scenes (the hookup of vision.data.labelled into training):
one sampling for every split, the lineage lists every label left out and why, the ONNX model
records what its pixels mean and their GSD, and the audit groups by scene."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.vision.labelled_helpers import PIXEL, X0, pixel_box, pixel_point, write_labels, write_scene
from training.trainer import run_training
from vision.config import load_experiment
from vision.contracts.model import read_model_file


def test_training_from_labelled_scenes_records_lineage_radiometry_and_gsd(tmp_path: Path, mlflow_store: str) -> None:
    geoms, classes = [], []
    for k, split in enumerate(("train", "val", "test")):
        x0 = X0 + k * 5000.0
        write_scene(tmp_path / f"{split}.tif", 128, 128, seed=k, x0=x0)
        for r in range(0, 128, 32):
            for c in range(0, 128, 32):
                geoms.append(pixel_box(r, c, 32, 32, x0=x0))
                classes.append("Water" if (r + c) % 64 else "Land")
    geoms.append(pixel_point(-300, 10))  # north of every scene
    classes.append("Land")
    write_labels(tmp_path / "labels.gpkg", geoms, classes, ids=[f"l{k}" for k in range(len(geoms))])
    recipe = {
        "seed": 1, "experiment": "tests",
        "data": {"source": "scenes", "root": str(tmp_path), "num_workers": 0, "label_id_field": "key",
                 "scenes": {"train": ["train.tif"], "val": ["val.tif"], "test": ["test.tif"]},
                 "labels": ["labels.gpkg"], "class_field": "class"},
        "model": {"architecture": "tiny_cnn", "weights": "none", "name": "scenes_tiny",
                  "input_size": [32, 32]},
        "train": {"epochs": 1, "batch_size": 8, "max_steps_per_epoch": 2, "threads": 2},
        "calibration": {"temperature_scaling": False},
        "promotion": {"group_by": "scene"},
    }
    p = tmp_path / "recipe.yaml"
    p.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "run"
    run_training(load_experiment(p), out)
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["split_sizes"] == {"train": 16, "val": 16, "test": 16}
    lab = lineage["labelled"]
    assert lab["skipped_labels"]["labels"] == [{"source": "labels.gpkg", "feature": f"l{len(geoms) - 1}",
                                                "label": "Land", "kind": "outside", "reason": "outside every scene"}]
    assert lab["split"]["distances"]["train-test"]["min_m"] == 10000.0 - 128 * PIXEL
    meta = read_model_file(out / "model.onnx").metadata
    assert meta.radiometry is not None and meta.radiometry.kind == "display" and meta.radiometry.bits == 8
    assert meta.gsd_m == 10.0 and meta.bands == ("B04", "B03", "B02")
    sub = json.loads((out / "report" / "subgroups_scene.json").read_text())
    assert set(sub["groups"]) == {"test"}
