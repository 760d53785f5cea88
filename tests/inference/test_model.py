from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from inference.model import load_model_info
from inference.session import choose_device
from vision.errors import ConfigError, ModelFormatError
from vision.model_uri import resolve_model

from .conftest import RGB_BANDS


def test_metadata_is_read(rgb_model: Path) -> None:
    info = load_model_info(rgb_model)
    assert info.bands == RGB_BANDS
    assert info.input_size == (64, 64)
    assert info.temperature == 1.5
    assert info.thresholds == {0: 0.3, 1: 0.5}
    assert info.model_name == "tiny-3band" and info.model_version == "1"
    assert len(info.sha256) == 64


def test_missing_metadata_is_refused(rgb_model: Path, tmp_path: Path) -> None:
    proto = onnx.load(str(rgb_model))
    keep = [p for p in proto.metadata_props if p.key != "vision.bands"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    with pytest.raises(ModelFormatError, match="vision.bands"):
        load_model_info(bad)
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(ModelFormatError):
        load_model_info(tmp_path / "junk.onnx")


def test_external_data_outside_folder_is_refused(rgb_model: Path, tmp_path: Path) -> None:
    proto = onnx.load(str(rgb_model))
    init = proto.graph.initializer[0]
    init.ClearField("raw_data")
    init.data_location = onnx.TensorProto.EXTERNAL
    e = init.external_data.add()
    e.key, e.value = "location", "../../etc/passwd"
    bad = tmp_path / "m" / "model.onnx"
    bad.parent.mkdir()
    onnx.save(proto, str(bad))
    with pytest.raises(ModelFormatError, match="outside"):
        load_model_info(bad)


def test_device_choice() -> None:
    assert choose_device("cpu") == "cpu"
    assert choose_device("auto") in ("cpu", "cuda", "tensorrt")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ConfigError, match="CUDAExecutionProvider"):
            choose_device("cuda")
    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(ConfigError, match="TensorrtExecutionProvider"):
            choose_device("tensorrt")
    with pytest.raises(ConfigError):
        choose_device("tpu")


def test_missing_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError), resolve_model(str(tmp_path / "nope.onnx")):
        pass


def test_registry_uri_resolves(rgb_model: Path, tmp_path: Path,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    """models:/NAME@ALIAS and models:/NAME/VERSION through a local SQLite MLflow store."""
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from vision import settings

    mlflow.set_tracking_uri(settings.tracking_uri())
    exp = mlflow.create_experiment("t", artifact_location=settings.default_artifact_root())
    with mlflow.start_run(experiment_id=exp) as run:
        mlflow.log_artifact(str(rgb_model), artifact_path="model")
    client = mlflow.MlflowClient()
    client.create_registered_model("tiny")
    mv = client.create_model_version("tiny", f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias("tiny", "champion", mv.version)
    for uri in ("models:/tiny@champion", f"models:/tiny/{mv.version}"):
        with resolve_model(uri) as p:
            assert p.name == "model.onnx"
            assert load_model_info(p).sha256 == load_model_info(rgb_model).sha256
    with pytest.raises(ConfigError), resolve_model("models:/tiny@nope"):
        pass
    assert json.loads(json.dumps({"ok": True}))
