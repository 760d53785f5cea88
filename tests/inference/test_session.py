"""ONNX Runtime sessions: device names, defaults, and the batch `Classifier`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from inference.choices import Device
from inference.session import (
    Classifier,
    SessionOptions,
    available_devices,
    choose_device,
    default_batch_size,
    default_streams,
)
from vision.errors import ConfigError


def test_device_names_are_parsed_once() -> None:
    assert Device.parse("cuda") is Device.CUDA and Device.parse(Device.CPU) is Device.CPU
    with pytest.raises(ConfigError, match="--device must be one of auto, cpu, cuda, tensorrt"):
        Device.parse("tpu")
    assert choose_device("cpu") is Device.CPU
    assert choose_device(Device.AUTO) is available_devices()[0]
    assert Device.CPU in available_devices()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ConfigError, match="install onnxruntime-gpu"):
            choose_device("cuda")


def test_session_options_need_a_resolved_device() -> None:
    assert SessionOptions(device="cpu").device is Device.CPU  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="resolved"):
        SessionOptions(device=Device.AUTO)
    assert SessionOptions(threads=None, streams=2).intra_op_threads >= 1


def test_defaults() -> None:
    assert default_batch_size(Device.CPU) == 64 and default_batch_size(Device.CUDA) == 256
    assert default_batch_size(Device.CPU, views=8) == 8
    assert default_streams(Device.CUDA, 16) == 1 and default_streams(Device.CPU, 16) == 4
    assert default_streams(Device.CPU, 2) == 2


def test_classifier_returns_float32_logits(rgb_model: Path) -> None:
    clf = Classifier(rgb_model, SessionOptions(device=Device.CPU, threads=1, batch_size=4),
                     (3, 64, 64))
    x = np.random.default_rng(0).integers(0, 255, (5, 3, 64, 64)).astype(np.uint8)
    out = clf(x)  # cast to the model's input dtype inside
    assert out.shape == (5, 4) and out.dtype == np.float32
    ref = ort.InferenceSession(str(rgb_model), providers=["CPUExecutionProvider"]).run(
        None, {"pixels": x.astype(np.float32)})[0]
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
