"""`vision export`: ONNX from a checkpoint or run folder, with the parity check."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from training.evaluate import load_checkpoint_model
from training.export import build_metadata, export_onnx, read_metadata
from vision.config import load_experiment
from vision.data import ChipDataset, open_data_spec, open_split
from vision.errors import ConfigError


def export_checkpoint(source: Path, out: Path, fp16: bool = False, data: str | None = None,
                      n_parity: int = 256) -> float:
    """Export ``source`` (``.pt`` or a run folder) to ``out``; returns the parity difference."""
    run_dir = source if source.is_dir() else source.parent.parent
    ck_path = source / "checkpoints" / "best.pt" if source.is_dir() else source
    if not ck_path.exists():
        raise ConfigError(f"no checkpoint at {ck_path}")
    model, ck = load_checkpoint_model(ck_path)
    if data is not None:
        src = open_data_spec(data, classes=ck["classes"])
    elif (run_dir / "config.yaml").exists():
        cfg = load_experiment(run_dir / "config.yaml")
        src = open_split(cfg.data.source, cfg.data.val, cfg.data.root, cfg.data.bands, ck["classes"])
    else:
        raise ConfigError("no run folder around the checkpoint: give --data for parity samples")
    ds = ChipDataset(src)
    x = torch.stack([ds[i][0] for i in range(min(len(ds), n_parity))])
    previous = read_metadata(run_dir / "model.onnx") if (run_dir / "model.onnx").exists() else {}
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}
    meta = build_metadata(
        classes=ck["classes"], bands=ck["bands"], input_size=ck["input_size"], mean=ck["mean"],
        std=ck["std"], temperature=float(ck.get("temperature", 1.0)),
        architecture=ck["architecture"], model_name=ck.get("model_name", ""),
        model_version=str(previous.get("model_version", metrics.get("model_version", ""))),
        mlflow_run_id=str(previous.get("mlflow_run_id", metrics.get("mlflow_run_id", ""))),
        train_data_fingerprint=str(previous.get("train_data_fingerprint",
                                                metrics.get("train_data_fingerprint", ""))),
        checkpoint=str(ck_path.resolve()), thresholds=ck.get("thresholds") or None,
        precision="fp16" if fp16 else "fp32", work_size=ck.get("work_size"),
        tta=ck.get("tta") if ck.get("tta", "none") != "none" else None)
    return export_onnx(model, out, meta, x, temperature=float(ck.get("temperature", 1.0)), fp16=fp16)
