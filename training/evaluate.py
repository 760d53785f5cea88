"""`vision evaluate`: metrics of a checkpoint, run folder or ONNX model on labelled data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.checkpoint import load_checkpoint
from training.export import read_metadata
from training.loop import predict
from vision.data import ChipSource, open_data_spec
from vision.data.dataset import ChipDataset
from vision.errors import ConfigError, ModelFormatError
from vision.metrics import classification_report, softmax
from vision.models import NormalizedClassifier, get_model


@dataclass
class LoadedModel:
    """A model from any of the forms we accept, with what is needed to run it."""

    classes: list[str]
    bands: list[str]
    temperature: float
    predict_logits: Any  # (ChipSource, batch_size) -> (logits, labels)
    kind: str


def resolve_model_path(model: str) -> Path:
    """``.onnx``/``.pt`` file, run folder, or ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION``."""
    if model.startswith("models:/"):
        from training import tracking

        tracking.client()  # sets the tracking URI
        import mlflow

        local = Path(mlflow.artifacts.download_artifacts(model))
        found = local / "model.onnx" if local.is_dir() else local
        if not found.exists():
            raise ModelFormatError(f"{model}: no model.onnx in the registered artifacts")
        return found
    p = Path(model)
    if p.is_dir():
        for cand in (p / "checkpoints" / "best.pt", p / "model.onnx"):
            if cand.exists():
                return cand
        raise ConfigError(f"{p}: no checkpoints/best.pt or model.onnx in this folder")
    if not p.exists():
        raise ConfigError(f"model not found: {p}")
    return p


def load_checkpoint_model(path: Path) -> tuple[NormalizedClassifier, dict[str, Any]]:
    """Rebuild the `NormalizedClassifier` a training checkpoint was saved from."""
    ck = load_checkpoint(path)
    if "architecture" not in ck:
        raise ModelFormatError(f"{path}: not an inference checkpoint (use checkpoints/best.pt)")
    backbone = get_model(ck["architecture"], len(ck["classes"]), len(ck["bands"]), "none",
                         band_names=ck["bands"], dropout=ck.get("dropout", 0.2))
    model = NormalizedClassifier(backbone, ck["mean"], ck["std"], ck.get("work_size"),
                                 ck.get("tta", "none"))
    model.load_state_dict(ck["model"])
    return model.eval(), ck


def load_any(model: str) -> LoadedModel:
    path = resolve_model_path(model)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        meta = read_metadata(path)
        if "classes" not in meta:
            raise ModelFormatError(f"{path}: no vision.classes metadata; not exported by vision")
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run_onnx(src: ChipSource, bs: int) -> tuple[np.ndarray, np.ndarray]:
            loader = torch.utils.data.DataLoader(ChipDataset(src), batch_size=bs, num_workers=1)
            outs, labels = [], []
            for x, y in loader:
                outs.append(sess.run(["logits"], {"pixels": x.numpy()})[0])
                labels.append(y.numpy())
            return np.concatenate(outs), np.concatenate(labels)

        return LoadedModel(meta["classes"], meta["bands"], float(meta.get("temperature", 1.0)),
                           run_onnx, "onnx")
    net, ck = load_checkpoint_model(path)

    def run_torch(src: ChipSource, bs: int) -> tuple[np.ndarray, np.ndarray]:
        loader = torch.utils.data.DataLoader(ChipDataset(src), batch_size=bs, num_workers=1)
        return predict(net, loader, torch.device("cpu"))

    return LoadedModel(ck["classes"], ck["bands"], float(ck.get("temperature", 1.0)), run_torch,
                       "checkpoint")


def evaluate(model: str, data: str, batch_size: int = 256) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Report (accuracy, macro-F1, per-class, confusion, ECE) plus calibrated probs and labels."""
    m = load_any(model)
    src = open_data_spec(data, classes=m.classes)
    if src.classes != m.classes:
        raise ConfigError(f"data classes {src.classes} differ from the model's {m.classes}")
    if src.bands and len(src.bands) != len(m.bands):
        raise ConfigError(f"data has {len(src.bands)} bands, the model takes {len(m.bands)} {m.bands}")
    logits, labels = m.predict_logits(src, batch_size)
    probs = softmax(logits, m.temperature)
    rep = classification_report(labels, probs, m.classes)
    rep["ece_uncalibrated"] = classification_report(labels, softmax(logits), m.classes)["ece"]
    rep["model"] = model
    rep["data"] = data
    rep["kind"] = m.kind
    return rep, probs, labels
