"""int8 export: static quantization of a trained run, checked against its float graph."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests.cli_runner import run_vision
from training.checkpoint import InferenceCheckpoint
from training.evaluate import evaluate
from training.export.command import export_checkpoint
from training.quantize import MIN_AGREEMENT, quantize_model
from vision.contracts.model import read_model_file
from vision.data import FolderSource
from vision.errors import ConfigError, ParityError
from vision.metrics import softmax
from vision.models import NormalizedClassifier, get_model

CLASSES = ["Cropland", "Forest", "Urban", "Water"]


def _chips(root: Path, classes: list[str]) -> np.ndarray:
    src = FolderSource(root, classes)
    return np.stack([src.read(i).transpose(2, 0, 1).astype(np.float32) for i in range(len(src))])


def test_int8_export_keeps_the_contract_and_the_answers(trained_run: Path, synthetic_root: Path,
                                                        tmp_path: Path) -> None:
    """A d8 run quantized to int8: same inputs, metadata and views, integer convolutions, under
    half the size, and the answers of the float model kept, at the default bar (98 % of the check
    chips keep their top-1 class). The run is trained to a confident model (3 epochs, all
    validation chips right), so a near tie cannot decide the outcome; what quantization does
    promise, an approximation of the float function, is checked on the test split too."""
    out = tmp_path / "int8.onnx"
    diff, q = export_checkpoint(trained_run, out, int8=True, n_calibration=64, progress=False)
    assert diff <= 1e-4 and q is not None
    assert q.n_calibration == 64 and q.n_check == 32 and q.agreement >= MIN_AGREEMENT
    assert q.accuracy_float is not None and q.accuracy_int8 is not None
    assert q.accuracy_int8 >= q.accuracy_float - 1 / q.n_check
    assert q.size_int8 < q.size_float / 2

    float_meta, meta = read_model_file(trained_run / "model.onnx").metadata, read_model_file(out).metadata
    assert meta.precision == "int8" and float_meta.precision == "fp32"
    assert meta.quantization is not None and meta.quantization["calibration_chips"] == 64
    assert meta.quantization["calibration_data"].endswith(":train")
    for key in ("classes", "bands", "input_size", "mean", "std", "temperature", "tta", "thresholds"):
        assert getattr(meta, key) == getattr(float_meta, key), key
    graph = onnx.load(str(out)).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["DequantizeLinear"] > ops["Conv"] > 0 and ops["QuantizeLinear"] > 0
    assert graph.input[0].name == "pixels" and graph.input[0].type.tensor_type.elem_type == 1  # float

    # Held-out chips the quantizer never saw: uncalibrated probabilities stay within a few
    # quantization steps of the float model's (a wrong scale or a saturated product would
    # move them by tenths), and every top-1 class is kept.
    x = _chips(synthetic_root / "test", list(float_meta.classes))
    pf = softmax(ort.InferenceSession(str(trained_run / "model.onnx")).run(["logits"], {"pixels": x})[0])
    pq = softmax(ort.InferenceSession(str(out)).run(["logits"], {"pixels": x})[0])
    assert float(np.abs(pf - pq).max()) < 0.05
    assert np.array_equal(pf.argmax(1), pq.argmax(1))

    # Any consumer runs it unchanged: `vision evaluate` on the test split, as the float model.
    test = str(synthetic_root / "test")
    rep_f, probs_f, _ = evaluate(str(trained_run / "model.onnx"), test)
    rep_q, probs_q, _ = evaluate(str(out), test)
    assert np.array_equal(probs_f.argmax(1), probs_q.argmax(1))
    assert rep_q["accuracy"] == rep_f["accuracy"]

    with pytest.raises(ConfigError, match="exclude each other"):
        export_checkpoint(trained_run, tmp_path / "x.onnx", fp16=True, int8=True)
    assert json.loads((trained_run / "metrics.json").read_text())["status"] == "complete"


def test_an_int8_refusal_says_how_far_off_and_what_to_do(trained_run: Path, synthetic_root: Path,
                                                         tmp_path: Path) -> None:
    """Refused: nothing is written, and the message gives the agreement against the bar, the
    float and int8 accuracies, and the option that moves the bar."""
    classes = list(read_model_file(trained_run / "model.onnx").metadata.classes)
    x = _chips(synthetic_root / "val", classes)
    labels = FolderSource(synthetic_root / "val", classes).labels()
    refused = tmp_path / "refused.onnx"
    with pytest.raises(ParityError) as info:
        # A bar above 100 %, which no quantized model meets.
        quantize_model(trained_run / "model.onnx", refused, x[:16], x, labels, min_agreement=1.01)
    msg = str(info.value)
    assert "changes the top-1 class" in msg and "< the required 101.00%" in msg
    assert "accuracy on them: float 100.00%, int8" in msg and "--min-agreement" in msg
    assert not refused.exists() and not list(tmp_path.iterdir())


def test_int8_export_is_quiet_unless_verbose(synthetic_root: Path, tmp_path: Path) -> None:
    """ONNX Runtime's quantizer logs dozens of INFO lines on EfficientNet-Lite0 (shared biases,
    rescaled weights); `vision export --int8` shows them only with `-v`, and says what it is
    doing either way. The weights are random: the log, not the answers, is the subject."""
    torch.manual_seed(0)
    bands = ["B02", "B03", "B04", "B08", "B11", "B12"]
    net = NormalizedClassifier(get_model("efficientnet_lite0", 4, 6, "none", band_names=bands),
                               [1000.0] * 6, [500.0] * 6)
    ck = tmp_path / "best.pt"
    InferenceCheckpoint(net.state_dict(), "efficientnet_lite0", CLASSES, bands, [1000.0] * 6, [500.0] * 6,
                        input_size=(32, 32)).save(ck)
    args = ["export", str(ck), "--int8", "--calibration-chips", "16", "--min-agreement", "0",
            "--data", str(synthetic_root / "val"), "--calibration", str(synthetic_root / "train"), "--no-progress"]
    quiet = run_vision(*args, "--out", str(tmp_path / "q.onnx"), cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert "INFO root" not in quiet.stderr and "Created a copy of bias" not in quiet.stderr
    assert "quantizing to int8" in quiet.stderr and "int8: calibrated on 16 chips" in quiet.stdout
    loud = run_vision("-v", *args, "--out", str(tmp_path / "v.onnx"), cwd=tmp_path)
    assert loud.returncode == 0, loud.stderr[-3000:]
    assert loud.stderr.count("INFO root") > 10
