"""`vision export`: ONNX from a checkpoint or run folder, with the parity check."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from training.evaluate import load_checkpoint_model
from training.export import export_onnx
from training.quantize import MIN_AGREEMENT, QuantReport, quantization_metadata, quantize_model
from vision.config import load_experiment
from vision.contracts.model import ModelMetadata, read_model_file
from vision.data import ChipDataset, open_data_spec, open_split
from vision.errors import ConfigError


def _stack(ds: ChipDataset, n: int) -> tuple[torch.Tensor, np.ndarray]:
    """``n`` chips spread evenly over ``ds`` (every class of a split sorted by class)."""
    idx = np.linspace(0, len(ds) - 1, num=min(n, len(ds))).round().astype(int)
    items = [ds[int(i)] for i in np.unique(idx)]
    return torch.stack([x for x, _ in items]), np.array([y for _, y in items])


def export_checkpoint(source: Path, out: Path, fp16: bool = False, data: str | None = None,
                      n_parity: int = 256, int8: bool = False, calibration: str | None = None,
                      n_calibration: int = 512, n_check: int = 1000,
                      min_agreement: float = MIN_AGREEMENT) -> tuple[float, QuantReport | None]:
    """Export ``source`` (``.pt`` or a run folder) to ``out``.

    Returns the parity difference of the float graph against PyTorch and, with ``int8``,
    how the quantized model compares with that float graph (`training.quantize`):
    calibrated on ``n_calibration`` chips of the training split (or ``calibration``),
    checked on ``n_check`` chips of the validation split (or ``data``), refused when fewer
    than ``min_agreement`` of them keep their top-1 class.
    """
    if fp16 and int8:
        raise ConfigError("--fp16 and --int8 exclude each other: fp16 is for GPUs, int8 for CPUs")
    run_dir = source if source.is_dir() else source.parent.parent
    ck_path = source / "checkpoints" / "best.pt" if source.is_dir() else source
    if not ck_path.exists():
        raise ConfigError(f"no checkpoint at {ck_path}")
    model, ck = load_checkpoint_model(ck_path)
    cfg = load_experiment(run_dir / "config.yaml") if (run_dir / "config.yaml").exists() else None
    if data is not None:
        src = open_data_spec(data, classes=ck["classes"])
    elif cfg is not None:
        src = open_split(cfg.data.source, cfg.data.val, cfg.data.root, cfg.data.bands, ck["classes"])
    else:
        raise ConfigError("no run folder around the checkpoint: give --data for parity samples")
    ds = ChipDataset(src)
    x = torch.stack([ds[i][0] for i in range(min(len(ds), n_parity))])
    prev = read_model_file(run_dir / "model.onnx").metadata if (run_dir / "model.onnx").exists() else None
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").exists() else {}

    def identity(key: str) -> str:
        """From the run's exported model, else its metrics.json."""
        return str(getattr(prev, key) if prev is not None else metrics.get(key) or "")

    meta = ModelMetadata(
        classes=tuple(ck["classes"]), bands=tuple(ck["bands"]), input_size=tuple(ck["input_size"]),
        mean=tuple(ck["mean"]), std=tuple(ck["std"]), temperature=float(ck.get("temperature", 1.0)),
        architecture=ck["architecture"], model_name=ck.get("model_name", ""),
        model_version=identity("model_version"), mlflow_run_id=identity("mlflow_run_id"),
        train_data_fingerprint=identity("train_data_fingerprint"),
        checkpoint=str(ck_path.resolve()), thresholds=ck.get("thresholds") or None,
        precision="fp16" if fp16 else "fp32",
        work_size=tuple(ck["work_size"]) if ck.get("work_size") else None,
        tta=ck.get("tta") if ck.get("tta", "none") != "none" else None)
    temperature = float(ck.get("temperature", 1.0))
    if not int8:
        return export_onnx(model, out, meta, x, temperature=temperature, fp16=fp16), None

    if calibration is not None:
        cal_src, cal_name = open_data_spec(calibration, classes=ck["classes"]), calibration
    elif cfg is not None:
        cal_src = open_split(cfg.data.source, cfg.data.train, cfg.data.root, cfg.data.bands,
                             ck["classes"])
        cal_name = f"{cfg.data.source}:{cfg.data.train}"
    else:
        raise ConfigError("no run folder around the checkpoint: give --calibration for int8")
    cal, _ = _stack(ChipDataset(cal_src), n_calibration)
    chk, chk_labels = _stack(ds, n_check)
    with tempfile.TemporaryDirectory(prefix="vision-export-") as tmp:
        float_path = Path(tmp) / "float.onnx"
        diff = export_onnx(model, float_path, meta, x, temperature=temperature)
        report = quantize_model(
            float_path, out, cal.numpy(), chk.numpy(), chk_labels, temperature=temperature,
            metadata=quantization_metadata(len(cal), cal_name), min_agreement=min_agreement)
    return diff, report
