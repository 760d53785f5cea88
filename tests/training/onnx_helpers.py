"""Checks on a finished run's exported graph, shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from training.checkpoint import InferenceCheckpoint


def assert_onnx_is_best_checkpoint(run: Path, shape: tuple[int, ...] = (4, 6, 32, 32)) -> None:
    """``run/model.onnx`` gives the logits of the model in ``run/checkpoints/best.pt`` on raw pixels."""
    import onnxruntime as ort

    best = run / "checkpoints" / "best.pt"
    net = InferenceCheckpoint.load(best).build_model(best).eval()
    x = torch.from_numpy(np.random.default_rng(0).uniform(0, 3000, shape).astype(np.float32))
    onnx_logits = ort.InferenceSession(str(run / "model.onnx")).run(["logits"], {"pixels": x.numpy()})[0]
    with torch.no_grad():
        assert np.allclose(onnx_logits, net(x).numpy(), atol=1e-4)
