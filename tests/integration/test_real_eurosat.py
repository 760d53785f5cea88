"""Real data where the model is the subject: a short fine-tune on real EuroSAT RGB chips,
then the analyst's batch job on real JPEG chips must agree with `vision evaluate`."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from training.evaluate import evaluate
from training.trainer import run_training
from vision.config import load_experiment
from vision.contracts.model import read_model_file

pytestmark = [pytest.mark.slow, pytest.mark.data]
REPO = Path(__file__).resolve().parents[2]


def _extract_test_chips(data_dir: Path, dest: Path, n: int) -> Path:
    """Write the first ``n`` test chips as ``dest/<Class>/<key>.jpg`` (bytes unchanged)."""
    classes = (data_dir / "eurosat-rgb" / "classes.txt").read_text().split()
    with tarfile.open(data_dir / "eurosat-rgb" / "eurosat-rgb-test-000000.tar.gz", "r|gz") as tar:
        pending: dict[str, bytes] = {}
        written = 0
        for m in tar:
            f = tar.extractfile(m)
            if f is None:
                continue
            key, _, ext = m.name.partition(".")
            pending.setdefault(key, b"")
            if ext == "jpg":
                jpg = f.read()
                pending[key] = jpg
            else:
                label = int(f.read().decode())
                jpg = pending.pop(key)
                (dest / classes[label]).mkdir(parents=True, exist_ok=True)
                (dest / classes[label] / f"{key}.jpg").write_bytes(jpg)
                written += 1
                if written >= n:
                    break
    return dest


def test_short_finetune_on_real_eurosat_then_infer_agrees_with_evaluate(data_dir, mlflow_store, tmp_path):
    cfg = load_experiment(REPO / "experiments" / "eurosat_rgb_lite0.yaml", [
        "data.limit_per_split=1500", "train.epochs=1", "data.num_workers=1", "train.threads=2",
        "model.name=real_smoke"])
    result = run_training(cfg, tmp_path / "run")
    m = result.metrics
    # ImageNet Lite0, one epoch on 1,500 real chips: far above chance (10 %).
    assert m["test"]["accuracy"] >= 0.75, m["test"]
    meta = read_model_file(tmp_path / "run" / "model.onnx").metadata
    assert meta.bands == ("B04", "B03", "B02") and len(meta.classes) == 10

    chips = _extract_test_chips(data_dir, tmp_path / "chips", 400)
    job = tmp_path / "job"
    r = subprocess.run([sys.executable, "-m", "vision.cli", "infer", str(chips), "--model",
                        str(tmp_path / "run" / "model.onnx"), "--out", str(job), "--no-progress"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    table = pq.read_table(job / "predictions.parquet").to_pandas()
    assert len(table) == 400 and (table["status"] == "ok").all()
    truth = table["path"].map(lambda p: Path(p).parent.name)
    acc_infer = float((table["class_name"] == truth).mean())
    rep, probs, labels = evaluate(str(tmp_path / "run" / "model.onnx"), str(chips))
    assert acc_infer == pytest.approx(rep["accuracy"], abs=1e-9)
    # Same calibrated confidences: the sorted confidence vectors agree.
    assert np.allclose(np.sort(table["confidence"].to_numpy()), np.sort(probs.max(axis=1)), atol=1e-5)
