"""``model.stac.json``: the exported model as a STAC item with the Machine Learning Model
extension (MLM v1.4.0), written beside the ONNX file (``X.onnx`` -> ``X.stac.json``) by every
export: `vision export` (`training.export.command`) and the training run's own
(`training.finish`).

Everything comes from the ONNX file itself (its ``vision.*`` metadata, read and validated by
`vision.contracts.model.read_model_file`, and its bytes), so the item cannot disagree with
the model it describes:

- ``mlm:input``: the model's bands (Sentinel-2 ids; STAC ``bands`` with ``eo:common_name``
  beside them), shape ``[-1, C, H, W]`` and data type. The graph takes *raw* pixel values
  and normalises them itself, so ``value_scaling`` is ``null`` (a consumer must not scale
  them again); the in-graph normalisation is recorded in the input's description and in
  ``vision:normalisation``, and what the raw values must mean in ``vision:radiometry``.
- ``mlm:output``: logits ``[-1, K]`` with ``classification:classes`` (values, names and
  colours); the calibrated probability is ``softmax(logits / vision:temperature)``.
- ``gsd``: the training ground sampling distance in metres (``vision.gsd_m``).
- the ``model`` asset: the ONNX file (relative href), role ``mlm:model``, with its size and
  ``file:checksum``, a multihash of its SHA-256 (``1220`` + the hex digest: sha2-256, 32
  bytes), and the plain hex digest in ``vision:sha256``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vision.atomic import write_json_atomic
from vision.bands import SENTINEL2_BANDS, canonical_band
from vision.contracts.model import ModelFile, read_model_file
from vision.hashing import file_sha256

STAC_VERSION = "1.1.0"
MLM = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
FILE = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
EO = "https://stac-extensions.github.io/eo/v2.0.0/schema.json"
CLASSIFICATION = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
#: Media type of an ONNX artifact, as the MLM best practices write it.
ONNX_MEDIA_TYPE = "application/octet-stream; framework=onnx; profile=onnx"
#: Multihash prefix of a SHA-256 digest: function code 0x12, length 0x20.
SHA256_MULTIHASH = "1220"

_COMMON = {b.id: b.common_name for b in SENTINEL2_BANDS}


def stac_path(onnx_path: Path) -> Path:
    """Where the item of ``onnx_path`` goes: ``model.onnx`` -> ``model.stac.json``."""
    return onnx_path.with_name(onnx_path.stem + ".stac.json")


def _parameters(path: Path) -> int:
    """Number of values in the graph's initializers (its weights; the file was read and
    checked by `read_model_file` just before)."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    return sum(math.prod(t.dims) for t in proto.graph.initializer)


def _datetime(created_at: str) -> str:
    try:
        t = datetime.fromisoformat(created_at)
    except ValueError:
        t = datetime.now(UTC)
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _classes(classes: tuple[str, ...]) -> list[dict[str, Any]]:
    import re

    from vision.palette import class_colours

    return [{"value": k, "name": re.sub(r"[^0-9A-Za-z_-]", "_", c) or f"class_{k}", "title": c,
             "color_hint": "".join(f"{v:02X}" for v in rgb)}
            for k, (c, rgb) in enumerate(zip(classes, class_colours(classes), strict=True))]


def model_item(model: ModelFile, sha256: str, size: int) -> dict[str, Any]:
    """The STAC item of an exported model (see the module docstring)."""
    m = model.metadata
    c = len(m.bands)
    h, w = m.input_size
    norm = ("normalised inside the graph: (x - mean) / std per band, mean "
            f"{list(m.mean)} std {list(m.std)}" if m.mean is not None and m.std is not None
            else "fed to the network as they are")
    radiometry = m.radiometry.to_obj() if m.radiometry is not None else None
    accelerator = "cuda" if m.precision == "fp16" else "amd64"
    props: dict[str, Any] = {
        "datetime": _datetime(m.created_at),
        "title": f"{m.model_name} {m.model_version}".strip(),
        "description": f"{m.architecture} scene classifier of {c}-band {h} x {w} chips into "
                       f"{len(m.classes)} classes ({m.precision})",
        "mlm:name": m.model_name or m.architecture,
        "mlm:architecture": m.architecture,
        "mlm:tasks": ["classification", "scene-classification"],
        "mlm:framework": "ONNX",
        "mlm:memory_size": size,
        "mlm:accelerator": accelerator,
        "mlm:accelerator_constrained": False,
        "mlm:accelerator_summary": ("fp16 network, for GPUs (runs on CPUs, slowly)"
                                    if m.precision == "fp16" else
                                    "ONNX Runtime on CPU or GPU (CUDA, TensorRT)"),
        "mlm:input": [{
            "name": "pixels",
            "bands": list(m.bands),
            "input": {"shape": [-1, c, h, w], "dim_order": ["batch", "channel", "height", "width"],
                      "data_type": model.input_dtype},
            "value_scaling": None,
            "resize_type": None,
            "pre_processing_function": None,
            "description": f"raw pixel values, bands {list(m.bands)}, meaning what "
                           f"vision:radiometry says; {norm}",
        }],
        "mlm:output": [{
            "name": "logits",
            "tasks": ["classification"],
            "result": {"shape": [-1, len(m.classes)], "dim_order": ["batch", "class"],
                       "data_type": "float32"},
            "classification:classes": _classes(m.classes),
            "post_processing_function": None,
            "description": f"class logits; calibrated probabilities are softmax(logits / "
                           f"{m.temperature:g}) (vision:temperature)",
        }],
        "bands": [{"name": b, **({"eo:common_name": _COMMON[canonical_band(b) or b]}
                                 if (canonical_band(b) or b) in _COMMON else {})}
                  for b in m.bands],
        "gsd": m.gsd_m,
        "vision:radiometry": radiometry,
        "vision:normalisation": {"mean": list(m.mean) if m.mean is not None else None,
                                 "std": list(m.std) if m.std is not None else None,
                                 "in_graph": True},
        "vision:temperature": m.temperature,
        "vision:thresholds": dict(m.thresholds) if m.thresholds else None,
        "vision:precision": m.precision,
        "vision:model_version": m.model_version,
        "vision:train_data_fingerprint": m.train_data_fingerprint,
        "vision:mlflow_run_id": m.mlflow_run_id or None,
        "vision:tta": m.tta,
        "vision:schema_version": m.schema_version,
        "mlm:total_parameters": _parameters(model.path),
    }
    return {
        "type": "Feature", "stac_version": STAC_VERSION,
        "stac_extensions": [MLM, FILE, EO, CLASSIFICATION],
        "id": f"{m.model_name or m.architecture}-{m.model_version or 'unregistered'}",
        "geometry": None,
        "properties": props,
        "links": [],
        "assets": {"model": {
            "href": f"./{model.path.name}", "type": ONNX_MEDIA_TYPE, "roles": ["mlm:model", "data"],
            "title": f"ONNX model ({m.precision})", "mlm:artifact_type": "onnx",
            "file:size": size, "file:checksum": SHA256_MULTIHASH + sha256, "vision:sha256": sha256,
        }},
    }


def write_model_stac(onnx_path: Path) -> Path:
    """Write the STAC item of the exported ``onnx_path`` beside it (atomically); returns its
    path.

    Raises:
        ModelFormatError: the file breaks the model contract (an export just wrote it, so
            this is a bug, not a user error).
    """
    model = read_model_file(onnx_path)
    out = stac_path(onnx_path)
    write_json_atomic(out, model_item(model, file_sha256(onnx_path), onnx_path.stat().st_size))
    return out
