"""vision.contracts: the model metadata and the prediction row as types (ARCHITECTURE.md §2, §3)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import onnx
import pyarrow as pa
import pytest
from onnx import TensorProto, helper

from vision.contracts.model import (
    MAX_INPUT_SIDE,
    ModelMetadata,
    read_model_file,
    set_onnx_props,
)
from vision.contracts.predictions import (
    ACQUIRED_TYPE,
    NOT_ASSESSED,
    PREDICTION_SCHEMA,
    STATUS_CLOUDY,
    STATUSES,
    new_row,
    rows_to_table,
)
from vision.errors import ModelFormatError

BASE = dict(classes=("Crop", "Forest"), bands=("B04", "B03", "B02"), input_size=(64, 64),
            mean=(1.0, 2.0, 3.0), std=(1.0, 1.0, 1.0))


def _onnx(path: Path, channels: int, meta: ModelMetadata | None, hw: tuple[int, int] = (64, 64)) -> Path:
    """A one-node graph (GlobalAveragePool -> Flatten) with a fixed channel count."""
    x = helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", channels, *hw])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", channels])
    g = helper.make_graph([helper.make_node("GlobalAveragePool", ["pixels"], ["p"]),
                           helper.make_node("Flatten", ["p"], ["logits"])], "g", [x], [y])
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    if meta is not None:
        set_onnx_props(proto, meta)
    onnx.save(proto, str(path))
    return path


def test_metadata_round_trips_through_onnx_props() -> None:
    meta = ModelMetadata(**BASE, temperature=1.7, thresholds={"Crop": 0.4}, tta="d8",
                         work_size=(80, 80), quantization={"method": "x"}, checkpoint="/r/best.pt")
    props = meta.to_onnx_props()
    assert all(k.startswith("vision.") and isinstance(v, str) for k, v in props.items())
    assert props["vision.tta"] == "d8" and json.loads(props["vision.classes"]) == ["Crop", "Forest"]
    back = ModelMetadata.from_props(props)
    assert back == meta
    assert back.views == 8 and back.threshold_array() == {0: 0.4}


def test_unknown_keys_are_kept_and_written_back() -> None:
    props = ModelMetadata(**BASE).to_onnx_props()
    props["vision.future_key"] = '{"a": 1}'
    back = ModelMetadata.from_props(props)
    assert back.extra == {"future_key": '{"a": 1}'}
    assert back.to_onnx_props()["vision.future_key"] == '{"a": 1}'


@pytest.mark.parametrize("change, message", [
    ({"input_size": (0, 0)}, "out of range"),
    ({"input_size": (-64, 64)}, "out of range"),
    ({"input_size": (100_000, 100_000)}, "out of range"),
    ({"classes": ()}, "classes is empty"),
    ({"classes": ("a", "a")}, "duplicate"),
    ({"bands": ()}, "bands is empty"),
    ({"mean": (1.0, 2.0)}, "2 values for 3 bands"),
    ({"std": (1.0, 0.0, 1.0)}, "positive"),
    ({"temperature": math.nan}, "temperature"),
    ({"temperature": -1.0}, "temperature"),
    ({"thresholds": {"Water": 0.5}}, "unknown classes"),
    ({"thresholds": {"Crop": 1.5}}, r"\[0, 1\]"),
    ({"tta": "d16"}, "tta"),
    ({"precision": "int4"}, "precision"),
    ({"schema_version": 9}, "schema_version 9"),
])
def test_invalid_metadata_is_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ModelFormatError, match=message):
        ModelMetadata(**{**BASE, **change})  # type: ignore[arg-type]


def test_a_huge_input_size_in_a_file_is_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    path = _onnx(tmp_path / "m.onnx", 3, None)
    proto = onnx.load(str(path))
    props = ModelMetadata(**BASE).to_onnx_props()
    props["vision.input_size"] = json.dumps([MAX_INPUT_SIDE * 25, MAX_INPUT_SIDE * 25])
    for k, v in props.items():
        e = proto.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(proto, str(path))
    with pytest.raises(ModelFormatError, match=f"1..{MAX_INPUT_SIDE}"):
        read_model_file(path)


def test_metadata_must_agree_with_the_graph(tmp_path: Path) -> None:
    ok = read_model_file(_onnx(tmp_path / "ok.onnx", 3, ModelMetadata(**BASE)))
    assert ok.metadata.bands == ("B04", "B03", "B02") and ok.input_dtype == "float32"
    with pytest.raises(ModelFormatError, match="takes 4 channels"):
        read_model_file(_onnx(tmp_path / "c.onnx", 4, ModelMetadata(**BASE)))
    with pytest.raises(ModelFormatError, match="input_size"):
        read_model_file(_onnx(tmp_path / "s.onnx", 3, ModelMetadata(**BASE), hw=(32, 32)))
    with pytest.raises(ModelFormatError, match="lacks vision.classes"):
        read_model_file(_onnx(tmp_path / "none.onnx", 3, None))
    (tmp_path / "junk.onnx").write_bytes(b"\x00junk")
    with pytest.raises(ModelFormatError, match="not an ONNX model"):
        read_model_file(tmp_path / "junk.onnx")
    with pytest.raises(FileNotFoundError):
        read_model_file(tmp_path / "absent.onnx")


def test_schema_1_files_without_optional_keys_read() -> None:
    props = {"vision.schema_version": "1", "vision.classes": '["a", "b"]',
             "vision.bands": '["B04"]', "vision.input_size": "[32, 32]", "vision.temperature": "1.0",
             "vision.thresholds": "{}"}
    meta = ModelMetadata.from_props(props)
    assert meta.thresholds is None and meta.mean is None and meta.precision == "fp32"
    assert meta.created_at == "" and meta.views == 1


def test_a_row_has_every_column_and_rejects_unknown_ones() -> None:
    row = new_row("a.jpg", "ok", "ab" * 32, label=1, class_name="Forest", probs=[0.2, 0.8])
    assert set(row) == set(PREDICTION_SCHEMA.names)
    table = rows_to_table([row])
    assert table.schema == PREDICTION_SCHEMA
    assert table.to_pylist()[0]["probs"] == pytest.approx([0.2, 0.8])
    assert table["row_off"].null_count == 1
    with pytest.raises(KeyError, match="not a prediction column"):
        new_row("a.jpg", "ok", None, colour="red")
    assert pa.types.is_list(PREDICTION_SCHEMA.field("probs").type)


def test_schema_2_columns_build_like_pyarrow_and_refuse_naive_times() -> None:
    when = datetime(2020, 2, 19, 11, 23, 41, 24_000, tzinfo=UTC)
    rows = [new_row("s.tif", "ok", None, item_id="S2A_29RKH", acquired=when, cloud_fraction=0.25, aoi_id="a1"),
            new_row("s.tif", "cloudy", None,
                    acquired=datetime(2020, 2, 19, 12, 23, tzinfo=timezone(timedelta(hours=1))))]
    table = rows_to_table(rows)
    assert table.column("acquired").combine_chunks().equals(pa.array([when, datetime(2020, 2, 19, 11, 23, tzinfo=UTC)],
                                                                      ACQUIRED_TYPE))
    assert table.to_pylist()[1]["item_id"] is None and table.to_pylist()[0]["cloud_fraction"] == 0.25
    assert STATUS_CLOUDY in STATUSES and STATUS_CLOUDY in NOT_ASSESSED
    with pytest.raises(TypeError, match="naive"):
        rows_to_table([new_row("s.tif", "ok", None, acquired=datetime(2020, 2, 19))])


def test_schema_2_radiometry_and_gsd_round_trip_through_onnx(tmp_path: Path) -> None:
    from vision.contracts.model import SCHEMA_VERSION
    from vision.radiometry import EUROSAT_MS

    meta = ModelMetadata(**BASE, radiometry=EUROSAT_MS, gsd_m=10.0)
    assert meta.schema_version == SCHEMA_VERSION == 2
    props = meta.to_onnx_props()
    assert json.loads(props["vision.radiometry"])["level"] == "L1C" and props["vision.gsd_m"] == "10.0"
    back = read_model_file(_onnx(tmp_path / "m.onnx", 3, meta)).metadata
    assert back == meta and back.pixel_radiometry == EUROSAT_MS and back.gsd_m == 10.0


def test_a_schema_1_model_has_unknown_radiometry_and_gsd() -> None:
    from vision.radiometry import UNKNOWN

    props = {"vision.schema_version": "1", "vision.classes": '["a", "b"]', "vision.bands": '["B04"]',
             "vision.input_size": "[32, 32]"}
    meta = ModelMetadata.from_props(props)
    assert meta.schema_version == 1 and meta.radiometry is None and meta.gsd_m is None
    assert meta.pixel_radiometry == UNKNOWN
    assert "vision.radiometry" not in meta.to_onnx_props()


@pytest.mark.parametrize("key, value, message", [
    ("vision.radiometry", '{"kind": "radiance"}', "not a radiometry"),
    ("vision.radiometry", '{"kind": "reflectance", "level": "L9"}', "radiometry level"),
    ("vision.radiometry", "[1]", "not a radiometry"),
    ("vision.gsd_m", "-10", "gsd_m"),
    ("vision.gsd_m", '"ten"', "gsd_m"),
])
def test_bad_schema_2_fields_are_refused(key: str, value: str, message: str) -> None:
    props = ModelMetadata(**BASE).to_onnx_props()
    props[key] = value
    with pytest.raises(ModelFormatError, match=message):
        ModelMetadata.from_props(props)
