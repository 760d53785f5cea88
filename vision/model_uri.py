"""Where a model comes from: a local ``.onnx`` path or an MLflow registry URI.

``models:/NAME@ALIAS`` and ``models:/NAME/VERSION`` are resolved against the tracking store
in force (``MLFLOW_TRACKING_URI``, default ``sqlite:///mlflow.db`` in the working
directory): the version's artifacts are downloaded into a temporary folder that lives as
long as the ``with`` block, and its ``model.onnx`` is handed out. Every consumer then reads
the file with `vision.contracts.model.read_model_file`, which refuses external data
outside the model's folder.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from vision import settings
from vision.errors import ConfigError

log = logging.getLogger(__name__)

REGISTRY_SCHEME = "models:/"
#: A well-formed registry URI: ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``.
REGISTRY_URI = re.compile(r"^models:/[A-Za-z0-9_.-]+(@[A-Za-z0-9_.-]+|/[0-9]+)$")


def is_registry_uri(model: str) -> bool:
    """Whether ``model`` names a registered version rather than a file."""
    return model.startswith(REGISTRY_SCHEME)


def is_wellformed_registry_uri(model: str) -> bool:
    """Whether ``model`` is a registry URI of the accepted grammar (`REGISTRY_URI`)."""
    return REGISTRY_URI.match(model) is not None


@contextlib.contextmanager
def resolve_model(model: str) -> Iterator[Path]:
    """A local path to the ``.onnx`` file named by ``model`` (a path or a registry URI).

    Raises:
        ConfigError: the path does not exist, or the URI cannot be resolved, or the
            registered version holds no ``model.onnx``.
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
