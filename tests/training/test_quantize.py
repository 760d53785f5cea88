"""int8 export: static quantization of a trained run, checked against its float graph."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import onnx
import pytest

from training.evaluate import evaluate
from training.exporting import export_checkpoint
from training.quantize import quantize_model
from training.trainer import run_training
from vision.config import load_experiment
from vision.contracts.model import read_model_file
from vision.data import FolderSource
from vision.errors import ConfigError, ParityError


def test_int8_export_keeps_the_contract_and_the_answers(tiny_recipe, mlflow_store, synthetic_root,
                                                        tmp_path):
    """A d8 run quantized to int8: same inputs, metadata and views, integer convolutions,
    a quarter of the size, and the top-1 class of the validation chips kept (a two-epoch
    model on 32 chips has many near ties, so the bar is 90 % here; the default is 98 %)."""
    run = tmp_path / "run"
    run_training(load_experiment(tiny_recipe(train__epochs=2, model__tta="d8")), run)
    out = tmp_path / "int8.onnx"
    diff, q = export_checkpoint(run, out, int8=True, n_calibration=64, min_agreement=0.9)
    assert diff <= 1e-4 and q is not None
    assert q.n_calibration == 64 and q.n_check > 0 and q.agreement >= 0.9
    assert q.size_int8 < q.size_float / 2

    float_meta, meta = read_model_file(run / "model.onnx").metadata, read_model_file(out).metadata
    assert meta.precision == "int8" and float_meta.precision == "fp32"
    assert meta.quantization is not None and meta.quantization["calibration_chips"] == 64
    assert meta.quantization["calibration_data"].endswith(":train")
    for key in ("classes", "bands", "input_size", "mean", "std", "temperature", "tta", "thresholds"):
        assert getattr(meta, key) == getattr(float_meta, key), key
    graph = onnx.load(str(out)).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["DequantizeLinear"] > ops["Conv"] > 0 and ops["QuantizeLinear"] > 0
    assert graph.input[0].name == "pixels" and graph.input[0].type.tensor_type.elem_type == 1  # float

    # Any consumer runs it unchanged: `vision evaluate` on the test split, close to float.
    test = str(synthetic_root / "test")
    rep_f, probs_f, _ = evaluate(str(run / "model.onnx"), test)
    rep_q, probs_q, _ = evaluate(str(out), test)
    assert float((probs_f.argmax(1) == probs_q.argmax(1)).mean()) >= 0.9
    assert abs(rep_q["accuracy"] - rep_f["accuracy"]) <= 0.1

    with pytest.raises(ConfigError, match="exclude each other"):
        export_checkpoint(run, tmp_path / "x.onnx", fp16=True, int8=True)

    # A quantization that changes too many answers is refused, and nothing is written.
    src = FolderSource(synthetic_root / "val", list(float_meta.classes))
    x = np.stack([src.read(i).transpose(2, 0, 1).astype(np.float32) for i in range(len(src))])
    refused = tmp_path / "refused.onnx"
    with pytest.raises(ParityError, match="changes the top-1 class"):
        # A bar above 100 %, which no quantized model meets.
        quantize_model(run / "model.onnx", refused, x[:16], x,
                       temperature=float_meta.temperature, min_agreement=1.01)
    assert not refused.exists() and not [p for p in tmp_path.iterdir() if "refused" in p.name]
    assert json.loads((run / "metrics.json").read_text())["status"] == "complete"
