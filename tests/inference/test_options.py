"""`JobOptions`: what `vision infer` is asked to do, checked once when it is made."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.options import JobOptions
from vision.errors import ConfigError


def test_options_are_validated_once(tmp_path: Path) -> None:
    """`JobOptions` converts --device/--engine names to their enums and refuses bad values
    when it is made, before a model is opened."""
    from inference.choices import Device, EngineKind

    opts = JobOptions(inputs=("x",), model="m.onnx", out=tmp_path, device="cpu", engine="ray")
    assert opts.device is Device.CPU and opts.engine is EngineKind.RAY
    for kw, match in (({"device": "tpu"}, "--device must be one of auto, cpu, cuda, tensorrt"),
                      ({"engine": "spark"}, "--engine must be one of local, ray"),
                      ({"inputs": ()}, "at least one INPUT"), ({"max_nodata": 1.0}, "max-nodata"),
                      ({"workers": 0}, "--workers"), ({"max_pixels": 0}, "--max-pixels")):
        args: dict[str, object] = {"inputs": ("x",), "model": "m.onnx", "out": tmp_path, **kw}
        with pytest.raises(ConfigError, match=match):
            JobOptions(**args)  # type: ignore[arg-type]
