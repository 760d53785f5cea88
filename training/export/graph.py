"""The ONNX graph as ARCHITECTURE.md §2 fixes it: raw pixels in, logits out, metadata inside.

The model normalises inside the graph; metadata (``vision.*``) tells any consumer the
classes, bands, input size and calibration; a parity check against the float32 PyTorch
model on real samples runs at every export and fails loudly (and early: a graph that is
off on the first few chips is refused before the rest are run).

fp16: only the network runs in half precision (`training.export.fp16`). The raw pixels
(reflectances up to 10000 lose up to 4 units in float16), the normalisation, the resize and
the average over the test-time views stay float32, and the graph is checked against the
float32 model, the one that was validated. BatchNorm is folded in float32 before rounding,
and the layers whose float16 rounding alone would break the bound (EfficientNet-Lite0's
first depthwise and projection convolutions: all-float16 moves its probabilities by ~1e-2)
stay float32 (`training.export.fp16.mixed_half`); a refusal names the difference measured.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from vision.atomic import write_bytes_atomic
from vision.contracts.model import ModelMetadata, set_onnx_props
from vision.errors import ParityError
from vision.metrics import softmax
from vision.models import NormalizedClassifier

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Max abs difference of calibrated probabilities allowed, float32 and float16 graphs.
PARITY_TOL = 1e-4
PARITY_TOL_FP16 = 1e-3
#: Chips checked first: a graph that is wrong is refused after these, not after all of them.
EARLY_CHIPS = 8
_CHUNK = 32


def to_onnx(model: nn.Module, example: torch.Tensor, *, fp16: bool = False, opset: int = 17,
            half_layers: Sequence[str] | None = None) -> onnx.ModelProto:
    """Trace ``model`` (raw pixels -> logits, eval mode) into an ONNX graph with a dynamic batch.

    With ``fp16`` the network of a `NormalizedClassifier` runs in float16 (a copy, BatchNorm
    folded): its layers ``half_layers`` (default all), the others float32; the rest of the
    model stays float32 (`training.export.fp16`).
    """
    from training.export import fp16 as half

    net = model.eval().cpu()
    if fp16:
        if not isinstance(net, NormalizedClassifier):
            raise TypeError("fp16 export needs a NormalizedClassifier (normalisation stays float32)")
        names = set(half_layers) if half_layers is not None else set(half.all_layers(net))
        net = half.build(net, names)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated but stable
        torch.onnx.export(
            net, (example[:2].float(),), cast(Any, buf), dynamo=False, input_names=["pixels"],
            output_names=["logits"], dynamic_axes={"pixels": {0: "n"}, "logits": {0: "n"}},
            opset_version=opset, external_data=False, do_constant_folding=True,
        )
    return onnx.load_model_from_string(buf.getvalue())


def export_onnx(
    model: nn.Module,
    path: Path,
    metadata: ModelMetadata,
    parity_inputs: torch.Tensor,
    *,
    temperature: float = 1.0,
    fp16: bool = False,
    opset: int = 17,
    on_chips: Callable[[int], None] | None = None,
    max_diff: float | None = None,
    half_layers: Sequence[str] | None = None,
) -> float:
    """Export ``model`` (raw pixels -> logits) to ``path`` and check parity.

    Args:
        model: a `NormalizedClassifier` (normalisation inside), float32.
        path: destination ``.onnx``; written atomically, only when parity holds.
        metadata: what the model says about itself (``vision.*`` props).
        parity_inputs: real samples ``N x C x H x W`` in raw units.
        temperature: calibration temperature, applied to both sides of the parity check.
        fp16: run the network in half precision (inputs, normalisation, outputs float32).
        on_chips: called with the number of chips each parity step checked (progress).
        max_diff: the largest difference accepted; default `PARITY_TOL` (`PARITY_TOL_FP16`).
        half_layers: with ``fp16``, the network's layers in float16 (the others stay float32);
            default: chosen on ``parity_inputs`` (`training.export.fp16.mixed_half`).

    Returns:
        The max abs difference of probabilities between ONNX Runtime and PyTorch (float32).

    Raises:
        ParityError: the difference exceeds ``max_diff``; nothing is written.
    """
    model = model.eval().cpu()
    tol = max_diff if max_diff is not None else PARITY_TOL_FP16 if fp16 else PARITY_TOL
    plan = ""
    if fp16 and half_layers is None and isinstance(model, NormalizedClassifier):
        from training.export.fp16 import mixed_half

        chosen = mixed_half(model, parity_inputs, temperature, tol)
        half_layers, plan = chosen.half, chosen.describe()
    proto = to_onnx(model, parity_inputs, fp16=fp16, opset=opset, half_layers=half_layers)
    set_onnx_props(proto, metadata)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    try:
        diff = parity(model, data, parity_inputs, temperature, tol=tol, on_chips=on_chips)
    except ParityError as exc:
        if not fp16:
            raise
        layers = plan or (f"{len(half_layers)} layers in float16" if half_layers is not None else "")
        raise ParityError(f"fp16: {exc}" + (f" (float16 network: {layers})" if layers else "")) from exc
    write_bytes_atomic(path, data)
    return diff


def _ceil2(v: float) -> str:
    """A bound just above ``v`` with two significant digits (``0.0213`` -> ``0.022``)."""
    if not np.isfinite(v):
        return "inf"
    exp = int(np.floor(np.log10(v))) - 1 if v > 0 else -6
    return f"{np.ceil(v / 10.0 ** exp) * 10.0 ** exp:.{max(-exp, 0)}f}"


def parity(model: nn.Module, onnx_bytes: bytes, inputs: torch.Tensor, temperature: float, *,
           tol: float | None = None, on_chips: Callable[[int], None] | None = None) -> float:
    """Max abs difference of calibrated probabilities, ONNX Runtime vs ``model`` (PyTorch).

    With ``tol``, the first `EARLY_CHIPS` chips are checked alone first, and a difference
    above ``tol`` raises at once.

    Raises:
        ParityError: with ``tol``, the difference exceeds it.
    """
    was_training = model.training
    model.eval()
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    x = inputs.float()
    early = x[:EARLY_CHIPS]
    chunks = [early, *torch.split(x[EARLY_CHIPS:], _CHUNK)] if len(x) > EARLY_CHIPS else [x]
    worst, seen, same = 0.0, 0, 0
    try:
        with torch.no_grad():
            for chunk in chunks:
                if not len(chunk):
                    continue
                ref = softmax(model(chunk).float().numpy(), temperature)
                got = softmax(sess.run(["logits"], {"pixels": chunk.numpy()})[0], temperature)
                d = float(np.abs(ref - got).max())
                worst = max(worst, d if np.isfinite(d) else float("inf"))  # NaN must not hide
                seen += len(chunk)
                same += int((ref.argmax(1) == got.argmax(1)).sum())
                if on_chips is not None:
                    on_chips(len(chunk))
                if tol is not None and not worst <= tol:
                    raise ParityError(
                        f"ONNX and PyTorch disagree: max abs difference of probabilities {worst:.2e} > "
                        f"{tol:.0e} on the first {seen} of {len(x)} check chips (top-1 class the same on "
                        f"{same} of them); nothing was written. If that difference is acceptable for this "
                        f"model (float16 rounding of the weights alone can cause it), pass "
                        f"--max-diff {_ceil2(worst)}")
    finally:
        model.train(was_training)
    return worst
