"""`vision evaluate`: metrics of a checkpoint, run folder or ONNX model on labelled data."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.checkpoint import InferenceCheckpoint
from training.loop import predict
from vision.contracts.model import read_model_file
from vision.data import ChipSource, open_data_spec
from vision.data.dataset import ChipDataset
from vision.errors import ConfigError
from vision.metrics import classification_report, softmax
from vision.model_uri import is_registry_uri, resolve_model
from vision.models import NormalizedClassifier

OnBatch = Callable[[int], None]


@dataclass
class LoadedModel:
    """A model from any of the forms we accept, with what is needed to run it."""

    classes: list[str]
    bands: list[str]
    temperature: float
    predict_logits: Any  # (ChipSource, batch_size, on_batch=None) -> (logits, labels)
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


def load_checkpoint_model(path: Path) -> tuple[NormalizedClassifier, InferenceCheckpoint]:
    """Rebuild the `NormalizedClassifier` an inference checkpoint (``best.pt``) was saved from.

    Raises:
        CheckpointError: the file is not a readable inference checkpoint.
    """
    ck = InferenceCheckpoint.load(path)
    return ck.build_model(path), ck


def load_any(model: str) -> LoadedModel:
    """A checkpoint, run folder, ONNX file or registered version, ready to predict."""
    with model_path(model) as path:
        return _load_path(path)


def _load_path(path: Path) -> LoadedModel:
    if path.suffix == ".onnx":
        import onnxruntime as ort

        meta = read_model_file(path).metadata  # checks the contract and external data
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run_onnx(src: ChipSource, bs: int, on_batch: OnBatch | None = None) -> tuple[np.ndarray, np.ndarray]:
            loader = torch.utils.data.DataLoader(ChipDataset(src), batch_size=bs, num_workers=1)
            outs, labels = [], []
            for x, y in loader:
                outs.append(sess.run(["logits"], {"pixels": x.numpy()})[0])
                labels.append(y.numpy())
                if on_batch is not None:
                    on_batch(len(y))
            return np.concatenate(outs), np.concatenate(labels)

        return LoadedModel(list(meta.classes), list(meta.bands), meta.temperature, run_onnx, "onnx")
    net, ck = load_checkpoint_model(path)

    def run_torch(src: ChipSource, bs: int, on_batch: OnBatch | None = None) -> tuple[np.ndarray, np.ndarray]:
        loader = torch.utils.data.DataLoader(ChipDataset(src), batch_size=bs, num_workers=1)
        return predict(net, loader, torch.device("cpu"), on_batch=on_batch)

    return LoadedModel(ck.classes, ck.bands, ck.temperature, run_torch, "checkpoint")


def load_with_data(model: str, data: str) -> tuple[LoadedModel, ChipSource]:
    """`load_any` ``model`` and open ``data`` (any dataset spec) in the model's class order.

    Raises:
        ConfigError: the data's classes or band count are not the model's.
    """
    m = load_any(model)
    src = open_data_spec(data, classes=m.classes)
    if src.classes != m.classes:
        raise ConfigError(f"data classes {src.classes} differ from the model's {m.classes}")
    if src.bands and len(src.bands) != len(m.bands):
        raise ConfigError(f"data has {len(src.bands)} bands, the model takes {len(m.bands)} {m.bands}")
    return m, src


def evaluate(model: str, data: str, batch_size: int = 256, progress: bool = False
             ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Report (accuracy, macro-F1, per-class, confusion, ECE) plus calibrated probs and labels.

    Args:
        progress: show a progress bar over the chips (`training.progress`).
    """
    m, src = load_with_data(model, data)
    if progress:
        from training.progress import Reporter

        with Reporter().bar(f"predicting {data}", len(src)) as advance:
            logits, labels = m.predict_logits(src, batch_size, advance)
    else:
        logits, labels = m.predict_logits(src, batch_size)
    probs = softmax(logits, m.temperature)
    rep = classification_report(labels, probs, m.classes)
    rep["ece_uncalibrated"] = classification_report(labels, softmax(logits), m.classes)["ece"]
    rep["model"] = model
    rep["data"] = data
    rep["kind"] = m.kind
    return rep, probs, labels
