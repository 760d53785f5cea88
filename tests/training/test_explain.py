"""Grad-CAM: every registered architecture, finding the weights behind an ONNX model, the
`vision explain` command, and the sanity checks of Adebayo et al. 2018."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
import torch
import yaml

from tests.cli_runner import run_training_cli as run_cli
from training.explain import (
    explain,
    gradcam,
    gradcam_layer,
    load_explainer,
    randomized_copy,
    rank_correlation,
    read_input,
)
from vision.data import FolderSource
from vision.data.synthetic import write_synthetic_dataset
from vision.errors import ConfigError, ModelFormatError
from vision.models import IMAGENET_MEAN_255, IMAGENET_STD_255, NormalizedClassifier, get_model, get_spec, list_models


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The test architecture trained on 64 px synthetic chips (its Grad-CAM layer is then
    16 x 16; the architecture is not the subject here, `test_gradcam_for_every_registered_
    architecture` and the EuroSAT test cover the real ones)."""
    from training.trainer import run_training
    from vision.config import validate_experiment

    base = tmp_path_factory.mktemp("explain")
    root = write_synthetic_dataset(base / "data", per_class={"train": 20, "val": 6, "test": 6}, size=64)
    raw = {"seed": 3, "experiment": "explain", "data": {"source": "folder", "root": str(root), "num_workers": 0},
           "model": {"architecture": "tiny_cnn", "weights": "none", "name": "explain_tiny",
                     "input_size": [64, 64]},
           "train": {"epochs": 4, "batch_size": 8, "lr": 3e-3, "warmup_epochs": 0.2, "threads": 1}}
    (base / "recipe.yaml").write_text(yaml.safe_dump(raw))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(base)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{base / 'mlflow.db'}")
        run_training(validate_experiment(raw), base / "run", recipe="explain")
    yield base


def _chips(root: Path, n: int = 8) -> list[np.ndarray]:
    src = FolderSource(root / "data" / "test")
    step = max(len(src) // n, 1)
    return [src.read(i) for i in range(0, len(src), step)][:n]


@pytest.mark.parametrize("arch", list_models())
def test_gradcam_for_every_registered_architecture(arch: str) -> None:
    torch.manual_seed(0)
    net = NormalizedClassifier(get_model(arch, 4, in_channels=5, weights="none"), [100.0] * 5, [50.0] * 5).eval()
    assert isinstance(net.get_submodule(gradcam_layer(arch)), torch.nn.Module)
    chip = np.random.default_rng(0).integers(0, 255, size=(64, 64, 5)).astype(np.uint8)
    for target in (None, 2):
        res = explain(net, chip, target=target, layer=gradcam_layer(arch))
        assert res.heatmap.shape == (64, 64) and res.heatmap.dtype == np.float32
        assert np.isfinite(res.heatmap).all() and res.heatmap.min() >= 0 and res.heatmap.max() <= 1
        assert res.probs.shape == (4,) and res.probs.sum() == pytest.approx(1, abs=1e-5)
    assert res.target == 2


def test_module_without_layer_is_an_error() -> None:
    net = NormalizedClassifier(get_model("resnet18", 3, weights="none"), [0.0] * 3, [1.0] * 3)
    with pytest.raises(ValueError, match="layer"):
        gradcam(net, np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ConfigError, match="no layer"):
        gradcam(net, np.zeros((64, 64, 3), np.uint8), layer="backbone.nope")


def test_explainer_from_onnx_metadata_with_cache_and_size(trained: Path) -> None:
    onnx_path = trained / "run" / "model.onnx"
    ex = load_explainer(str(onnx_path))
    assert ex.architecture == "tiny_cnn" and ex.layer == "backbone.features.2"
    assert ex.checkpoint == (trained / "run" / "checkpoints" / "best.pt").resolve()
    assert load_explainer(str(onnx_path)) is ex  # cached: the review service loads it once
    chip = _chips(trained, 1)[0]
    heat = gradcam(ex, chip)
    assert heat.shape == (64, 64) and heat.min() >= 0 and heat.max() == pytest.approx(1.0)
    small = gradcam(ex, chip[:48, :48])  # resized to the input size, map returned at the chip's size
    assert small.shape == (48, 48)
    named = explain(ex, chip, target="Water")
    assert named.target == ex.classes.index("Water")


def test_checkpoint_found_through_the_mlflow_run(trained: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{trained / 'mlflow.db'}")
    monkeypatch.chdir(trained)
    moved = tmp_path / "model.onnx"
    shutil.copy(trained / "run" / "model.onnx", moved)
    best = trained / "run" / "checkpoints" / "best.pt"
    hidden = best.with_name("hidden.pt")
    best.rename(hidden)  # vision.checkpoint and the run folder (tag vision.out) now miss it
    try:
        ex = load_explainer(str(moved))  # found as the run's checkpoint/best.pt artifact
        assert ex.checkpoint is not None and ex.checkpoint != best and ex.checkpoint.exists()
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'empty.db'}")
        other = tmp_path / "other.onnx"
        shutil.copy(moved, other)
        with pytest.raises(ModelFormatError, match="cannot find the PyTorch checkpoint"):
            load_explainer(str(other))
    finally:
        hidden.rename(best)


def test_parameter_randomisation_changes_the_explanation(trained: Path) -> None:
    """Adebayo et al. 2018: re-initialising the weights must change the map (it explains the
    model), and the trained model's maps must not be constant."""
    ex = load_explainer(str(trained / "run"))
    rnd = randomized_copy(ex.model, seed=0)
    corrs, diffs = [], []
    for chip in _chips(trained):
        a = explain(ex, chip)
        assert a.heatmap.std() > 0.05 and a.contrast > 0.01, "a constant map explains nothing"
        b = explain(rnd, chip, target=a.target, layer=ex.layer)
        corrs.append(rank_correlation(a.heatmap, b.heatmap))
        diffs.append(float(np.abs(a.heatmap - b.heatmap).mean()))
    assert np.mean(corrs) < 0.5, corrs
    assert np.mean(diffs) > 0.1, diffs
    # randomized_copy leaves the original alone
    assert all(torch.equal(p, q) for p, q in zip(ex.model.state_dict().values(),
                                                 load_explainer(str(trained / "run")).model.state_dict().values(),
                                                 strict=True))


def test_rank_correlation() -> None:
    a = np.arange(16.0).reshape(4, 4)
    assert rank_correlation(a, a * 2 + 1) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(a, np.zeros_like(a)) == 0.0


@pytest.mark.data
def test_eurosat_chip_heatmap_not_constant_and_model_dependent(data_dir: Path) -> None:
    """A trained network (ImageNet EfficientNet-Lite0 with its own head) on real EuroSAT chips."""
    from vision.data.decode import decode_image_bytes
    from vision.data.sources import iter_shard

    spec = get_spec("efficientnet_lite0")
    backbone = spec.build(1000, 0.2)
    backbone.load_state_dict(torch.load(spec.imagenet_weights(), map_location="cpu", weights_only=True))
    net = NormalizedClassifier(backbone, IMAGENET_MEAN_255, IMAGENET_STD_255).eval()
    rnd = randomized_copy(net, seed=0)
    layer = gradcam_layer("efficientnet_lite0")
    chips, seen = [], set()
    for key, parts in iter_shard(data_dir / "eurosat-rgb" / "eurosat-rgb-test-000000.tar.gz"):
        cls = key.split("_")[0]
        if cls not in seen:
            seen.add(cls)
            chips.append(decode_image_bytes(parts["jpg"], key))
        if len(chips) == 10:
            break
    corrs = []
    for chip in chips:
        a = explain(net, chip, layer=layer)
        assert a.heatmap.std() > 0.1 and a.contrast > 0.02
        b = explain(rnd, chip, target=a.target, layer=layer)
        corrs.append(rank_correlation(a.heatmap, b.heatmap))
    assert np.mean(corrs) < 0.5, corrs


def test_read_input_job_row_window_and_shard_member(trained: Path, tmp_path: Path, write_tif) -> None:
    scene = write_tif("scene.tif", count=6, size=96, descriptions=["B02", "B03", "B04", "B08", "B11", "B12"])
    with rasterio.open(scene) as ds:
        full = ds.read()
    job = tmp_path / "job"
    job.mkdir()
    rows = {"path": [str(scene), str(scene)], "row_off": [32, None], "col_off": [0, None],
            "height": [64, None], "width": [64, None], "status": ["ok", "ok"]}
    pq.write_table(pa.table(rows, schema=pa.schema([("path", pa.string()), ("row_off", pa.int32()),
                                                    ("col_off", pa.int32()), ("height", pa.int32()),
                                                    ("width", pa.int32()), ("status", pa.string())])),
                   job / "predictions.parquet")
    bands = ["B02", "B03", "B04", "B08", "B11", "B12"]
    got = read_input(f"{job}#0", bands)
    assert np.array_equal(got.pixels, np.moveaxis(full[:, 32:96, 0:64], 0, -1))
    assert got.row is not None and got.row["row_off"] == 32
    assert read_input(f"{job}#1", bands).pixels.shape == (96, 96, 6)
    reordered = read_input(str(scene), ["B04", "B03", "B02"]).pixels  # bands by name
    assert np.array_equal(reordered[..., 0], full[2])
    with pytest.raises(ConfigError, match="row 5 does not exist"):
        read_input(f"{job}#5", bands)


def test_vision_explain_command(trained: Path, tmp_path: Path) -> None:
    chip_path = sorted((trained / "data" / "test" / "Urban").glob("*.tif"))[0]
    out, npy = tmp_path / "heat.png", tmp_path / "heat.npy"
    code, text = run_cli("explain", str(trained / "run" / "model.onnx"), str(chip_path), "--out", str(out),
                         "--npy", str(npy))
    assert code == 0, text
    assert out.read_bytes()[:4] == b"\x89PNG" and np.load(npy).shape == (64, 64)
    assert "predicted" in text and "Grad-CAM of" in text
    code, text = run_cli("explain", str(trained / "run"), str(chip_path), "--out", str(out))
    assert code == 2 and "--overwrite" in text
    code, text = run_cli("explain", str(trained / "run"), str(chip_path), "--out", str(out), "--overwrite",
                         "--class", "Nope")
    assert code == 2 and "unknown class" in text
