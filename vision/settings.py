"""Environment settings, read in one place.

- ``VISION_DATA_DIR``: where the shared datasets live (default ``../shared/data`` relative to
  the working directory).
- ``MLFLOW_TRACKING_URI``: MLflow tracking store; default a SQLite file ``mlflow.db`` in the
  working directory, with artifacts under ``mlartifacts/`` beside it.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DATA_DIR = Path("..") / "shared" / "data"


def data_dir() -> Path:
    """The folder holding the shared datasets (``eurosat-rgb/``, ``eurosat-ms/``, ``scenes/``)."""
    return Path(os.environ.get("VISION_DATA_DIR", str(DEFAULT_DATA_DIR))).expanduser()


def tracking_uri() -> str:
    """The MLflow tracking URI in force: the environment's, or the local SQLite default."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def default_artifact_root() -> str:
    """Where runs store artifacts when the default local store is used."""
    return (Path.cwd() / "mlartifacts").as_uri()
