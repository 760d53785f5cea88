"""Model cards: made at registration with real numbers, logged to MLflow, printed by
`vision models card`, and regenerated for runs trained before cards existed."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli_runner import run_training_cli as run_cli
from training.model_card import CARD_JSON, CARD_MD, fetch_card, generate_for_run, render_markdown
from training.trainer import run_training
from vision.config import load_experiment

SECTIONS = ["## Intended use", "## Out-of-scope uses", "## Training data", "## Preprocessing", "## Training",
            "## Metrics", "## Calibration", "## Subgroup results", "## Known limitations", "## Version and lineage"]


def test_card_at_registration_has_every_section_with_real_numbers(tiny_recipe, mlflow_store, tmp_path: Path) -> None:
    out = tmp_path / "run"
    recipe = tiny_recipe(train__epochs=1, train__threads=1,
                         promotion={"group_by": "brightness_quartile", "min_accuracy": 0.5},
                         calibration={"ece_max": 0.2, "targets": {"Cropland": {"recall": 0.9}}})
    m = run_training(load_experiment(recipe), out, recipe="tiny").metrics
    md = (out / CARD_MD).read_text()
    card = json.loads((out / CARD_JSON).read_text())
    for section in SECTIONS:
        assert section in md, section
    assert card["metrics"]["accuracy"] == m["test"]["accuracy"] and card["metrics"]["split"] == "test"
    assert f"{m['test']['accuracy'] * 100:.2f} %" in md
    cal = card["calibration"]
    assert cal["ece_before"] == m["test"]["ece_uncalibrated"] and cal["ece_after"] == m["test"]["ece"]
    assert cal["temperature"] == m["temperature"] and set(cal["operating_points"]["thresholds"]) == {"Cropland"}
    assert cal["reliability_diagram"] == "report/test_reliability.png"
    data = card["training_data"]
    assert data["fingerprint"] == m["train_data_fingerprint"] and data["bands"] == ["B02", "B03", "B04", "B08",
                                                                                    "B11", "B12"]
    assert data["class_counts"]["train"] == {"Cropland": 24, "Forest": 24, "Urban": 24, "Water": 24}
    assert "10 x 10 m" in data["resolution"]  # read from the synthetic GeoTIFFs
    sub = card["subgroups"]
    assert sub["status"] == "ok" and sub["group_by"] == "brightness_quartile" and len(sub["groups"]) == 4
    assert sub["groups"]["Q1 darkest"]["accuracy"]["ci"] is not None
    assert m["subgroups"]["group_by"] == "brightness_quartile"
    assert card["lineage"]["model_version"] == "1" and card["lineage"]["recipe"] == "tiny"
    assert card["model"]["onnx_sha256"] == m["model_sha256"]
    assert any("SYNTHETIC" in x for x in card["limitations"]) and card["intended_use"] and card["out_of_scope"]

    # Logged with the run; the version points at it; `vision models card` prints it.
    from training import tracking

    arts = set(tracking.list_run_artifacts(m["mlflow_run_id"], "card"))
    assert {"card/MODEL_CARD.md", "card/model_card.json"} <= arts
    assert "report/subgroups_brightness_quartile.json" in tracking.list_run_artifacts(m["mlflow_run_id"], "report")
    assert "checkpoint/best.pt" in tracking.list_run_artifacts(m["mlflow_run_id"], "checkpoint")
    assert tracking.get_version("tiny_synthetic", "1").tags["model_card"] == "card/MODEL_CARD.md"
    fetched, fetched_md = fetch_card("tiny_synthetic", "1")
    assert fetched == card and fetched_md == md
    code, text = run_cli("models", "card", "tiny_synthetic", "1")
    assert code == 0 and "Model card: tiny_synthetic v1" in text and "Subgroup results" in text
    code, text = run_cli("models", "card", "tiny_synthetic", "1", "--json")
    assert code == 0 and json.loads(text)["model"]["version"] == "1"

    # A card can be remade afterwards, e.g. with another grouping; it is logged again.
    card2, _ = generate_for_run(out, group_by="group_missing_column_is_reported")
    assert card2["subgroups"]["status"] == "missing" and "group_missing_column" in card2["subgroups"]["reason"]
    code, text = run_cli("models", "card", "tiny_synthetic", "1", "--generate", "--group-by", "brightness_quartile")
    assert code == 0 and "computed after training" in fetch_card("tiny_synthetic", "1")[0]["subgroups"]["note"]
    code, text = run_cli("models", "card", "tiny_synthetic", "7")
    assert code == 2 and "no registered version" in text


def test_render_without_subgroups_says_why() -> None:
    card = {
        "model": {"name": "m", "version": "2", "architecture": "resnet18", "mlflow_run_id": "r", "onnx_sha256": "s",
                  "card_created_at": "now"},
        "intended_use": ["x"], "out_of_scope": ["y"],
        "training_data": {"source": "folder", "root": None, "splits": {"train": "train", "val": "val", "test": None},
                          "fingerprint": "f", "split_sizes": {"train": 1}, "class_counts": {}, "classes": ["a"],
                          "bands": ["B1"], "resolution": "unknown", "notes": "", "synthetic": False},
        "preprocessing": {"input": "raw", "input_size": [8, 8], "normalisation": "in graph", "mean": [1.0],
                          "std": [2.0], "augmentations (training only)": [], "resizing": "bilinear"},
        "training": {"initial_weights": {"weights": "none"}, "epochs_planned": 1, "epochs_run": 1, "best_epoch": 1,
                     "monitor": "val_accuracy", "optimizer": "AdamW", "batch_size": 1, "label_smoothing": 0.0,
                     "imbalance": "none", "seed": 0},
        "metrics": {"split": "val", "n": 1, "accuracy": 1.0, "macro_f1": 1.0,
                    "per_class": {"a": {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}},
                    "onnx_parity_max_abs": 0.0},
        "calibration": {"method": "none", "temperature": 1.0, "split": "val", "ece_before": 0.1, "ece_after": 0.1,
                        "val_ece_before": 0.1, "val_ece_after": 0.1, "ece_max": None, "reliability_diagram": None,
                        "operating_points": {"targets": {}, "thresholds": {}}},
        "subgroups": {"status": "not requested", "reason": "recipe declares no promotion.group_by"},
        "limitations": ["z"],
        "lineage": {"model_name": "m", "model_version": "2", "mlflow_run_id": "r", "recipe": None, "config_hash": "h",
                    "train_data_fingerprint": "f", "initial_weights": {"weights": "none"}, "code_version": "0",
                    "git_commit": None, "run_folder": None},
        "promotion": {"min_accuracy": None, "min_group_accuracy": None, "group_by": None, "ece_max": None},
    }
    md = render_markdown(card)
    assert "Not available: recipe declares no promotion.group_by." in md
    assert all(s in md for s in SECTIONS)

