"""Calibration: the temperature that minimises validation NLL, and per-class operating points."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.calibration import T_MAX, T_MIN, fit_temperature, operating_points
from vision.metrics import expected_calibration_error, softmax


def _overconfident(n: int = 2000, k: int = 4, true_t: float = 2.5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits whose calibrated temperature is ``true_t``: labels drawn from softmax(z / true_t)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, size=(n, k)).astype(np.float32)
    p = softmax(z, true_t)
    labels = np.array([rng.choice(k, p=row) for row in p])
    return z, labels


def test_fit_recovers_the_temperature_and_lowers_nll_and_ece() -> None:
    z, y = _overconfident()
    t = fit_temperature(z, y)
    assert t == pytest.approx(2.5, rel=0.1)
    nll = [float(torch.nn.functional.cross_entropy(torch.from_numpy(z) / s, torch.from_numpy(y))) for s in (1.0, t)]
    assert nll[1] < nll[0]
    assert expected_calibration_error(softmax(z, t), y) < expected_calibration_error(softmax(z), y)
    # The fitted temperature is the minimum: a little either side is worse.
    for s in (t * 0.9, t * 1.1):
        assert float(torch.nn.functional.cross_entropy(torch.from_numpy(z) / s, torch.from_numpy(y))) > nll[1]


def test_degenerate_inputs_stay_in_range() -> None:
    assert fit_temperature(np.zeros((0, 3), np.float32), np.zeros(0, np.int64)) == 1.0
    # Perfectly separated: NLL keeps falling as T -> 0; the fit sharpens, never below T_MIN.
    z = np.eye(3, dtype=np.float32)[np.arange(300) % 3]
    assert T_MIN <= fit_temperature(z, np.arange(300) % 3) < 0.5
    # Labels independent of the logits: the best temperature flattens them (large T, at most T_MAX).
    rng = np.random.default_rng(1)
    t = fit_temperature(rng.normal(0, 5, (3000, 3)).astype(np.float32), rng.integers(0, 3, 3000))
    assert 5 < t <= T_MAX


def test_operating_points_meet_their_targets_on_the_data_they_were_fitted_on() -> None:
    z, y = _overconfident(n=3000, seed=2)
    classes = ["a", "b", "c", "d"]
    t = fit_temperature(z, y)
    th = operating_points(z, y, classes, {"a": {"precision": 0.9}, "b": {"recall": 0.95}}, t)
    p = softmax(z, t)
    top = p.argmax(1)
    flagged_a = (top == 0) & (p[:, 0] >= th["a"])
    assert (y[flagged_a] == 0).mean() >= 0.9
    # The lowest such threshold: one step lower breaks the target (or there is none lower).
    lower = np.sort(np.unique(p[top == 0, 0]))
    below = lower[lower < th["a"]]
    if len(below):
        f = (top == 0) & (p[:, 0] >= below[-1])
        assert (y[f] == 0).mean() < 0.9
    flagged_b = (top == 1) & (p[:, 1] >= th["b"])
    # Recall is bounded by how often b is the top class at all; the threshold keeps what it can.
    reachable = ((top == 1) & (y == 1)).sum() / (y == 1).sum()
    assert ((flagged_b & (y == 1)).sum() / (y == 1).sum()) >= min(0.95, reachable) - 1e-9


def test_operating_points_refuse_unknown_classes_and_targets() -> None:
    z, y = _overconfident(n=100)
    with pytest.raises(ValueError, match="unknown class 'x'"):
        operating_points(z, y, ["a", "b", "c", "d"], {"x": {"recall": 0.9}})
    with pytest.raises(ValueError, match="precision or recall"):
        operating_points(z, y, ["a", "b", "c", "d"], {"a": {"f1": 0.9}})
