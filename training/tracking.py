"""MLflow: runs, metrics, artifacts and the model registry.

``MLFLOW_TRACKING_URI`` is honoured; without it a SQLite store ``mlflow.db`` in the working
directory is used, artifacts in ``mlartifacts/``. Every trained version gets the alias
``challenger``; only `promote` moves ``champion``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from vision import settings

log = logging.getLogger(__name__)

CHALLENGER, CHAMPION = "challenger", "champion"


def _mlflow() -> Any:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    warnings.filterwarnings("ignore", module="mlflow")
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri())
    mlflow.set_registry_uri(settings.tracking_uri())
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return mlflow


def client() -> Any:
    return _mlflow().MlflowClient()


def ensure_experiment(name: str) -> str:
    """Id of experiment ``name``, created (with a local artifact root) when missing."""
    mlflow = _mlflow()
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    uri = settings.tracking_uri()
    location = settings.default_artifact_root() + f"/{name}" if uri.startswith("sqlite") else None
    return str(mlflow.create_experiment(name, artifact_location=location))


def start_run(experiment: str, run_name: str, run_id: str | None = None) -> Any:
    """Start (or, with ``run_id``, reopen for `--resume`) an MLflow run."""
    mlflow = _mlflow()
    if run_id is not None:
        return mlflow.start_run(run_id=run_id)
    exp_id = ensure_experiment(experiment)
    return mlflow.start_run(experiment_id=exp_id, run_name=run_name)


def log_params(params: dict[str, Any]) -> None:
    mlflow = _mlflow()
    existing = mlflow.get_run(mlflow.active_run().info.run_id).data.params
    fresh = {k: str(v)[:6000] for k, v in params.items() if k not in existing}
    if fresh:
        mlflow.log_params(fresh)


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    _mlflow().log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    _mlflow().log_artifact(str(path), artifact_path=artifact_path)


def set_tags(tags: dict[str, str]) -> None:
    _mlflow().set_tags(tags)


def end_run(status: str = "FINISHED") -> None:
    _mlflow().end_run(status=status)


def register_version(name: str, run_id: str, artifact_uri: str, tags: dict[str, str] | None = None) -> str:
    """Register a new version of ``name`` from the run's ``model/`` artifacts; alias challenger."""
    c = client()
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):  # already registered
        c.create_registered_model(name)
    mv = c.create_model_version(name=name, source=f"{artifact_uri}/model", run_id=run_id,
                                tags=tags or {})
    c.set_registered_model_alias(name, CHALLENGER, mv.version)
    return str(mv.version)


def run_artifact_uri(run_id: str) -> str:
    return str(client().get_run(run_id).info.artifact_uri)


def get_version(name: str, version: str) -> Any:
    """The registered version ``name`` v``version``.

    Raises:
        ConfigError: no such model or version.
    """
    from mlflow.exceptions import MlflowException

    from vision.errors import ConfigError

    try:
        return client().get_model_version(name, str(version))
    except MlflowException as exc:
        raise ConfigError(f"no registered version {name} v{version} (see `vision models list`)") from exc


def get_registered_model(name: str) -> Any:
    """The registered model ``name``.

    Raises:
        ConfigError: no such model.
    """
    from mlflow.exceptions import MlflowException

    from vision.errors import ConfigError

    try:
        return client().get_registered_model(name)
    except MlflowException as exc:
        raise ConfigError(f"no registered model {name!r} (see `vision models list`)") from exc


def set_version_tags(name: str, version: str, tags: dict[str, str]) -> None:
    """Set tags on a registered version (promotion records, card location)."""
    c = client()
    for k, v in tags.items():
        c.set_model_version_tag(name, str(version), k, v)


def set_alias(name: str, alias: str, version: str) -> None:
    client().set_registered_model_alias(name, alias, str(version))


def log_run_artifact(run_id: str, path: Path, artifact_path: str | None = None) -> None:
    """Log a file to a run that need not be active (e.g. a model card made afterwards)."""
    client().log_artifact(run_id, str(path), artifact_path)


def download_run_artifact(run_id: str, artifact_path: str, dst: Path | None = None) -> Path | None:
    """Download one artifact of a run; ``None`` when the run does not have it."""
    mlflow = _mlflow()
    from mlflow.exceptions import MlflowException

    parent, _, leaf = artifact_path.rpartition("/")
    try:
        names = {Path(a.path).name for a in client().list_artifacts(run_id, parent or None)}
        if leaf not in names:
            return None
        return Path(mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=artifact_path, dst_path=str(dst) if dst else None))
    except (MlflowException, OSError) as exc:
        log.debug("artifact %s of run %s: %s", artifact_path, run_id, exc)
        return None


def list_run_artifacts(run_id: str, folder: str | None = None) -> list[str]:
    """Paths of the artifacts of a run in ``folder`` (not recursive)."""
    return [str(a.path) for a in client().list_artifacts(run_id, folder)]


def find_run_checkpoint(run_id: str) -> tuple[Path | None, str]:
    """The ``checkpoints/best.pt`` of a training run: in its run folder (tag ``vision.out``) or
    its ``checkpoint/best.pt`` artifact. Returns the path (or ``None``) and what was tried."""
    from mlflow.exceptions import MlflowException

    try:
        run = client().get_run(run_id)
    except MlflowException as exc:
        return None, f"MLflow run {run_id} not found in {settings.tracking_uri()} ({exc.error_code})"
    out = run.data.tags.get("vision.out")
    if out and (Path(out) / "checkpoints" / "best.pt").exists():
        return Path(out) / "checkpoints" / "best.pt", ""
    got = download_run_artifact(run_id, "checkpoint/best.pt")
    if got is not None:
        return got, ""
    return None, f"run {run_id}: no {out}/checkpoints/best.pt and no checkpoint/best.pt artifact"
