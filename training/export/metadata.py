"""The `ModelMetadata` an exported graph carries, from the checkpoint it is exported from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from training.checkpoint import InferenceCheckpoint
from vision.contracts.model import ModelMetadata, read_model_file
from vision.radiometry import Radiometry


@dataclass(frozen=True)
class Identity:
    """Which registered version a model is, and what it was trained on.

    Attributes:
        model_version: registry version ("" before registration).
        mlflow_run_id: the training run ("" without tracking).
        train_data_fingerprint: `vision.data.dataset_fingerprint` of train + val.
    """

    model_version: str = ""
    mlflow_run_id: str = ""
    train_data_fingerprint: str = ""

    @classmethod
    def of_run(cls, run_dir: Path) -> Identity:
        """From the run's exported ``model.onnx``, else its ``metrics.json``, else empty."""
        onnx_path, metrics_path = run_dir / "model.onnx", run_dir / "metrics.json"
        if onnx_path.exists():
            m = read_model_file(onnx_path).metadata
            return cls(m.model_version, m.mlflow_run_id, m.train_data_fingerprint)
        if metrics_path.exists():
            d = json.loads(metrics_path.read_text())
            return cls(str(d.get("model_version") or ""), str(d.get("mlflow_run_id") or ""),
                       str(d.get("train_data_fingerprint") or ""))
        return cls()


def checkpoint_metadata(ck: InferenceCheckpoint, ck_path: Path, identity: Identity,
                        precision: str = "fp32") -> ModelMetadata:
    """The ``vision.*`` metadata of a graph exported from ``ck`` (saved at ``ck_path``).

    Raises:
        ModelFormatError: the checkpoint's values break the contract (e.g. an input size
            out of range): nothing is exported whose metadata disagrees with its graph.
    """
    return ModelMetadata(
        classes=tuple(ck.classes), bands=tuple(ck.bands), input_size=ck.input_size,
        mean=tuple(ck.mean), std=tuple(ck.std), temperature=ck.temperature,
        thresholds=dict(ck.thresholds) or None, architecture=ck.architecture,
        model_name=ck.model_name, model_version=identity.model_version,
        mlflow_run_id=identity.mlflow_run_id, train_data_fingerprint=identity.train_data_fingerprint,
        checkpoint=str(Path(ck_path).resolve()), precision=precision, work_size=ck.work_size,
        tta=ck.tta if ck.tta != "none" else None,
        radiometry=Radiometry.from_obj(ck.radiometry) if ck.radiometry else None, gsd_m=ck.gsd_m)
