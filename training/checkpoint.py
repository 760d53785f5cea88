"""Checkpoints as types, stored as files that load with ``torch.load(..., weights_only=True)``.

Two kinds of checkpoint live in a run folder:

- `InferenceCheckpoint` (``checkpoints/best.pt``): the weights plus how to rebuild the model
  (architecture, classes, bands, normalisation, input size, views) and its calibration.
  Evaluation, export, explanations and model cards rebuild the model from it
  (`InferenceCheckpoint.build_model`).
- `TrainState` (``checkpoints/last.pt``, after every epoch): model, optimizer, scheduler,
  scaler and weight-average state, RNG states (torch, numpy, Python) and the run's progress,
  so ``--resume`` continues exactly where the last completed epoch left off.

On disk both are plain dicts of tensors and Python containers (the types convert to and
from them); checkpoints written before these types existed load unchanged, with the
defaults their readers used to assume. A file that is not a checkpoint (empty, truncated,
garbage, a pickle of arbitrary objects) is a `CheckpointError` naming the file.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vision.atomic import atomic_path
from vision.errors import ModelFormatError

if TYPE_CHECKING:
    from vision.models import NormalizedClassifier


class CheckpointError(ModelFormatError):
    """A file given as a checkpoint cannot be read as one (exit code 1 at the CLI)."""


def save_checkpoint(path: Path, state: Mapping[str, Any]) -> None:
    """Save ``state`` atomically (a crash mid-write never leaves a truncated checkpoint)."""
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load a checkpoint file safely (``weights_only=True``: no code runs from a pickle).

    Raises:
        CheckpointError: the file is missing, empty, truncated, not a torch file, holds
            objects other than tensors and containers, or is not a dict.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: no checkpoint file there")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises EOFError, KeyError, RuntimeError, UnpicklingError...
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{p}: not a readable checkpoint (empty, truncated or not written by `vision train`: "
            f"{reason})") from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{p}: not a checkpoint (holds a {type(obj).__name__}, not a dict)")
    return obj


def _pair(value: Any, what: str, path: Path) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: {what} {value!r} is not a pair of integers") from exc
    return h, w


@dataclass
class InferenceCheckpoint:
    """``best.pt``: the weights and what is needed to rebuild and run the model.

    Attributes:
        state_dict: weights of the `NormalizedClassifier` (key ``model`` on disk).
        architecture: registry name (`vision.models.get_spec`).
        classes: class names in logit order.
        bands: band names in input order.
        mean, std: per-band normalisation, raw units.
        input_size: ``(H, W)`` the model takes.
        epoch: the epoch the weights are from.
        work_size: ``(H, W)`` the network runs at inside the model, or ``None``.
        tta: test-time views (``none``, ``flips``, ``d8``).
        temperature: calibration temperature (1.0 until calibrated).
        thresholds: per-class operating points.
        model_name: registered model name.
        dropout: classifier dropout (rebuilds the same module tree).
        radiometry: what the training pixels meant (`vision.radiometry.Radiometry` JSON object),
            ``None`` for checkpoints from before it was recorded.
        gsd_m: the training chips' ground sampling distance in metres, ``None`` when unknown.
    """

    state_dict: dict[str, torch.Tensor]
    architecture: str
    classes: list[str]
    bands: list[str]
    mean: list[float]
    std: list[float]
    input_size: tuple[int, int] = (64, 64)
    epoch: int = 0
    work_size: tuple[int, int] | None = None
    tta: str = "none"
    temperature: float = 1.0
    thresholds: dict[str, float] = field(default_factory=dict)
    model_name: str = ""
    dropout: float = 0.2
    radiometry: dict[str, Any] | None = None
    gsd_m: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: Path | str = "<checkpoint>") -> InferenceCheckpoint:
        """From the on-disk dict; missing optional keys take the defaults old readers used.

        Raises:
            CheckpointError: a required key is missing or of the wrong kind.
        """
        p = Path(path)
        if "architecture" not in d or "model" not in d:
            hint = " (a training state: use checkpoints/best.pt)" if "optimizer" in d else ""
            raise CheckpointError(f"{p}: not an inference checkpoint{hint}")
        missing = [k for k in ("classes", "bands", "mean", "std") if k not in d]
        if missing:
            raise CheckpointError(f"{p}: inference checkpoint without {missing}")
        if not isinstance(d["model"], Mapping):
            raise CheckpointError(f"{p}: its `model` entry is not a state_dict")
        try:
            return cls(
                state_dict=dict(d["model"]), architecture=str(d["architecture"]),
                classes=[str(c) for c in d["classes"]], bands=[str(b) for b in d["bands"]],
                mean=[float(v) for v in d["mean"]], std=[float(v) for v in d["std"]],
                input_size=_pair(d.get("input_size", (64, 64)), "input_size", p),
                epoch=int(d.get("epoch", 0)),
                work_size=_pair(d["work_size"], "work_size", p) if d.get("work_size") else None,
                tta=str(d.get("tta") or "none"), temperature=float(d.get("temperature", 1.0)),
                thresholds={str(k): float(v) for k, v in (d.get("thresholds") or {}).items()},
                model_name=str(d.get("model_name") or ""), dropout=float(d.get("dropout", 0.2)),
                radiometry=dict(d["radiometry"]) if d.get("radiometry") else None,
                gsd_m=float(d["gsd_m"]) if d.get("gsd_m") is not None else None)
        except (TypeError, ValueError, AttributeError) as exc:
            raise CheckpointError(f"{p}: malformed inference checkpoint ({exc})") from exc

    def to_dict(self) -> dict[str, Any]:
        """The on-disk dict (the keys checkpoints have always had)."""
        return {"model": self.state_dict, "architecture": self.architecture,
                "classes": list(self.classes), "bands": list(self.bands),
                "mean": list(self.mean), "std": list(self.std),
                "input_size": list(self.input_size), "epoch": self.epoch,
                "work_size": list(self.work_size) if self.work_size else None, "tta": self.tta,
                "temperature": self.temperature, "thresholds": dict(self.thresholds),
                "model_name": self.model_name, "dropout": self.dropout,
                "radiometry": self.radiometry, "gsd_m": self.gsd_m}

    @classmethod
    def load(cls, path: Path) -> InferenceCheckpoint:
        """Read ``path`` (see `load_checkpoint`, `from_dict`)."""
        return cls.from_dict(load_checkpoint(path), path)

    def save(self, path: Path) -> None:
        save_checkpoint(path, self.to_dict())

    def build_model(self, path: Path | str = "<checkpoint>") -> NormalizedClassifier:
        """The `NormalizedClassifier` these weights were saved from, in eval mode.

        Raises:
            ConfigError: the architecture is not registered.
            CheckpointError: the weights do not fit the architecture.
        """
        from vision.models import NormalizedClassifier, get_model

        backbone = get_model(self.architecture, len(self.classes), len(self.bands), "none",
                             band_names=self.bands, dropout=self.dropout)
        model = NormalizedClassifier(backbone, self.mean, self.std, self.work_size, self.tta)
        try:
            model.load_state_dict(self.state_dict)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0][:200]
            raise CheckpointError(f"{path}: its weights do not fit {self.architecture} with "
                                  f"{len(self.bands)} bands and {len(self.classes)} classes ({first})") from exc
        return model.eval()


@dataclass
class TrainState:
    """``last.pt``: everything ``--resume`` needs to continue bit for bit.

    Attributes:
        model, optimizer, scheduler: their ``state_dict()``s.
        rng: `rng_state` after the epoch.
        epoch: the last completed epoch (0-based).
        history: per-epoch metric rows so far.
        best: the best monitored score so far (sign-adjusted: higher is better).
        bad_epochs: epochs since it improved.
        config_hash: of the recipe that wrote it (a different recipe cannot resume it).
        ema: the weight average's ``state_dict()``, when the recipe keeps one.
        scaler: the GradScaler's state (fp16 on CUDA), else empty.
        mlflow_run_id: the run to continue logging into.
    """

    model: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    epoch: int
    history: list[dict[str, Any]]
    best: float | None
    bad_epochs: int
    config_hash: str
    ema: dict[str, Any] | None = None
    scaler: dict[str, Any] = field(default_factory=dict)
    mlflow_run_id: str | None = None

    _REQUIRED = ("model", "optimizer", "scheduler", "rng", "epoch", "history", "config_hash")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], path: Path | str = "<checkpoint>") -> TrainState:
        """From the on-disk dict.

        Raises:
            CheckpointError: it is not a training state.
        """
        missing = [k for k in cls._REQUIRED if k not in d]
        if missing:
            raise CheckpointError(f"{path}: not a training state (no {missing}); it cannot be resumed")
        return cls(model=d["model"], optimizer=d["optimizer"], scheduler=d["scheduler"], rng=d["rng"],
                   epoch=int(d["epoch"]), history=list(d["history"]), best=d.get("best"),
                   bad_epochs=int(d.get("bad_epochs", 0)), config_hash=str(d["config_hash"]),
                   ema=d.get("ema"), scaler=dict(d.get("scaler") or {}),
                   mlflow_run_id=d.get("mlflow_run_id"))

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "optimizer": self.optimizer, "ema": self.ema,
                "scheduler": self.scheduler, "scaler": self.scaler, "rng": self.rng,
                "epoch": self.epoch, "history": self.history, "best": self.best,
                "bad_epochs": self.bad_epochs, "mlflow_run_id": self.mlflow_run_id,
                "config_hash": self.config_hash}

    @classmethod
    def load(cls, path: Path) -> TrainState:
        return cls.from_dict(load_checkpoint(path), path)

    def save(self, path: Path) -> None:
        save_checkpoint(path, self.to_dict())

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                scheduler: torch.optim.lr_scheduler.LRScheduler, *, ema: torch.nn.Module | None = None,
                scaler: torch.amp.GradScaler | None = None, path: Path | str = "<checkpoint>") -> None:
        """Load every state into the live objects and restore the RNGs.

        Raises:
            CheckpointError: the states do not fit (another model or optimizer layout).
        """
        try:
            model.load_state_dict(self.model)
            if ema is not None:
                if self.ema is None:
                    raise CheckpointError(f"{path}: has no weight average to resume")
                ema.load_state_dict(self.ema)
            optimizer.load_state_dict(self.optimizer)
            scheduler.load_state_dict(self.scheduler)
            if scaler is not None and self.scaler:
                scaler.load_state_dict(self.scaler)
            restore_rng_state(self.rng)
        except (RuntimeError, KeyError, ValueError, TypeError) as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{path}: does not fit this run ({first}); it cannot be resumed") from exc


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and plain types (``weights_only``-safe)."""
    np_state: Any = np.random.get_state(legacy=True)
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo `rng_state`: set the torch, numpy and Python RNGs to the saved states."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
