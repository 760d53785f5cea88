"""Subgroup audit: groupings (UTM zone, brightness quartile, manifest columns), metrics with
seeded bootstrap intervals, worst-group gap, and the `vision audit` command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.cli_runner import run_training_cli as run_cli
from training.audit import Grouping, audit_predictions, group_metrics, group_samples, utm_zone_name
from training.checkpoint import save_checkpoint
from vision.data import FolderSource, ManifestSource
from vision.errors import ConfigError
from vision.metrics import classification_report
from vision.models import NormalizedClassifier, get_model

CLASSES = ["a", "b", "c"]


def _probs(labels: np.ndarray, correct: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    k = len(CLASSES)
    pred = np.where(correct, labels, (labels + 1) % k)
    p = rng.uniform(0.0, 0.2, size=(len(labels), k))
    p[np.arange(len(labels)), pred] = rng.uniform(0.5, 1.0, size=len(labels))
    return p / p.sum(axis=1, keepdims=True)


@pytest.fixture
def geo_manifest(write_tif, tmp_path: Path) -> Path:
    """Six 3-band GeoTIFF chips in two UTM zones, listed in a manifest with a `region` column."""
    rows = []
    for i in range(6):
        crs = "EPSG:32629" if i < 4 else "EPSG:32733"
        p = write_tif(f"chips/c{i}.tif", count=3, size=16, crs=crs, dtype="uint8")
        rows.append({"path": str(p.relative_to(tmp_path)), "label": CLASSES[i % 3],
                     "region": "north" if i % 2 else "south", "group": f"g{i % 3}"})
    path = tmp_path / "manifest.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_point_estimates_match_metrics_and_intervals_are_seeded() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    probs = _probs(labels, rng.uniform(size=300) < 0.8, rng)
    m = group_metrics(probs, labels, CLASSES, n_boot=500, seed=1)
    rep = classification_report(labels, probs, CLASSES)
    for key in ("accuracy", "macro_f1", "ece"):
        assert m[key]["value"] == pytest.approx(rep[key], abs=1e-6)
        lo, hi = m[key]["ci"]
        assert lo <= m[key]["value"] <= hi and hi - lo > 0
    assert m["recall"]["a"]["value"] == pytest.approx(rep["per_class"]["a"]["recall"], abs=1e-6)
    assert group_metrics(probs, labels, CLASSES, n_boot=500, seed=1) == m  # same seed, same intervals
    assert group_metrics(probs, labels, CLASSES, n_boot=500, seed=2)["accuracy"]["ci"] != m["accuracy"]["ci"]


def test_bootstrap_ece_bins_agree_with_vision_metrics() -> None:
    """With the identity resample the vectorised bootstrap ECE equals `expected_calibration_error`."""
    from training.audit import _bootstrap
    from vision.metrics import expected_calibration_error

    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 200)
    probs = _probs(labels, rng.uniform(size=200) < 0.7, rng)

    class Identity:
        def integers(self, lo: int, hi: int, size: tuple[int, int]) -> np.ndarray:
            return np.tile(np.arange(hi), (size[0], 1))

    b = _bootstrap(probs.max(1), probs.argmax(1), labels, 3, 2, Identity())  # type: ignore[arg-type]
    assert b["ece"][0] == pytest.approx(expected_calibration_error(probs, labels), abs=1e-9)
    assert b["macro_f1"][0] == pytest.approx(classification_report(labels, probs, CLASSES)["macro_f1"])


def test_worst_group_and_gap() -> None:
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(3), 100)
    correct = np.ones(300, bool)
    correct[150:][rng.uniform(size=150) < 0.4] = False  # group B: ~60 % accurate
    groups = Grouping("site", ["A"] * 150 + ["B"] * 150, "test")
    rep = audit_predictions(_probs(labels, correct, rng), labels, groups, CLASSES, n_boot=200, seed=0)
    assert list(rep["groups"]) == ["A", "B"] and rep["groups"]["A"]["accuracy"]["value"] == 1.0
    w = rep["worst_group"]["accuracy"]
    assert w["group"] == "B" and w["value"] == pytest.approx(correct[150:].mean())
    assert rep["gap"]["accuracy"] == pytest.approx(1.0 - correct[150:].mean(), abs=1e-6)
    assert w["vs_overall"] < 0 and rep["overall"]["n"] == 300
    json.dumps(rep)  # JSON-ready


def test_groupings_utm_zone_manifest_column_and_group(geo_manifest: Path) -> None:
    src = ManifestSource(geo_manifest)
    utm = group_samples(src, "utm_zone")
    assert utm.groups == ["29N"] * 4 + ["33S"] * 2 and utm.meta["crs"]["29N"] == "EPSG:32629"
    assert group_samples(src, "region").groups == ["south", "north"] * 3
    assert group_samples(src, "group").groups == ["g0", "g1", "g2"] * 2  # SampleRef.group
    assert group_samples(src.limit(3, seed=0), "region").groups  # subsets keep their rows
    with pytest.raises(ConfigError, match="no column 'season'"):
        group_samples(src, "season")
    assert utm_zone_name(32636) == "36N" and utm_zone_name(3857) == "EPSG:3857"


def test_brightness_quartiles_come_from_the_data(synthetic_root: Path) -> None:
    src = FolderSource(synthetic_root / "test")
    g = group_samples(src, "brightness_quartile")
    counts = {q: g.groups.count(q) for q in set(g.groups)}
    assert set(counts) == {"Q1 darkest", "Q2", "Q3", "Q4 brightest"}
    assert max(counts.values()) - min(counts.values()) <= 1
    b = np.array([src.read(i).mean() for i in range(len(src))])
    q1 = b[[x == "Q1 darkest" for x in g.groups]]
    q4 = b[[x == "Q4 brightest" for x in g.groups]]
    assert q1.max() < q4.min() and g.meta["edges"][0] == pytest.approx(b.min(), abs=1e-3)


def test_utm_zone_needs_georeferenced_chips(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a" / "x.png")
    with pytest.raises(ConfigError, match="no CRS"):
        group_samples(FolderSource(tmp_path), "utm_zone")
    with pytest.raises(ConfigError, match="not one of"):
        group_samples(FolderSource(tmp_path), "season")


def test_vision_audit_command(geo_manifest: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = NormalizedClassifier(get_model("resnet18", 3, weights="none"), [100.0] * 3, [50.0] * 3)
    ck = tmp_path / "best.pt"
    save_checkpoint(ck, {"model": net.state_dict(), "architecture": "resnet18", "classes": CLASSES,
                         "bands": ["B04", "B03", "B02"], "mean": [100.0] * 3, "std": [50.0] * 3,
                         "input_size": [16, 16], "temperature": 1.5})
    out = tmp_path / "audit.json"
    code, text = run_cli("audit", str(ck), str(geo_manifest), "--group-by", "utm_zone", "--json", str(out),
                         "--n-boot", "200")
    assert code == 0, text
    assert "29N" in text and "33S" in text and "worst group by accuracy" in text
    rep = json.loads(out.read_text())
    assert set(rep["groups"]) == {"29N", "33S"} and rep["temperature"] == 1.5
    assert rep["groups"]["29N"]["n"] == 4 and rep["bootstrap"]["n_boot"] == 200
    code, text = run_cli("audit", str(ck), str(geo_manifest), "--group-by", "season")
    assert code == 2 and "season" in text


@pytest.mark.data
def test_eurosat_ms_utm_zones(data_dir: Path) -> None:
    src = FolderSource(data_dir / "eurosat-ms" / "test")
    zones = set(group_samples(src, "utm_zone").groups)
    assert zones and zones <= {f"{z}N" for z in range(29, 37)}
