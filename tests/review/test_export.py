"""Results out: only human-decided items; the labelled dataset loads as a training set."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import rasterio
import yaml
from cli_runner import run_cli
from sqlalchemy import select

from review.db.engine import Database
from review.db.models import User, utcnow
from review.queue import DecisionInput, claim_next, decide
from vision.config import ExperimentConfig
from vision.data.sources import ManifestSource
from vision.data.spec import open_split


def _review_some(db: Database, job_id: int, n: int = 12) -> dict[int, tuple[str, str | None]]:
    with db.read() as s:
        rev = s.execute(select(User).where(User.name == "rev")).scalar_one()
    plan = ["accept", "correct", "reject"]
    out: dict[int, tuple[str, str | None]] = {}
    for i in range(n):
        with db.write() as s:
            item = claim_next(s, job_id, rev, utcnow(), 300)
            assert item is not None
            d = plan[i % 3]
            cls = "Forest" if item.class_name != "Forest" else "River"
            decide(
                s, item.id, rev, DecisionInput(d, cls if d == "correct" else None, None, item.version), utcnow(), "t"
            )
            out[item.id] = (d, item.class_name if d == "accept" else cls if d == "correct" else None)
    with db.write() as s:  # one more item is claimed but not decided: it must not be exported
        assert claim_next(s, job_id, rev, utcnow(), 300) is not None
    return out


def test_geojson_and_parquet_hold_only_human_decisions(db: Database, job_id: int, tmp_path: Path) -> None:
    decided = _review_some(db, job_id)
    code, out = run_cli(
        "review", "export", str(job_id), "--format", "parquet", "--out", str(tmp_path / "c.parquet"), "--db", db.url
    )
    assert code == 0, out
    rows = pq.read_table(tmp_path / "c.parquet").to_pylist()
    assert {r["item_id"] for r in rows} == set(decided)
    for r in rows:
        assert r["decision"] == decided[r["item_id"]][0] and r["reviewed_class"] == decided[r["item_id"]][1]
        assert r["reviewer"] == "rev" and r["reviewed_at"] and r["model_version"] == "3"
        assert r["input_sha256"] == "a" * 64
    code, out = run_cli(
        "review", "export", str(job_id), "--format", "geojson", "--out", str(tmp_path / "c.geojson"), "--db", db.url
    )
    assert code == 0, out
    doc = json.loads((tmp_path / "c.geojson").read_text())
    assert {f["properties"]["item_id"] for f in doc["features"]} == set(decided)
    lon, lat = doc["features"][0]["geometry"]["coordinates"][0][0] if doc["features"][0]["geometry"] else (9.0, 47.0)
    assert 0 < lon < 20 and 40 < lat < 60, "window bounds are reprojected to WGS 84"
    code, _ = run_cli(
        "review", "export", str(job_id), "--format", "geojson", "--out", str(tmp_path / "c.geojson"), "--db", db.url
    )
    assert code != 0, "an existing output is not overwritten without --overwrite"


def test_export_of_a_job_that_does_not_exist_is_a_clear_error(db: Database, tmp_path: Path) -> None:
    for fmt in ("geojson", "parquet", "dataset"):
        code, out = run_cli("review", "export", "99", "--format", fmt, "--out", str(tmp_path / f"x.{fmt}"),
                            "--db", db.url)
        assert code == 2 and "no job 99" in out, out
        assert "items written" not in out and not (tmp_path / f"x.{fmt}").exists()


def test_dataset_export_says_what_it_skipped(db: Database, job_id: int, tmp_path: Path) -> None:
    decided = _review_some(db, job_id, n=6)
    with db.read() as s:
        from review.db.models import Item

        paths = {s.get(Item, i).path for i in decided}  # type: ignore[union-attr]
    for p in paths:
        Path(p).unlink()  # the inputs were moved away after review
    labelled = sum(1 for _, c in decided.values() if c is not None)
    code, out = run_cli("review", "export", str(job_id), "--format", "dataset", "--out", str(tmp_path / "d"),
                        "--db", db.url)
    assert code == 0, out
    assert "0 items written" in out and f"{labelled} labelled items skipped" in out, out
    assert f"{labelled} x input not read: the file is missing" in out, out


def test_web_export_is_audited_and_for_analysts(client_for: Any, db: Database, job_id: int) -> None:
    decided = _review_some(db, job_id, n=3)
    ana, csrf = client_for("ana")
    r = ana.post(f"/jobs/{job_id}/export/parquet", data={"csrf_token": csrf})
    assert r.status_code == 200 and r.content[:4] == b"PAR1"
    r = ana.post(f"/jobs/{job_id}/export/dataset", data={"csrf_token": csrf})
    assert r.status_code == 200 and r.content[:2] == b"PK"
    rev, rcsrf = client_for("rev")
    assert rev.post(f"/jobs/{job_id}/export/geojson", data={"csrf_token": rcsrf}).status_code == 403
    from review.db.models import AuditEntry

    with db.read() as s:
        exports = s.execute(select(AuditEntry).where(AuditEntry.action == "export")).scalars().all()
    assert len(exports) == 2 and all(e.actor == "ana" for e in exports)
    assert json.loads(exports[0].after)["items"] == len(decided)


def test_dataset_export_loads_as_a_manifest_dataset(db: Database, job_id: int, tmp_path: Path) -> None:
    decided = _review_some(db, job_id, n=15)
    labelled = {k: v for k, v in decided.items() if v[1] is not None}
    out = tmp_path / "dataset"
    code, text = run_cli("review", "export", str(job_id), "--format", "dataset", "--out", str(out), "--db", db.url)
    assert code == 0, text
    src = ManifestSource(out / "manifest.csv")
    skipped = (out / "skipped.csv").read_text().splitlines()[1:] if (out / "skipped.csv").exists() else []
    assert len(src) + len(skipped) == len(labelled)
    assert all("3 bands, the dataset has 4" in line for line in skipped), "RGB chips beside a 4-band scene"
    if skipped:  # the command says how many were left out and why, not only in skipped.csv
        assert f"{len(skipped)} labelled items skipped" in text and "3 bands, the dataset has 4" in text, text
    assert set(src.classes) <= {c for _, c in labelled.values() if c}
    chip = src.read(0)
    assert chip.dtype == np.uint16 and chip.shape[-1] == 4, "raw values, all bands"
    with rasterio.open(src.refs[0].path) as ds:
        assert ds.crs.to_epsg() == 32632 and ds.descriptions == ("B02", "B03", "B04", "B08")
    assert src.bands == ["B02", "B03", "B04", "B08"]
    # what a recipe's data section points at
    recipe = {
        "data": {"source": "manifest", "root": str(out), "train": "manifest.csv", "val": "manifest.csv", "test": None},
        "model": {"architecture": "tiny_cnn", "name": "reviewed", "weights": "none", "input_size": [32, 32]},
        "train": {"epochs": 1, "batch_size": 4, "device": "cpu", "max_steps_per_epoch": 1},
    }
    cfg = ExperimentConfig.model_validate(recipe)
    train = open_split(cfg.data.source, cfg.data.train, root=cfg.data.root)
    assert len(train) == len(src)
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))


def _vision_train_available() -> bool:
    if os.environ.get("VISION_TEST_SKIP_TRAIN"):
        return False
    r = subprocess.run([sys.executable, "-m", "vision.cli", "train", "--help"], capture_output=True, timeout=120)
    return r.returncode == 0


@pytest.mark.slow
def test_exported_dataset_trains_with_vision_train(db: Database, job_id: int, tmp_path: Path) -> None:
    if not _vision_train_available():
        pytest.skip("`vision train` is not available yet")
    _review_some(db, job_id, n=15)
    out = tmp_path / "dataset"
    code, text = run_cli("review", "export", str(job_id), "--format", "dataset", "--out", str(out), "--db", db.url)
    assert code == 0, text
    recipe = {
        "data": {"source": "manifest", "root": str(out), "train": "manifest.csv", "val": "manifest.csv", "test": None},
        "model": {
            "architecture": "tiny_cnn",
            "name": "reviewed-test",
            "weights": "none",
            "input_size": [32, 32],
        },
        "train": {"epochs": 1, "batch_size": 4, "device": "cpu", "max_steps_per_epoch": 2, "amp": False},
        "calibration": {"temperature_scaling": False},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    r = subprocess.run(
        [sys.executable, "-m", "vision.cli", "train", str(tmp_path / "recipe.yaml"), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (tmp_path / "run" / "metrics.json").exists()
    shutil.rmtree(tmp_path / "run", ignore_errors=True)
