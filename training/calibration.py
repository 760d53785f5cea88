"""Post-hoc calibration: temperature scaling and per-class operating points."""

from __future__ import annotations

import numpy as np
import torch

from vision.metrics import softmax

T_MIN, T_MAX = 0.05, 20.0


def fit_temperature(logits: np.ndarray, labels: np.ndarray, max_iter: int = 200) -> float:
    """The temperature minimising validation NLL (Guo et al. 2017), fitted in log space."""
    if len(labels) == 0:
        return 1.0
    z = torch.from_numpy(logits.astype(np.float64))
    y = torch.from_numpy(labels.astype(np.int64))
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    opt.step(closure)
    t = float(log_t.detach().exp())
    if not np.isfinite(t):
        return 1.0
    # Perfectly separated validation data drive T to 0; keep it in a sane range.
    return float(np.clip(t, T_MIN, T_MAX))


def operating_points(
    logits: np.ndarray,
    labels: np.ndarray,
    classes: list[str],
    targets: dict[str, dict[str, float]],
    temperature: float = 1.0,
) -> dict[str, float]:
    """Per-class thresholds on the calibrated probability that meet a precision or recall target.

    An item is *flagged* for class ``c`` when ``c`` is its top class and ``p_c >= t_c``.
    For a precision target, ``t_c`` is the lowest threshold whose flagged set reaches the
    precision on validation data; for a recall target, the highest threshold that still
    flags that fraction of the true ``c`` items.
    """
    probs = softmax(logits, temperature)
    top = probs.argmax(axis=1)
    out: dict[str, float] = {}
    for name, target in targets.items():
        if name not in classes:
            raise ValueError(f"operating point for unknown class {name!r}")
        c = classes.index(name)
        cand = np.sort(np.unique(probs[top == c, c]))
        pos = labels == c
        chosen = 1.0
        if "precision" in target:
            for t in cand:
                flagged = (top == c) & (probs[:, c] >= t)
                if flagged.sum() and (labels[flagged] == c).mean() >= target["precision"]:
                    chosen = float(t)
                    break
        elif "recall" in target:
            for t in cand[::-1]:
                flagged = (top == c) & (probs[:, c] >= t)
                if pos.sum() and (flagged & pos).sum() / pos.sum() >= target["recall"]:
                    chosen = float(t)
                    break
            else:
                chosen = float(cand[0]) if len(cand) else 0.0
        else:
            raise ValueError(f"operating point for {name!r} needs precision or recall")
        out[name] = chosen
    return out
