"""Evaluation artifacts: confusion matrix PNG, per-class JSON, reliability diagram."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from vision.atomic import write_text_atomic as atomic_write_text  # noqa: E402
from vision.metrics import reliability_bins  # noqa: E402


def write_report(out: Path, report: dict[str, Any], probs: np.ndarray, labels: np.ndarray,
                 prefix: str = "") -> dict[str, Path]:
    """Write ``metrics.json``-style files and plots for one evaluation into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "per_class": out / f"{prefix}per_class.json",
        "confusion": out / f"{prefix}confusion_matrix.png",
        "reliability": out / f"{prefix}reliability.png",
    }
    atomic_write_text(paths["per_class"], json.dumps(report["per_class"], indent=2))
    plot_confusion(np.array(report["confusion_matrix"]), report["classes"], paths["confusion"],
                   title=f"{prefix.rstrip('_') or 'confusion'} (accuracy {report['accuracy']:.4f})")
    plot_reliability(probs, labels, paths["reliability"])
    return paths


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str = "") -> None:
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1 + 0.6 * n, 1 + 0.55 * n), dpi=110)
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(n), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    thresh = cm.max() / 2 if cm.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6,
                    color="white" if cm[i, j] > thresh else "black")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_reliability(probs: np.ndarray, labels: np.ndarray, path: Path,
                     other: np.ndarray | None = None, title: str = "reliability") -> None:
    """Reliability diagram (15 bins); ``other`` (e.g. uncalibrated probs) drawn beside."""
    fig, ax = plt.subplots(figsize=(4, 4), dpi=110)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    for p, name in ((other, "before"), (probs, "after" if other is not None else "model")):
        if p is None or not len(p):
            continue
        b = reliability_bins(p, labels)
        xs = [c for c, n in zip(b["confidence"], b["count"], strict=True) if n]
        ys = [a for a, n in zip(b["accuracy"], b["count"], strict=True) if n]
        ax.plot(xs, ys, "o-", label=name)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
