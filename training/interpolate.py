"""Weight interpolation toward the starting weights (recipe ``train.interpolate_start``).

Fine-tuning moves the weights away from where they started; when the start is itself a good
model for the same task (a student started from its teacher's weights, a model retrained on
new chips), the straight line between the two often holds weights better than either end:
WiSE-FT, Wortsman et al. 2022 ("Robust fine-tuning of zero-shot models"). After training,
``theta(w) = (1 - w) * theta_start + w * theta_trained`` is tried for each fraction ``w`` the
recipe names, and for ``w = 1`` (the trained weights); the one best on the validation split,
by the recipe's ``train.monitor`` (ties: lower validation loss, then the larger ``w``), is
the model that is calibrated, tested and exported. The test split plays no part.

Batch-norm statistics are interpolated like the weights (both ends come from the same
architecture and data). Counters (``num_batches_tracked``) are the trained model's.

The starting weights are saved once in the run folder (``checkpoints/start.pt``) before the
first step, so a resumed run interpolates toward the same weights even if ``model.weights``
has changed on disk since.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.loop import predict
from training.progress import Reporter
from vision.metrics import classification_report, softmax

START_FILE = "checkpoints/start.pt"


def keep_start(model: nn.Module, out: Path, resume: bool) -> dict[str, torch.Tensor]:
    """The weights training starts from: on ``resume``, read back from ``out`` where the run
    saved them; else taken from ``model`` (as built, before any step) and saved there."""
    path = out / START_FILE
    if resume and path.is_file():
        state = load_checkpoint(path).get("state_dict")
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise CheckpointError(f"{path}: not the starting weights this run saved (no state_dict of tensors); "
                                  "delete it to take them from model.weights again")
        return state
    state = snapshot(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, {"state_dict": state})
    return state


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``model``'s weights and buffers, on the CPU, that later steps leave alone."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def mix(start: Mapping[str, torch.Tensor], trained: Mapping[str, torch.Tensor], w: float
        ) -> dict[str, torch.Tensor]:
    """``(1 - w) * start + w * trained`` for floating tensors; the trained value otherwise."""
    out = {}
    for k, t in trained.items():
        s = start.get(k)
        if t.is_floating_point() and s is not None and s.shape == t.shape:
            out[k] = torch.lerp(s.to(t.device, t.dtype), t, w)
        else:
            out[k] = t
    return out


@dataclass
class Choice:
    """The fraction kept and each candidate's validation scores (for ``metrics.json``)."""

    weight: float
    candidates: list[dict[str, float]]

    def record(self) -> dict[str, Any]:
        return {"method": "WiSE-FT: (1 - w) * start + w * trained, w chosen on val", "chosen": self.weight,
                "candidates": self.candidates}


def choose(model: nn.Module, start: Mapping[str, torch.Tensor], fractions: Iterable[float],
           val: Iterable[tuple[torch.Tensor, torch.Tensor]], classes: list[str], monitor: str,
           device: torch.device, report: Reporter, channels_last: bool = False) -> Choice:
    """Try each fraction on ``val``, leave ``model`` holding the best, and say what was kept.

    ``model`` holds the trained weights on entry. The validation chips are read once.
    """
    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    missing = [k for k, v in trained.items() if v.is_floating_point() and k not in start]
    if missing:
        report.line(f"  [yellow]note[/yellow]: {len(missing)} tensors have no starting value and stay as trained")
    batches = list(val)
    ws = sorted({float(w) for w in fractions} | {1.0})
    rows: list[dict[str, float]] = []
    with report.bar("interpolating toward the starting weights, each candidate on val", len(ws),
                    "candidates") as advance:
        for w in ws:
            model.load_state_dict(mix(start, trained, w))
            logits, labels = predict(model, batches, device, channels_last=channels_last)
            rep = classification_report(labels, softmax(logits), classes)
            loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(labels)))
            rows.append({"w": w, "val_accuracy": rep["accuracy"], "val_macro_f1": rep["macro_f1"],
                         "val_loss": loss})
            advance(1)
    sign = -1.0 if monitor == "val_loss" else 1.0

    def rank(r: dict[str, float]) -> tuple[float, float, float]:
        if not np.isfinite(r["val_loss"]):  # weights that give NaN never win
            return (-np.inf, -np.inf, r["w"])
        return (sign * r[monitor], -r["val_loss"], r["w"])

    best = max(rows, key=rank)
    model.load_state_dict(mix(start, trained, best["w"]))
    report.line("  " + "; ".join(f"w {r['w']:g}: val acc {r['val_accuracy']:.4f} loss {r['val_loss']:.4f}"
                                 for r in rows) + f" -> kept w {best['w']:g}")
    return Choice(best["w"], rows)

