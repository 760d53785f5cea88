"""The exported model's contract (ARCHITECTURE.md §2) as a type.

`ModelMetadata` is what a ``model.onnx`` says about itself in its ``vision.*`` metadata
props: classes, bands, input size, normalisation, calibration and identity. Training
writes it (`ModelMetadata.to_onnx_props`), inference, evaluation, explanations and review
read it (`read_model_file`), and both sides validate it the same way, so a model whose
metadata disagrees with its graph, or claims an absurd input size, is refused by whoever
meets it first.

Values are strings in the ONNX file: plain for the identity fields (`STRING_KEYS`), JSON for
everything structured. Keys this version does not know are kept in `ModelMetadata.extra`
and written back unchanged, so a model passes through tools of another version intact.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vision.errors import ModelFormatError
from vision.radiometry import UNKNOWN, Radiometry
from vision.views import TTA_VIEWS, view_count

PREFIX = "vision."
#: The metadata schema this version writes, and the ones it reads (ARCHITECTURE.md §5:
#: readers accept 1 and 2; a schema-1 model has no radiometry).
SCHEMA_VERSION = 2
READABLE_SCHEMAS = frozenset({1, 2})
#: Largest input side a model may claim: a window of 4096 x 4096 pixels per band is
#: already far beyond any chip classifier; a larger claim is a lie or a mistake, and
#: believing it allocates terabytes.
MAX_INPUT_SIDE = 4096
MAX_CLASSES = 65535
PRECISIONS = ("fp32", "fp16", "int8")

#: Keys whose values are plain strings (everything else is JSON).
STRING_KEYS = frozenset({
    "schema_version", "architecture", "model_name", "model_version", "mlflow_run_id",
    "train_data_fingerprint", "created_at", "checkpoint", "precision", "tta",
})
#: Keys every model of this project carries.
REQUIRED_KEYS = ("classes", "bands", "input_size")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ModelMetadata:
    """The ``vision.*`` metadata of an exported model.

    Attributes:
        classes: class names in output order.
        bands: band names in input order (``pixels`` has this many channels).
        input_size: ``(H, W)`` the model takes.
        mean, std: per-band normalisation in raw units (informational: it is in the graph).
        temperature: softmax temperature for calibrated probabilities (1.0: uncalibrated).
        thresholds: per-class operating points ``{class: probability}``, or ``None``.
        architecture, model_name, model_version, mlflow_run_id, train_data_fingerprint,
            created_at: identity and provenance.
        checkpoint: where the PyTorch weights live (for explanations), or ``None``.
        precision: ``fp32``, ``fp16`` or ``int8``.
        work_size: ``(H, W)`` the network runs at inside the graph, when not ``input_size``.
        tta: test-time views inside the graph (``flips`` or ``d8``), ``None`` for one pass.
        quantization: how an int8 model was quantized (informational).
        radiometry: what the pixel values fed to ``pixels`` mean, as trained (schema 2;
            ``None``: not recorded, e.g. a schema-1 model: treat it as unknown).
        gsd_m: the training ground sampling distance in metres (schema 2; ``None``: unknown).
        schema_version: of this metadata (`SCHEMA_VERSION` when written by this version).
        extra: ``vision.*`` keys this version does not know, as read (kept on rewrite).
    """

    classes: tuple[str, ...]
    bands: tuple[str, ...]
    input_size: tuple[int, int]
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    temperature: float = 1.0
    thresholds: Mapping[str, float] | None = None
    architecture: str = ""
    model_name: str = ""
    model_version: str = ""
    mlflow_run_id: str = ""
    train_data_fingerprint: str = ""
    created_at: str = field(default_factory=_now)
    checkpoint: str | None = None
    precision: str = "fp32"
    work_size: tuple[int, int] | None = None
    tta: str | None = None
    quantization: Mapping[str, Any] | None = None
    radiometry: Radiometry | None = None
    gsd_m: float | None = None
    schema_version: int = SCHEMA_VERSION
    extra: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # -- validation --------------------------------------------------------------------------

    def validate(self) -> None:
        """Refuse metadata that no model of this project can have.

        Raises:
            ModelFormatError: naming the first field that is wrong and why.
        """
        if not self.classes:
            raise ModelFormatError("vision.classes is empty: a classifier needs classes")
        if len(self.classes) > MAX_CLASSES:
            raise ModelFormatError(f"vision.classes lists {len(self.classes)} classes (at most {MAX_CLASSES})")
        if len(set(self.classes)) != len(self.classes):
            raise ModelFormatError(f"vision.classes has duplicate names: {list(self.classes)}")
        if not self.bands:
            raise ModelFormatError("vision.bands is empty: the model must name its input bands")
        _check_size("input_size", self.input_size)
        if self.work_size is not None:
            _check_size("work_size", self.work_size)
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v is None:
                continue
            if len(v) != len(self.bands):
                raise ModelFormatError(
                    f"vision.{name} has {len(v)} values for {len(self.bands)} bands {list(self.bands)}")
            if not all(math.isfinite(x) for x in v) or (name == "std" and min(v) <= 0):
                raise ModelFormatError(f"vision.{name} must be finite{' and positive' if name == 'std' else ''}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            raise ModelFormatError(f"vision.temperature must be a positive number, not {self.temperature}")
        if self.thresholds:
            unknown = [c for c in self.thresholds if c not in self.classes]
            if unknown:
                raise ModelFormatError(f"vision.thresholds names unknown classes {unknown}")
            bad = [c for c, t in self.thresholds.items() if not (math.isfinite(t) and 0 <= t <= 1)]
            if bad:
                raise ModelFormatError(f"vision.thresholds must be probabilities in [0, 1] ({bad})")
        if self.precision not in PRECISIONS:
            raise ModelFormatError(f"vision.precision must be one of {PRECISIONS}, not {self.precision!r}")
        if self.tta is not None and self.tta not in TTA_VIEWS:
            raise ModelFormatError(f"vision.tta must be one of {sorted(TTA_VIEWS)}, not {self.tta!r}")
        if self.radiometry is not None and not isinstance(self.radiometry, Radiometry):
            raise ModelFormatError(f"vision.radiometry must be a Radiometry, not {type(self.radiometry).__name__}")
        if self.gsd_m is not None and not (isinstance(self.gsd_m, (int, float)) and math.isfinite(self.gsd_m)
                                           and 0 < self.gsd_m <= 1e6):
            raise ModelFormatError(f"vision.gsd_m must be a positive number of metres, not {self.gsd_m!r}")
        if self.schema_version not in READABLE_SCHEMAS:
            raise ModelFormatError(
                f"vision.schema_version {self.schema_version} is not one this version reads "
                f"({sorted(READABLE_SCHEMAS)}); upgrade vision or re-export the model")

    # -- derived -------------------------------------------------------------------------------

    @property
    def num_bands(self) -> int:
        return len(self.bands)

    @property
    def pixel_radiometry(self) -> Radiometry:
        """What the model's input values mean; `vision.radiometry.UNKNOWN` when not recorded."""
        return self.radiometry if self.radiometry is not None else UNKNOWN

    @property
    def views(self) -> int:
        """Forward passes per chip (the test-time views inside the graph)."""
        return view_count(self.tta)

    def threshold_array(self) -> dict[int, float] | None:
        """Thresholds keyed by class index, or ``None``."""
        if not self.thresholds:
            return None
        return {self.classes.index(c): float(t) for c, t in self.thresholds.items()}

    def with_(self, **changes: Any) -> ModelMetadata:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    # -- ONNX props ----------------------------------------------------------------------------

    def to_onnx_props(self) -> dict[str, str]:
        """The ``vision.*`` metadata props: plain strings or JSON; ``None`` fields omitted."""
        out: dict[str, str] = {}
        for f in fields(self):
            if f.name == "extra":
                continue
            v = getattr(self, f.name)
            if v is None:
                continue
            if f.name in STRING_KEYS:
                out[PREFIX + f.name] = str(v)
            else:
                out[PREFIX + f.name] = json.dumps(_plain(v))
        for k, v in self.extra.items():
            out.setdefault(PREFIX + k, v)
        return out

    @classmethod
    def from_onnx(cls, proto: Any, source: str = "model") -> ModelMetadata:
        """Parse and validate the ``vision.*`` metadata of an ONNX ``ModelProto`` (`onnx_props`).

        Raises:
            ModelFormatError: as `from_props`.
        """
        return cls.from_props(onnx_props(proto), source)

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str = "model") -> ModelMetadata:
        """Parse and validate ``vision.*`` props (other keys are ignored).

        Raises:
            ModelFormatError: a required key is missing, a value does not parse, or the
                metadata is invalid; the message names ``source``.
        """
        raw = {k[len(PREFIX):]: v for k, v in props.items() if k.startswith(PREFIX)}
        missing = [k for k in REQUIRED_KEYS if k not in raw]
        if missing:
            raise ModelFormatError(
                f"{source}: metadata lacks {', '.join(PREFIX + k for k in missing)}; export the model"
                " with `vision export` so that it describes its classes, bands and input size")
        known = {f.name for f in fields(cls)} - {"extra"}
        try:
            kw: dict[str, Any] = {}
            for k, v in raw.items():
                if k not in known:
                    continue
                kw[k] = _parse_field(k, v)
            kw.setdefault("created_at", "")  # not "now": the file does not say when
            extra = {k: v for k, v in raw.items() if k not in known}
            return cls(**kw, extra=extra)
        except ModelFormatError as exc:
            raise ModelFormatError(f"{source}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ModelFormatError(f"{source}: unreadable vision.* metadata ({exc})") from exc


def _check_size(name: str, size: Sequence[int]) -> None:
    if len(size) != 2 or not all(isinstance(v, int) for v in size):
        raise ModelFormatError(f"vision.{name} must be [H, W] whole numbers, not {list(size)}")
    if not all(0 < v <= MAX_INPUT_SIDE for v in size):
        raise ModelFormatError(
            f"vision.{name} {list(size)} is out of range: each side must be 1..{MAX_INPUT_SIDE} pixels")


def _plain(v: Any) -> Any:
    if isinstance(v, Radiometry):
        return v.to_obj()
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


def _json(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def _parse_field(key: str, value: str) -> Any:
    if key == "schema_version":
        return int(value)
    if key in STRING_KEYS:
        return value
    v = _json(value)
    if key in ("classes", "bands"):
        if not isinstance(v, list):
            raise ValueError(f"vision.{key} must be a JSON list")
        return tuple(str(x) for x in v)
    if key in ("input_size", "work_size"):
        if v is None:
            return None
        if not isinstance(v, list) or not all(isinstance(x, (int, float)) and float(x).is_integer() for x in v):
            raise ValueError(f"vision.{key} must be a JSON list of whole numbers")
        return tuple(int(x) for x in v)
    if key in ("mean", "std"):
        if v is None:
            return None
        if not isinstance(v, list):
            raise ValueError(f"vision.{key} must be a JSON list")
        return tuple(float(x) for x in v)
    if key == "temperature":
        return float(v)
    if key == "thresholds":
        if v is None or v == {}:
            return None
        if not isinstance(v, dict):
            raise ValueError("vision.thresholds must be a JSON object {class: threshold}")
        return {str(c): float(t) for c, t in v.items()}
    if key == "quantization":
        return v if isinstance(v, dict) else None
    if key == "radiometry":
        return None if v is None else Radiometry.from_obj(v)
    if key == "gsd_m":
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError("vision.gsd_m must be a JSON number")
        return float(v)
    return v


@dataclass(frozen=True)
class ModelFile:
    """An ONNX file checked against the contract: its metadata and its input type.

    Attributes:
        path: the file.
        metadata: its validated `ModelMetadata`.
        input_dtype: ``float32`` or ``float16`` (a network exported with ``--fp16`` may take
            half inputs).
        external_data: the graph keeps tensors in files beside it.
    """

    path: Path
    metadata: ModelMetadata
    input_dtype: str = "float32"
    external_data: bool = False


def check_external_data(proto: Any, path: Path) -> bool:
    """Refuse tensors stored outside the model's folder; return whether any are external.

    Raises:
        ModelFormatError: a tensor's data file is outside the model's folder or missing.
    """
    import onnx

    folder = path.parent.resolve()
    external = False
    for tensor in onnx.external_data_helper._get_all_tensors(proto):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        external = True
        info = {e.key: e.value for e in tensor.external_data}
        loc = (folder / info.get("location", "")).resolve()
        if not loc.is_relative_to(folder) or not loc.is_file():
            raise ModelFormatError(
                f"{path}: tensor {tensor.name!r} points at external data {info.get('location')!r}"
                " outside the model's folder (or missing); refused")
    return external


def read_model_file(path: str | Path) -> ModelFile:
    """Read and validate an ONNX model of this project (the graph is not run).

    Checks: the file parses as ONNX, external data stays in the model's folder, the graph
    has a float ``pixels`` input and a ``logits`` output, the metadata is valid, and the
    input's channel dimension (when fixed) equals the number of bands.

    Raises:
        ModelFormatError: any of these fails.
        FileNotFoundError: there is no such file.
    """
    import onnx

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model file not found: {p}")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for a bad file
        raise ModelFormatError(f"{p}: not an ONNX model ({exc})") from exc
    external = check_external_data(proto, p)
    inputs = [i for i in proto.graph.input if i.name == "pixels"]
    if not inputs or not any(o.name == "logits" for o in proto.graph.output):
        raise ModelFormatError(f"{p}: expected an input 'pixels' and an output 'logits'")
    ttype = inputs[0].type.tensor_type
    if ttype.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
        raise ModelFormatError(f"{p}: input 'pixels' must be float32 or float16")
    meta = ModelMetadata.from_onnx(proto, str(p))
    dims = list(ttype.shape.dim)
    if len(dims) == 4 and dims[1].HasField("dim_value") and dims[1].dim_value != meta.num_bands:
        raise ModelFormatError(
            f"{p}: the graph takes {dims[1].dim_value} channels but vision.bands names "
            f"{meta.num_bands} {list(meta.bands)}")
    for k, side in ((2, 0), (3, 1)):
        if len(dims) == 4 and dims[k].HasField("dim_value") and dims[k].dim_value != meta.input_size[side]:
            raise ModelFormatError(
                f"{p}: the graph takes {dims[2].dim_value}x{dims[3].dim_value} inputs but "
                f"vision.input_size says {list(meta.input_size)}")
    dtype = "float16" if ttype.elem_type == onnx.TensorProto.FLOAT16 else "float32"
    return ModelFile(p, meta, dtype, external)


def onnx_props(proto: Any) -> dict[str, str]:
    """Every metadata prop of an ONNX ``ModelProto`` (``vision.*`` and any other), as a dict."""
    return {e.key: e.value for e in proto.metadata_props}


def set_onnx_props(proto: Any, meta: ModelMetadata, keep_other: bool = False) -> None:
    """Write ``meta`` into an ONNX ``ModelProto``'s metadata props (replacing ``vision.*``;
    other props are dropped unless ``keep_other``)."""
    others = [(e.key, e.value) for e in proto.metadata_props if not e.key.startswith(PREFIX)]
    del proto.metadata_props[:]
    for k, v in [*(others if keep_other else []), *meta.to_onnx_props().items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = k, v
