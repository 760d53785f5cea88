"""The model a job runs: where it comes from, what its metadata says, and its identity.

A model is an ``.onnx`` file exported to the contract of ARCHITECTURE.md §2 (raw pixels in,
logits out, ``vision.*`` metadata), or an MLflow registry URI (``models:/NAME@ALIAS``,
``models:/NAME/VERSION``) whose version's artifact folder holds ``model.onnx``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vision import settings
from vision.errors import ConfigError, ModelFormatError
from vision.views import view_count

log = logging.getLogger(__name__)

#: Metadata keys a model must carry (without the ``vision.`` prefix).
REQUIRED_KEYS = ("classes", "bands", "input_size")


@dataclass(frozen=True)
class ModelInfo:
    """What the runner needs to know about a model, read from its ``vision.*`` metadata.

    Attributes:
        path: the local ``.onnx`` file.
        sha256: of the file's bytes (traceability: every prediction row carries it).
        classes: class names in output order.
        bands: band names in input order.
        input_size: ``(H, W)`` the model takes.
        temperature: softmax temperature for calibrated probabilities.
        thresholds: per-class operating points (class index -> threshold), or ``None``.
        mean: per-band mean in raw units (used to fill the few nodata pixels of a window
            that is classified anyway), or ``None``.
        model_name, model_version: identity from the metadata (or the file name).
        input_dtype: ``float32`` or ``float16`` (a model exported with ``--fp16``).
        metadata: every ``vision.*`` entry, parsed.
    """

    path: Path
    sha256: str
    classes: list[str]
    bands: list[str]
    input_size: tuple[int, int]
    temperature: float
    thresholds: dict[int, float] | None
    mean: list[float] | None
    model_name: str
    model_version: str
    input_dtype: str = "float32"
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def num_bands(self) -> int:
        return len(self.bands)

    @property
    def precision(self) -> str:
        """``fp32``, ``fp16`` or ``int8`` (``vision.precision``; fp32 when absent)."""
        return str(self.metadata.get("precision", "fp32"))

    @property
    def views(self) -> int:
        """Forward passes per chip: the model's test-time views (``vision.tta``), 1 if none."""
        return view_count(self.metadata.get("tta"))


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file, read in chunks (never the whole file in memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _parse(value: str) -> Any:
    try:
        return json.loads(value)
    except (json.JSONDecodeError, TypeError):
        return value


def _check_external_data(model: Any, path: Path) -> bool:
    """Refuse tensors stored outside the model's folder; return whether any are external."""
    import onnx

    folder = path.parent.resolve()
    external = False
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        external = True
        info = {e.key: e.value for e in tensor.external_data}
        loc = (folder / info.get("location", "")).resolve()
        if not loc.is_relative_to(folder) or not loc.is_file():
            raise ModelFormatError(
                f"{path}: tensor {tensor.name!r} points at external data {info.get('location')!r}"
                " outside the model's folder (or missing); refused"
            )
    return external


def load_model_info(path: str | Path) -> ModelInfo:
    """Read and validate a model's metadata (the graph itself is loaded by the session).

    Raises:
        ConfigError: the file does not exist.
        ModelFormatError: not an ONNX model of this project (missing metadata, bad input).
    """
    import onnx

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"model file not found: {p}")
    try:
        proto = onnx.load(str(p), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for a bad file
        raise ModelFormatError(f"{p}: not an ONNX model ({exc})") from exc
    _check_external_data(proto, p)
    meta = {
        prop.key[len("vision."):]: _parse(prop.value)
        for prop in proto.metadata_props
        if prop.key.startswith("vision.")
    }
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    if missing:
        raise ModelFormatError(
            f"{p}: metadata lacks {', '.join('vision.' + k for k in missing)}; export the model"
            " with `vision export` so that it describes its classes, bands and input size"
        )
    inputs = [i for i in proto.graph.input if i.name == "pixels"]
    if not inputs or not any(o.name == "logits" for o in proto.graph.output):
        raise ModelFormatError(f"{p}: expected an input 'pixels' and an output 'logits'")
    elem = inputs[0].type.tensor_type.elem_type
    if elem not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
        raise ModelFormatError(f"{p}: input 'pixels' must be float32 or float16")
    classes = [str(c) for c in meta["classes"]]
    bands = [str(b) for b in meta["bands"]]
    try:
        h, w = (int(v) for v in meta["input_size"])
        temperature = float(meta.get("temperature", 1.0))
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"{p}: bad vision.input_size or vision.temperature ({exc})") from exc
    if not classes or not bands or h <= 0 or w <= 0 or temperature <= 0:
        raise ModelFormatError(f"{p}: empty classes/bands or non-positive size/temperature")
    thresholds: dict[int, float] | None = None
    raw_thr = meta.get("thresholds")
    if isinstance(raw_thr, dict) and raw_thr:
        unknown = [c for c in raw_thr if c not in classes]
        if unknown:
            raise ModelFormatError(f"{p}: thresholds for unknown classes {unknown}")
        thresholds = {classes.index(c): float(t) for c, t in raw_thr.items()}
    mean = meta.get("mean")
    mean_list = [float(m) for m in mean] if isinstance(mean, list) and len(mean) == len(bands) else None
    return ModelInfo(
        path=p,
        sha256=file_sha256(p),
        classes=classes,
        bands=bands,
        input_size=(h, w),
        temperature=temperature,
        thresholds=thresholds,
        mean=mean_list,
        model_name=str(meta.get("model_name") or p.stem),
        model_version=str(meta.get("model_version") or ""),
        input_dtype="float16" if elem == onnx.TensorProto.FLOAT16 else "float32",
        metadata=meta,
    )


def is_registry_uri(model: str) -> bool:
    return model.startswith("models:/")


@contextlib.contextmanager
def resolve_model(model: str) -> Iterator[Path]:
    """A local path to the ``.onnx`` file named by ``model`` (a path or a registry URI).

    Registry URIs are downloaded with `mlflow.artifacts.download_artifacts` from the tracking
    store in force (``MLFLOW_TRACKING_URI``, default ``sqlite:///mlflow.db`` in the working
    directory) into a temporary folder that is removed when the block ends.

    Raises:
        ConfigError: the path does not exist, or the URI cannot be resolved.
    """
    if not is_registry_uri(model):
        p = Path(model)
        if not p.is_file():
            raise ConfigError(f"model not found: {model} (give an .onnx file or models:/NAME@ALIAS)")
        yield p
        return
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri())
    tmp = Path(tempfile.mkdtemp(prefix="vision-model-"))
    try:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model, dst_path=str(tmp)))
        except Exception as exc:  # MlflowException, OSError, ...: all mean "cannot resolve"
            raise ConfigError(
                f"cannot resolve {model} in the MLflow store {settings.tracking_uri()}: {exc}"
            ) from exc
        candidates = [local] if local.is_file() else sorted(local.rglob("model.onnx"))
        if not candidates or candidates[0].suffix != ".onnx":
            raise ConfigError(f"{model}: the registered version's artifacts hold no model.onnx")
        log.info("model %s resolved to %s", model, candidates[0])
        yield candidates[0]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
