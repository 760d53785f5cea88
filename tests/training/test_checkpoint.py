"""Checkpoints: typed, stored as plain dicts that `torch.load(weights_only=True)` reads, old
files still loading, and broken files refused with the file named."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from training.checkpoint import (
    CheckpointError,
    InferenceCheckpoint,
    TrainState,
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from vision.errors import ModelFormatError
from vision.models import NormalizedClassifier, get_model

BANDS = ["B04", "B03", "B02"]
CLASSES = ["a", "b", "c", "d"]


def _net(tta: str = "none") -> NormalizedClassifier:
    torch.manual_seed(0)
    return NormalizedClassifier(get_model("tiny_cnn", 4, 3, "none", band_names=BANDS), [10.0, 20.0, 30.0],
                                [2.0, 3.0, 4.0], tta=tta).eval()


def test_inference_checkpoint_round_trips_through_a_weights_only_file(tmp_path: Path) -> None:
    net = _net("flips")
    ck = InferenceCheckpoint(net.state_dict(), "tiny_cnn", CLASSES, BANDS, [10.0, 20.0, 30.0], [2.0, 3.0, 4.0],
                             input_size=(16, 24), epoch=3, tta="flips", temperature=0.7,
                             thresholds={"a": 0.9}, model_name="m", dropout=0.0)
    path = tmp_path / "best.pt"
    ck.save(path)
    raw = torch.load(path, map_location="cpu", weights_only=True)  # plain dicts and tensors on disk
    assert isinstance(raw, dict) and raw["input_size"] == [16, 24] and raw["thresholds"] == {"a": 0.9}
    back = InferenceCheckpoint.load(path)
    assert back.input_size == (16, 24) and back.tta == "flips" and back.temperature == 0.7
    assert back.to_dict().keys() == raw.keys()
    x = torch.rand(2, 3, 16, 24) * 50
    with torch.no_grad():
        assert torch.equal(back.build_model(path)(x), net(x))


def test_a_checkpoint_written_before_the_types_still_loads(tmp_path: Path) -> None:
    """The dict `vision train` wrote before (no work_size, tta, thresholds, dropout, input_size
    in the oldest ones): the defaults its readers assumed."""
    net = _net()
    path = tmp_path / "old.pt"
    torch.save({"model": net.state_dict(), "architecture": "tiny_cnn", "classes": CLASSES, "bands": BANDS,
                "mean": [10.0, 20.0, 30.0], "std": [2.0, 3.0, 4.0], "epoch": 2}, path)
    ck = InferenceCheckpoint.load(path)
    assert (ck.input_size, ck.work_size, ck.tta, ck.temperature, ck.thresholds, ck.dropout) == \
        ((64, 64), None, "none", 1.0, {}, 0.2)
    x = torch.rand(1, 3, 32, 32) * 50
    with torch.no_grad():
        assert torch.equal(ck.build_model(path)(x), net(x))


def test_train_state_round_trips_and_restores_the_rngs(tmp_path: Path) -> None:
    net = _net()
    opt = torch.optim.AdamW(net.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    state = TrainState(model=net.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                       rng=rng_state(), epoch=4, history=[{"epoch": 5, "val_accuracy": 0.5}], best=0.5,
                       bad_epochs=1, config_hash="abc", mlflow_run_id="run")
    want = (torch.rand(3), np.random.rand(3), random.random())
    path = tmp_path / "last.pt"
    state.save(path)
    back = TrainState.load(path)
    assert (back.epoch, back.best, back.bad_epochs, back.config_hash, back.mlflow_run_id) == (4, 0.5, 1, "abc", "run")
    back.restore(_net(), torch.optim.AdamW(net.parameters()),
                 torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0), path=path)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]
    with pytest.raises(CheckpointError, match="weight average"):
        back.restore(_net(), opt, sched, ema=_net(), path=path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n" * 20, "truncated", "pickle", "list"])
def test_broken_files_are_refused_naming_the_file(tmp_path: Path, content: bytes | str) -> None:
    good = tmp_path / "good.pt"
    save_checkpoint(good, {"model": _net().state_dict()})
    path = tmp_path / "bad.pt"
    if content == "truncated":
        path.write_bytes(good.read_bytes()[:300])
    elif content == "pickle":  # arbitrary objects: weights_only refuses to unpickle them
        path.write_bytes(pickle.dumps({"x": Path("/")}))
    elif content == "list":
        torch.save([1, 2, 3], path)
    else:
        assert isinstance(content, bytes)
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=str(path)) as info:
        load_checkpoint(path)
    assert isinstance(info.value, ModelFormatError)  # exit code 1 at the CLI


def test_the_wrong_kind_of_checkpoint_says_so(tmp_path: Path) -> None:
    net = _net()
    opt = torch.optim.AdamW(net.parameters())
    last = tmp_path / "last.pt"
    save_checkpoint(last, {"model": net.state_dict(), "optimizer": opt.state_dict()})
    with pytest.raises(CheckpointError, match="a training state: use checkpoints/best.pt"):
        InferenceCheckpoint.load(last)
    best = tmp_path / "best.pt"
    save_checkpoint(best, {"model": net.state_dict(), "architecture": "tiny_cnn", "classes": CLASSES})
    with pytest.raises(CheckpointError, match=r"without \['bands', 'mean', 'std'\]"):
        InferenceCheckpoint.load(best)
    with pytest.raises(CheckpointError, match="not a training state"):
        TrainState.load(best)
    wrong = InferenceCheckpoint(net.state_dict(), "tiny_cnn", CLASSES + ["e"], BANDS, [0.0] * 3, [1.0] * 3)
    with pytest.raises(CheckpointError, match="do not fit tiny_cnn with 3 bands and 5 classes"):
        wrong.build_model()
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_rng_state_survives_a_weights_only_file(tmp_path: Path) -> None:
    path = tmp_path / "rng.pt"
    save_checkpoint(path, {"rng": rng_state()})
    a = (torch.rand(2), np.random.rand(2), random.random())
    restore_rng_state(load_checkpoint(path)["rng"])
    b = (torch.rand(2), np.random.rand(2), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
