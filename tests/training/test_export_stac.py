"""``model.stac.json``: the exported model as a STAC MLM item, beside every export, read back
with pystac."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pystac
from pystac.extensions.mlm import MLMExtension

from tests.cli_runner import run_vision
from training.export.command import export_checkpoint
from training.export.stac import FILE, MLM, stac_path
from vision.contracts.model import read_model_file
from vision.palette import class_colours


def _check(onnx_path: Path) -> pystac.Item:
    """The item beside ``onnx_path`` agrees with the file: bands, input shape, classes,
    radiometry, GSD, and the sha256 of its bytes."""
    meta = read_model_file(onnx_path).metadata
    item = pystac.read_file(str(stac_path(onnx_path)))
    assert isinstance(item, pystac.Item) and MLM in item.stac_extensions and FILE in item.stac_extensions
    mlm = MLMExtension.ext(item)
    assert mlm.mlm_name == meta.model_name and mlm.architecture == meta.architecture == "tiny_cnn"
    assert mlm.framework == "ONNX" and "classification" in mlm.tasks
    (inp,) = mlm.input
    assert list(inp.bands) == list(meta.bands) and len(meta.bands) == 6
    assert inp.input.shape == [-1, 6, *meta.input_size] and inp.input.data_type == "float32"
    assert inp.value_scaling is None  # the graph normalises raw pixels itself
    assert item.properties["vision:normalisation"] == {"mean": list(meta.mean), "std": list(meta.std),
                                                       "in_graph": True}
    (out,) = mlm.output
    classes = out.properties["classification:classes"]
    assert [c["title"] for c in classes] == list(meta.classes)
    assert [c["value"] for c in classes] == list(range(len(meta.classes)))
    assert [c["color_hint"] for c in classes] == ["".join(f"{v:02X}" for v in rgb)
                                                  for rgb in class_colours(meta.classes)]
    assert out.result.shape == [-1, len(meta.classes)]
    assert item.properties["vision:radiometry"] == (meta.radiometry.to_obj() if meta.radiometry else None)
    assert item.properties["gsd"] == meta.gsd_m
    assert item.properties["vision:temperature"] == meta.temperature
    asset = item.assets["model"]
    assert Path(asset.get_absolute_href()) == onnx_path.resolve()
    assert "mlm:model" in asset.roles and asset.extra_fields["mlm:artifact_type"] == "onnx"
    digest = hashlib.sha256(onnx_path.read_bytes()).hexdigest()
    assert asset.extra_fields["file:checksum"] == "1220" + digest  # multihash: sha2-256, 32 bytes
    assert asset.extra_fields["vision:sha256"] == digest
    assert asset.extra_fields["file:size"] == onnx_path.stat().st_size
    assert item.datetime is not None and item.geometry is None
    return item


def test_export_writes_the_model_stac_item_beside_the_onnx(trained_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.onnx"
    export_checkpoint(trained_run, out, progress=False)
    assert stac_path(out) == tmp_path / "model.stac.json"
    item = _check(out)
    assert MLMExtension.ext(item).accelerator == "amd64"
    assert item.properties["vision:precision"] == "fp32"


def test_the_cli_export_and_the_training_run_write_it_too(trained_run: Path, tmp_path: Path) -> None:
    # the training run's own export (training.finish) wrote one beside the run's model.onnx
    _check(trained_run / "model.onnx")
    out = tmp_path / "rgb-fp16.onnx"
    res = run_vision("export", str(trained_run), "--out", str(out), "--fp16", "--no-progress")
    assert res.returncode == 0, res.stderr[-2000:]
    item = _check(out)
    assert (tmp_path / "rgb-fp16.stac.json").is_file()
    assert item.properties["vision:precision"] == "fp16"
    assert MLMExtension.ext(item).accelerator == "cuda"
    assert json.loads((tmp_path / "rgb-fp16.stac.json").read_text())["assets"]["model"]["href"] == \
        "./rgb-fp16.onnx"
