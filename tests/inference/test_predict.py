"""From logits to rows: calibrated probabilities, operating points, and logits that are not
numbers."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from inference.model import load_model_info
from inference.plan import ChipEntry, Unit
from inference.predict import Pending, ReadOptions, RowCompleter, prepare
from vision.contracts.predictions import new_row
from vision.metrics import softmax

from .conftest import RGB_BANDS


def _pending(n: int) -> Pending:
    rows = [new_row(f"/c{k}.jpg", "ok", "sha") for k in range(n)]
    return Pending(Unit("c000000", "chips", n_rows=n), rows, list(range(n)),
                   np.zeros((n, 3, 4, 4), np.float32))


def test_non_finite_logits_make_error_rows(rgb_model: Path) -> None:
    """NaN or Inf logits never become a made-up class with a NaN confidence: the row is an
    error with a reason; the other rows of the unit are classified as usual."""
    from inference.predict import NON_FINITE_REASON

    completer = RowCompleter(load_model_info(rgb_model))
    logits = np.array([[2.0, 1.0, 0.0, -1.0], [np.nan, 1.0, 0.0, 0.0],
                       [0.0, np.inf, 0.0, 0.0], [-np.inf, 0.0, 0.0, 0.0],
                       [0.5, 3.0, 0.1, 0.2]], np.float32)
    pending = _pending(len(logits))
    completer.add_logits(pending, 0, logits)
    rows = completer.complete(pending)
    assert [r["status"] for r in rows] == ["ok", "error", "error", "error", "ok"]
    for r in rows[1:4]:
        assert r["error"] == NON_FINITE_REASON and "non-finite" in r["error"]
        assert r["label"] is None and r["class_name"] is None and r["confidence"] is None
        assert r["probs"] is None and r["flagged"] is None
        assert r["model_sha256"]  # still says which model failed
    probs = softmax(logits[[0, 4]], 1.5)
    assert rows[0]["label"] == 0 and rows[4]["label"] == 1
    np.testing.assert_allclose(rows[4]["probs"], probs[1], atol=1e-6)
    assert pending.n_classified == 2


def test_flagged_is_null_without_an_operating_point(rgb_model: Path) -> None:
    """README: ``flagged`` is true/false for a class with a threshold, null otherwise."""
    completer = RowCompleter(load_model_info(rgb_model))  # thresholds: AnnualCrop 0.3, Forest 0.5
    logits = np.array([[5.0, 0, 0, 0], [0, 5.0, 0, 0], [0, 0, 5.0, 0], [0, 0, 0, 5.0],
                       [0.1, 0, 0, 0]], np.float32)
    pending = _pending(len(logits))
    completer.add_logits(pending, 0, logits)
    rows = completer.complete(pending)
    assert [r["class_name"] for r in rows] == ["AnnualCrop", "Forest", "Highway", "SeaLake",
                                              "AnnualCrop"]
    assert [r["flagged"] for r in rows] == [True, True, None, None, False]


def test_flagged_is_null_for_a_model_without_thresholds(
        model_factory: Callable[..., Path]) -> None:
    model = model_factory(RGB_BANDS)
    completer = RowCompleter(load_model_info(model))
    pending = _pending(2)
    completer.add_logits(pending, 0, np.eye(2, 4, dtype=np.float32))
    assert [r["flagged"] for r in completer.complete(pending)] == [None, None]


def test_a_bad_name_entry_is_an_error_row_with_its_hash(rgb_model: Path, tmp_path: Path) -> None:
    """A chip whose name is not UTF-8 is reported under its shown name, hashed from disk."""
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.jpg")
    with open(raw, "wb") as f:
        f.write(b"bytes")
    real = os.fsdecode(raw)
    entry = ChipEntry("shown\ufffd.jpg", "UnreadableInputError: the file name is not valid UTF-8",
                      source=real)
    info = load_model_info(rgb_model)
    pending = prepare(Unit("c000000", "chips", chips=(entry,), n_rows=1), None,  # type: ignore[arg-type]
                      ReadOptions.for_model(info, 0.5))
    (row,) = pending.rows
    assert row["status"] == "error" and row["path"] == "shown\ufffd.jpg"
    assert row["input_sha256"] == hashlib.sha256(b"bytes").hexdigest()
