"""`vision evaluate`: metrics of a checkpoint, run folder or ONNX model on labelled data."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.checkpoint import load_checkpoint
from training.loop import predict
from vision.contracts.model import read_model_file
from vision.data import ChipSource, open_data_spec
from vision.data.dataset import ChipDataset
from vision.errors import ConfigError, ModelFormatError
from vision.metrics import classification_report, softmax
from vision.model_uri import is_registry_uri, resolve_model
from vision.models import NormalizedClassifier, get_model


@dataclass
class LoadedModel:
    """A model from any of the forms we accept, with what is needed to run it."""

    classes: list[str]
    bands: list[str]
    temperature: float
    predict_logits: Any  # (ChipSource, batch_size) -> (logits, labels)
    kind: str


@contextlib.contextmanager
def model_path(model: str) -> Iterator[Path]:
    """A local file for ``model``: an ``.onnx``/``.pt`` file, a run folder (its
    ``checkpoints/best.pt``, else ``model.onnx``), or ``models:/NAME@ALIAS`` /
    ``models:/NAME/VERSION`` (downloaded for the duration of the block)."""
    if is_registry_uri(model):
        with resolve_model(model) as p:
            yield p
        return
    yield _local_model_path(model)


def _local_model_path(model: str) -> Path:
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
    """A checkpoint, run folder, ONNX file or registered version, ready to predict."""
    with model_path(model) as path:
        return _load_path(path)


def _load_path(path: Path) -> LoadedModel:
    if path.suffix == ".onnx":
        import onnxruntime as ort

        meta = read_model_file(path).metadata  # checks the contract and external data
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run_onnx(src: ChipSource, bs: int) -> tuple[np.ndarray, np.ndarray]:
            loader = torch.utils.data.DataLoader(ChipDataset(src), batch_size=bs, num_workers=1)
            outs, labels = [], []
            for x, y in loader:
                outs.append(sess.run(["logits"], {"pixels": x.numpy()})[0])
                labels.append(y.numpy())
            return np.concatenate(outs), np.concatenate(labels)

        return LoadedModel(list(meta.classes), list(meta.bands), meta.temperature, run_onnx, "onnx")
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
