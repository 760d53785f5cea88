"""Model soups (recipe ``train.soup: N``): N models from one start, their weights averaged.

Wortsman et al. 2022, "Model soups: averaging weights of multiple fine-tuned models improves
accuracy without increasing inference time". Models fine-tuned from the same starting weights
tend to end in one basin of the loss, where the average of their weights is itself a good
model and often a better one than each: some of an ensemble's accuracy at one model's cost.

Here the ingredients differ only in their seed (data order, augmentations, dropout): ingredient
``k`` is the recipe with ``seed + k``, no soup and no interpolation, trained as the recipe says
into ``ingredients/seed-S/`` of the run folder, from the same starting weights (the model as the
run built it; ``checkpoints/start.pt`` when the recipe interpolates), and its best checkpoint is
kept (the EMA when the recipe keeps one). The uniform average of the N best checkpoints, written
to the run's ``checkpoints/best.pt``, is then the run's model: interpolated toward the start
when the recipe asks (`training.interpolate`), calibrated, tested, exported and registered like
any other. Floating tensors, batch-norm running statistics included, are averaged; counters
(``num_batches_tracked``) are the first ingredient's.

The uniform soup, not the greedy one: the greedy soup adds an ingredient only when it helps on
val, one more choice made on the split that already picks the epoch and the interpolation.

Each ingredient folder is a run of its own (``config.yaml``, ``checkpoints/last.pt``, and a
``metrics.json`` with ``"status": "complete"`` once it is done), so ``--resume`` skips the
ingredients that are done and continues the one that was cut off. The run folder holds
``checkpoints/soup.json`` from the start (the recipe's hash and the MLflow run): a rerun
without ``--resume`` or with another recipe is refused, and ``--resume`` reopens the same
MLflow run and reads the starting weights back from ``start.pt``, so that every ingredient,
before and after the cut-off, starts from the same weights. Ingredients log their epochs
into the run's MLflow run as ``seed-S/val_accuracy`` and so on; distillation reads the
teacher's cached targets from the run folder, computed once for all of them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from training.checkpoint import CheckpointError, InferenceCheckpoint
from vision.atomic import write_text_atomic
from vision.config import ExperimentConfig
from vision.data import BandStats
from vision.errors import ConfigError

STATE_FILE = "checkpoints/soup.json"
METHOD = "uniform model soup: the mean of the ingredients' best weights (seed, seed + 1, ...)"


@dataclass
class Ingredient:
    """What an ingredient run takes from the run it belongs to.

    Attributes:
        start: the weights every ingredient starts from.
        stats: the band statistics of the run (one normalisation for all ingredients).
        cache: the folder whose distillation cache the ingredients share (the run folder).
    """

    start: Mapping[str, torch.Tensor]
    stats: BandStats
    cache: Path


def metric_prefix(cfg: ExperimentConfig) -> str:
    """What an ingredient's metrics are called in the run's MLflow run: ``seed-S/val_accuracy``."""
    return f"seed-{cfg.seed}/"


def read_state(out: Path, config_hash: str, resume: bool) -> dict[str, Any] | None:
    """The unfinished soup in ``out`` (its MLflow run id), ``None`` if none was started.

    Raises:
        ConfigError: it was started by another recipe, or ``resume`` is not set.
        CheckpointError: the state file is not one this module wrote.
    """
    path = out / STATE_FILE
    if not path.is_file():
        return None
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or not isinstance(state.get("config_hash"), str):
            raise ValueError("no config_hash")
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not the state of a model soup ({exc}); delete {out} to start over") from exc
    if state["config_hash"] != config_hash:
        raise ConfigError(f"{out} holds an unfinished soup of a different recipe; choose another --out")
    if not resume:
        raise ConfigError(f"{out} holds an unfinished soup: pass --resume to continue it, or choose another --out")
    return state


def write_state(out: Path, config_hash: str, mlflow_run_id: str | None) -> None:
    write_text_atomic(out / STATE_FILE, json.dumps({"config_hash": config_hash, "mlflow_run_id": mlflow_run_id}))


def not_a_run(out: Path) -> ConfigError:
    """The error for ``vision train`` pointed at an ingredient's folder as if it were a run."""
    return ConfigError(f"{out} is an ingredient of the model soup in {out.parent.parent}, not a run of its "
                       "own (never calibrated, exported or registered): train the soup's recipe into that folder")


def epochs_run(history: Sequence[Mapping[str, Any]]) -> int:
    """Epochs of the longest ingredient, or of the run itself (rows without a ``seed``)."""
    return max(Counter(row.get("seed") for row in history).values(), default=0)


def ingredient_config(cfg: ExperimentConfig, k: int) -> ExperimentConfig:
    """The recipe of ingredient ``k``: ``seed + k``, neither soup nor interpolation of its own."""
    train = cfg.train.model_copy(update={"soup": None, "interpolate_start": None})
    return cfg.model_copy(update={"seed": cfg.seed + k, "train": train})


def folder(out: Path, cfg: ExperimentConfig) -> Path:
    """Where the ingredient with recipe ``cfg`` trains, inside the run folder ``out``."""
    return out / "ingredients" / f"seed-{cfg.seed}"


def finish_ingredient(out: Path, config_hash: str, history: list[dict[str, Any]]) -> dict[str, Any]:
    """Mark the ingredient in ``out`` done: its ``metrics.json``, with the best epoch's scores."""
    ck = InferenceCheckpoint.load(out / "checkpoints" / "best.pt")
    best = next((r for r in history if r.get("epoch") == ck.epoch), {})
    metrics = {"status": "complete", "ingredient": True, "config_hash": config_hash, "history": history,
               "best_epoch": ck.epoch, "val_accuracy": best.get("val_accuracy"), "val_loss": best.get("val_loss")}
    write_text_atomic(out / "metrics.json", json.dumps(metrics, indent=2))
    return metrics


def average(states: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The mean of ``states`` for floating tensors (summed in float64), the first's value otherwise."""
    if not states:
        raise CheckpointError("a soup needs at least one ingredient")
    first = states[0]
    for i, s in enumerate(states[1:], 2):
        if set(s) != set(first) or any(s[k].shape != first[k].shape for k in first):
            raise CheckpointError(f"soup ingredient {i} does not hold the same tensors as ingredient 1 "
                                  "(another architecture or number of classes?)")
    out: dict[str, torch.Tensor] = {}
    for k, t in first.items():
        if t.is_floating_point():
            total = torch.zeros(t.shape, dtype=torch.float64)
            for s in states:
                total += s[k].detach().cpu().to(torch.float64)
            out[k] = (total / len(states)).to(t.dtype)
        else:
            out[k] = t.detach().cpu().clone()
    return out


def combine(folders: Sequence[Path], results: Sequence[dict[str, Any]], seeds: Sequence[int]
            ) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]], dict[str, Any]]:
    """The averaged weights, the ingredients' epochs as one history (each row with its
    ``seed``), and what ``metrics.json`` and the model card say about the soup."""
    states = [InferenceCheckpoint.load(f / "checkpoints" / "best.pt").state_dict for f in folders]
    history = [{**row, "seed": seed} for seed, r in zip(seeds, results, strict=True) for row in r["history"]]
    rows = [{"seed": seed, "folder": str(Path("ingredients") / f.name), "best_epoch": r.get("best_epoch"),
             "val_accuracy": r.get("val_accuracy"), "val_loss": r.get("val_loss")}
            for seed, f, r in zip(seeds, folders, results, strict=True)]
    return average(states), history, {"method": METHOD, "n": len(rows), "ingredients": rows}
