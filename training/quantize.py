"""int8 models for the CPU: static quantization of an exported float model, checked.

ONNX Runtime's static quantizer rewrites the float graph with QuantizeLinear/DequantizeLinear
pairs (QDQ); the CPU provider then runs convolutions and the classifier in integers:

- weights: int8, one scale per output channel (depthwise filters differ by orders of
  magnitude, one scale per tensor would flatten the small ones);
- activations: uint8, one scale per tensor, from the min/max each reaches on calibration
  chips (raw pixels from the training split, run through the float model);
- ``reduce_range``: weights use 7 bits. x86 CPUs without VNNI (AVX2 only, like the machines
  this project is built on) multiply uint8 by int8 with an instruction that saturates at
  16 bits; 7-bit weights keep it from overflowing.

The graph keeps its float32 raw-pixel input, normalisation, test-time views and ``vision.*``
metadata (``precision = int8``), so every consumer runs it unchanged. A quantized model
only approximates the float one, so the result is checked on held-out chips: the share of
chips whose top-1 class is unchanged must reach `MIN_AGREEMENT`, or nothing is written.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from vision.atomic import write_bytes_atomic
from vision.contracts.model import ModelMetadata, set_onnx_props
from vision.errors import ParityError
from vision.metrics import softmax

#: The least share of check chips whose top-1 class the int8 model must keep.
MIN_AGREEMENT = 0.98
#: Calibration chips per batch (the float model's memory while calibrating).
_CALIB_BATCH = 16


@dataclass(frozen=True)
class QuantReport:
    """How the int8 model compares with the float one on the check chips.

    Attributes:
        n_calibration: chips whose activation ranges set the scales.
        n_check: held-out chips compared.
        agreement: share of check chips with the same top-1 class.
        max_prob_diff: largest difference of a calibrated probability.
        accuracy_float, accuracy_int8: top-1 accuracy on the check chips (labels given).
        size_float, size_int8: file sizes in bytes.
    """

    n_calibration: int
    n_check: int
    agreement: float
    max_prob_diff: float
    accuracy_float: float | None
    accuracy_int8: float | None
    size_float: int
    size_int8: int


class _Chips:
    """ONNX Runtime's calibration reader protocol over an ``N x C x H x W`` array."""

    def __init__(self, x: np.ndarray, input_name: str):
        self._x = x
        self._name = input_name
        self._next = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        s = self._next
        if s >= len(self._x):
            return None
        self._next = s + _CALIB_BATCH
        return {self._name: self._x[s: s + _CALIB_BATCH]}

    def rewind(self) -> None:  # part of the protocol; calibration reads once
        self._next = 0


class _DropOrtInfo(logging.Filter):
    """Drops ONNX Runtime's INFO/DEBUG records (its quantizer logs dozens per model)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or "onnxruntime" not in record.pathname


@contextlib.contextmanager
def _quiet_onnxruntime() -> Iterator[None]:
    """Silence ONNX Runtime's quantization INFO lines unless debug logging is on (``-v``).

    They are logged with ``logging.info`` on the root logger, so the filter goes on the root
    handlers (and on the root logger itself, for handlers added while quantizing)."""
    root = logging.getLogger()
    if root.getEffectiveLevel() <= logging.DEBUG:
        yield
        return
    quiet = _DropOrtInfo()
    handlers = list(root.handlers)
    for h in handlers:
        h.addFilter(quiet)
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)
        for h in handlers:
            h.removeFilter(quiet)


def _predict(model: bytes, x: np.ndarray, temperature: float) -> np.ndarray:
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return np.concatenate([softmax(sess.run(["logits"], {"pixels": x[s: s + 64]})[0], temperature)
                           for s in range(0, len(x), 64)])


def quantize_model(float_model: Path, out: Path, calibration: np.ndarray, check: np.ndarray,
                   check_labels: np.ndarray | None = None, *, temperature: float = 1.0,
                   metadata: dict[str, Any] | None = None,
                   min_agreement: float = MIN_AGREEMENT) -> QuantReport:
    """Quantize ``float_model`` to int8 into ``out`` (atomically) and check it.

    Args:
        float_model: an exported float32 model (raw pixels in, ``vision.*`` metadata).
        out: destination ``.onnx``.
        calibration: raw-pixel chips ``N x C x H x W`` (float32) that set activation scales;
            a few hundred from the training split cover the ranges.
        check: held-out raw-pixel chips the int8 model is compared on.
        check_labels: their labels, to report accuracy (optional).
        temperature: applied to both models' logits before comparing probabilities.
        metadata: `ModelMetadata` fields to change from the float model's (e.g.
            `quantization_metadata`).
        min_agreement: least share of check chips with an unchanged top-1 class.

    Raises:
        ParityError: the int8 model changes the top-1 class of too many check chips.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if len(calibration) == 0 or len(check) == 0:
        raise ValueError("int8 quantization needs calibration and check chips")
    float_bytes = float_model.read_bytes()
    with tempfile.TemporaryDirectory(prefix="vision-int8-") as tmp_s:
        tmp = Path(tmp_s)
        pre, q = tmp / "pre.onnx", tmp / "int8.onnx"
        with _quiet_onnxruntime():
            # Shape inference and constant folding first, as ONNX Runtime's quantizer expects.
            quant_pre_process(str(float_model), str(pre), skip_symbolic_shape=True)
            quantize_static(
                str(pre), str(q), _Chips(np.ascontiguousarray(calibration, np.float32), "pixels"),
                quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
        proto = onnx.load(str(q))
    meta = ModelMetadata.from_onnx(onnx.load_model_from_string(float_bytes), str(float_model)).with_(**(metadata or {}))
    set_onnx_props(proto, meta)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()

    x = np.ascontiguousarray(check, np.float32)
    ref = _predict(float_bytes, x, temperature)
    got = _predict(data, x, temperature)
    agreement = float((ref.argmax(1) == got.argmax(1)).mean())
    acc_f = acc_q = None
    if check_labels is not None:
        acc_f = float((ref.argmax(1) == check_labels).mean())
        acc_q = float((got.argmax(1) == check_labels).mean())
    report = QuantReport(len(calibration), len(x), agreement, float(np.abs(ref - got).max()),
                         acc_f, acc_q, len(float_bytes), len(data))
    if not agreement >= min_agreement:
        acc = (f"; accuracy on them: float {acc_f:.2%}, int8 {acc_q:.2%}"
               if acc_f is not None and acc_q is not None else "")
        raise ParityError(
            f"int8 model changes the top-1 class of {1 - agreement:.1%} of {len(x)} check chips: "
            f"agreement with the float model {agreement:.2%} < the required {min_agreement:.2%}{acc}. "
            "Nothing was written: keep the float model, or, if that accuracy is acceptable, lower the "
            f"bar with --min-agreement {max(np.floor(agreement * 100) / 100, 0.0):.2f}"
        )
    write_bytes_atomic(out, data)
    return report


def quantization_metadata(n_calibration: int, source: str) -> dict[str, Any]:
    """The `ModelMetadata` fields an int8 model changes from the float model's."""
    info: dict[str, Any] = {
        "method": "static QDQ (ONNX Runtime), int8 per-channel weights (7-bit range), "
                  "uint8 per-tensor activations, MinMax",
        "calibration_chips": n_calibration,
        "calibration_data": source,
    }
    return {"precision": "int8", "quantization": info}
