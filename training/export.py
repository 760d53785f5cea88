"""ONNX export as ARCHITECTURE.md §2 fixes it: raw pixels in, logits out, metadata inside.

The model normalises inside the graph; metadata (``vision.*``) tells any consumer the
classes, bands, input size and calibration; a parity check against PyTorch on real samples
runs at every export and fails loudly.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from vision.atomic import write_bytes_atomic
from vision.contracts.model import ModelMetadata, set_onnx_props
from vision.errors import ParityError
from vision.metrics import softmax

PARITY_TOL = 1e-4
PARITY_TOL_FP16 = 1e-2


class _Fp16Wrapper(nn.Module):
    """Runs the network in fp16 while the graph still takes float32 raw pixels."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.half()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.half()).float()


def export_onnx(
    model: nn.Module,
    path: Path,
    metadata: ModelMetadata,
    parity_inputs: torch.Tensor,
    *,
    temperature: float = 1.0,
    fp16: bool = False,
    opset: int = 17,
) -> float:
    """Export ``model`` (raw pixels -> logits) to ``path`` and check parity.

    Args:
        model: a `NormalizedClassifier` (normalisation inside).
        path: destination ``.onnx``; written atomically.
        metadata: what the model says about itself (``vision.*`` props).
        parity_inputs: real samples ``N x C x H x W`` in raw units.
        temperature: calibration temperature, applied to both sides of the parity check.
        fp16: export the network in half precision (inputs/outputs stay float32).

    Returns:
        The max abs difference of probabilities between ONNX Runtime and PyTorch.

    Raises:
        ParityError: the difference exceeds 1e-4 (1e-2 for fp16).
    """
    model = model.eval().cpu()
    net: nn.Module = _Fp16Wrapper(_clone(model)) if fp16 else model
    example = parity_inputs[:2].float()
    tmp = path.with_name(f".{path.name}.export.tmp")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated but stable
            torch.onnx.export(
                net, (example,), str(tmp), dynamo=False, input_names=["pixels"],
                output_names=["logits"], dynamic_axes={"pixels": {0: "n"}, "logits": {0: "n"}},
                opset_version=opset, external_data=False, do_constant_folding=True,
            )
        proto = onnx.load(str(tmp))
    finally:
        tmp.unlink(missing_ok=True)
    set_onnx_props(proto, metadata)
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    diff = parity(net, data, parity_inputs, temperature)
    tol = PARITY_TOL_FP16 if fp16 else PARITY_TOL
    if not diff <= tol:
        raise ParityError(
            f"ONNX and PyTorch disagree: max abs difference of probabilities {diff:.2e} > {tol:.0e}"
        )
    write_bytes_atomic(path, data)
    return diff


def _clone(model: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(model)


def parity(model: nn.Module, onnx_bytes: bytes, inputs: torch.Tensor, temperature: float) -> float:
    """Max abs difference of calibrated probabilities, ONNX Runtime vs PyTorch."""
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    diffs = []
    with torch.no_grad():
        for chunk in torch.split(inputs.float(), 64):
            ref = softmax(model(chunk).float().numpy(), temperature)
            got = softmax(sess.run(["logits"], {"pixels": chunk.numpy()})[0], temperature)
            diffs.append(float(np.abs(ref - got).max()))
    return max(diffs) if diffs else 0.0
