"""Export: the graph (fp32 and fp16) and its parity check, the metadata, `vision export`."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests.cli_runner import run_training_cli as run_cli
from tests.cli_runner import run_vision
from training.evaluate import load_checkpoint_model
from training.export import PARITY_TOL_FP16, export_onnx, parity, to_onnx
from training.export.command import export_checkpoint
from training.export.graph import EARLY_CHIPS
from vision.contracts.model import read_model_file
from vision.data import FolderSource
from vision.errors import ParityError
from vision.metrics import softmax


def _chips(root: Path, classes: list[str]) -> torch.Tensor:
    src = FolderSource(root, classes)
    return torch.from_numpy(np.stack([src.read(i).transpose(2, 0, 1).astype(np.float32) for i in range(len(src))]))


def test_fp16_export_of_a_trained_run_matches_the_float_model(trained_run: Path, synthetic_root: Path,
                                                              tmp_path: Path) -> None:
    """fp16 parity within 1e-3 on probabilities, against the float32 model that was validated.

    Before, the check compared ONNX with an fp16 copy that `torch.onnx.export` had left in
    training mode (BatchNorm on batch statistics): 0.2-0.6 apart on every model, and minutes of
    CPU fp16 before failing. The probabilities are compared at T = 1 here too: the run's own
    temperature (~0.07) saturates them and would hide a difference."""
    out = tmp_path / "fp16.onnx"
    diff, q = export_checkpoint(trained_run, out, fp16=True, progress=False)
    assert q is None and diff <= PARITY_TOL_FP16
    meta = read_model_file(out).metadata
    assert meta.precision == "fp16" and meta.tta == "d8" and meta.input_size == (32, 32)
    proto = onnx.load(str(out))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    halves = [i for i in proto.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert len(halves) >= 6  # the network's weights (3 convolutions, their norms, the head)
    # Normalisation stays float32: mean and std are float initializers.
    assert any(i.data_type == onnx.TensorProto.FLOAT and list(i.dims) == [1, 6, 1, 1] for i in proto.graph.initializer)

    model, ck = load_checkpoint_model(trained_run / "checkpoints" / "best.pt")
    x = _chips(synthetic_root / "test", ck.classes)
    with torch.no_grad():
        ref = model(x).numpy()
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["logits"], {"pixels": x.numpy()})[0]
    for temperature in (1.0, ck.temperature):
        assert float(np.abs(softmax(ref, temperature) - softmax(got, temperature)).max()) <= PARITY_TOL_FP16
    assert np.array_equal(ref.argmax(1), got.argmax(1))

    # The same through export_onnx at T = 1, and the model handed in is left as it was.
    state = copy.deepcopy(model.state_dict())
    d1 = export_onnx(model, tmp_path / "t1.onnx", meta, x, temperature=1.0, fp16=True)
    assert d1 <= PARITY_TOL_FP16
    assert not model.training and all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_parity_is_checked_on_a_few_chips_first(trained_run: Path, synthetic_root: Path) -> None:
    """A graph that is off is refused after the first chips, not after all of them."""
    model, ck = load_checkpoint_model(trained_run / "checkpoints" / "best.pt")
    x = _chips(synthetic_root / "test", ck.classes)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.backbone.fc.bias.add_(torch.tensor([3.0, 0.0, -3.0, 0.0]))
    data = to_onnx(other, x).SerializeToString()
    checked: list[int] = []
    with pytest.raises(ParityError, match=f"on the first {EARLY_CHIPS} of {len(x)} check chips"):
        parity(model, data, x, 1.0, tol=1e-4, on_chips=checked.append)
    assert sum(checked) == EARLY_CHIPS < len(x)
    assert parity(model, to_onnx(model, x).SerializeToString(), x, 1.0, tol=1e-4) <= 1e-4


def test_export_refuses_to_replace_its_output(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep me")
    code, text = run_cli("export", str(trained_run), "--out", str(out), "--no-progress")
    assert code == 2 and "--overwrite" in text and out.read_bytes() == b"keep me"
    code, text = run_cli("export", str(trained_run), "--out", str(out), "--overwrite", "--no-progress")
    assert code == 0, text
    assert read_model_file(out).metadata.model_name == "tiny_trained"


@pytest.mark.parametrize("content", [b"", b"garbage" * 50, "truncated"], ids=["empty", "garbage", "truncated"])
def test_a_broken_checkpoint_is_an_error_not_a_traceback(trained_run: Path, synthetic_root: Path, tmp_path: Path,
                                                         content: bytes | str) -> None:
    """`vision export`, `evaluate` and `explain` given an empty, garbage or truncated .pt say
    which file and what is wrong, with exit code 1 and no traceback (each kind of file through
    `export`, and the garbage one through all three: they share one reader)."""
    good = (trained_run / "checkpoints" / "best.pt").read_bytes()
    bad = tmp_path / "best.pt"
    bad.write_bytes(good[: len(good) // 2] if isinstance(content, str) else content)
    val = synthetic_root / "val"
    chip = sorted((val / "Water").glob("*.tif"))[0]
    commands = [["export", str(bad), "--out", str(tmp_path / "x.onnx"), "--data", str(val)]]
    if content == b"garbage" * 50:
        commands += [["evaluate", str(bad), str(val)],
                     ["explain", str(bad), str(chip), "--out", str(tmp_path / "h.png")]]
    for args in commands:
        r = run_vision(*args, cwd=tmp_path)
        assert r.returncode == 1, (args, r.stderr[-2000:])
        assert "Traceback" not in r.stderr + r.stdout, r.stderr[-2000:]
        assert str(bad) in r.stderr and "not a readable checkpoint" in r.stderr, r.stderr
    assert not (tmp_path / "x.onnx").exists() and not (tmp_path / "h.png").exists()
