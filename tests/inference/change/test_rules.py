"""The change rules (`inference.change.rules`): every transition, the confidence gate, what is
not assessed, and first appearances over several dates."""

from __future__ import annotations

import numpy as np
import pytest

from inference.change import rules
from inference.change.rules import (
    OUT_NOT_ASSESSED,
    OUT_OK,
    OUT_UNCERTAIN,
    REASONS,
    SRC_CLOUDY,
    SRC_ERROR,
    SRC_MISSING,
    SRC_NODATA,
    SRC_OK,
    TRANSITIONS,
    interest_mask,
    pair_outcome,
    trajectory,
)

CLASSES = ["AnnualCrop", "Forest", "HerbaceousVegetation", "PermanentCrop"]
AC, FO, HV, PC = range(4)


def _pair(before: list[tuple[int, int, float]], after: list[tuple[int, int, float]],
          interest: list[str] | None = None, p_min: float = 0.5) -> rules.PairOutcome:
    b, a = np.array(before, dtype=float).T, np.array(after, dtype=float).T
    return pair_outcome(b[0].astype(np.int8), b[1].astype(int), b[2].astype(np.float32),
                        a[0].astype(np.int8), a[1].astype(int), a[2].astype(np.float32),
                        interest_mask(CLASSES, interest), p_min)


def _names(out: rules.PairOutcome) -> list[str]:
    return [TRANSITIONS[t] if s == OUT_OK else rules.OUT_STATUSES[s]
            for s, t in zip(out.status, out.transition, strict=True)]


def test_every_transition_for_one_class_of_interest() -> None:
    ok = SRC_OK
    out = _pair([(ok, HV, .9), (ok, AC, .9), (ok, AC, .9), (ok, FO, .9), (ok, FO, .9)],
                [(ok, AC, .9), (ok, HV, .9), (ok, AC, .9), (ok, HV, .9), (ok, FO, .9)], ["AnnualCrop"])
    assert _names(out) == ["appeared", "disappeared", "persisted", "absent", "absent"]


def test_changed_is_one_class_of_interest_replaced_by_another() -> None:
    ok = SRC_OK
    out = _pair([(ok, AC, .9), (ok, AC, .9), (ok, HV, .9)], [(ok, PC, .9), (ok, AC, .9), (ok, PC, .9)],
                ["AnnualCrop", "PermanentCrop"])
    assert _names(out) == ["changed", "persisted", "appeared"]


def test_default_interest_is_every_class_so_any_change_of_class_is_changed() -> None:
    ok = SRC_OK
    out = _pair([(ok, HV, .9), (ok, FO, .9)], [(ok, AC, .9), (ok, FO, .9)], None)
    assert _names(out) == ["changed", "persisted"]


@pytest.mark.parametrize("status", [SRC_NODATA, SRC_CLOUDY, SRC_ERROR, SRC_MISSING])
def test_a_window_not_assessed_at_either_date_is_never_no_change(status: int) -> None:
    ok = SRC_OK
    out = _pair([(status, -1, np.nan), (ok, FO, .9)], [(ok, FO, .9), (status, -1, np.nan)], ["AnnualCrop"])
    assert list(out.status) == [OUT_NOT_ASSESSED, OUT_NOT_ASSESSED]
    assert list(out.transition) == [-1, -1]
    name = rules.SOURCE_STATUSES[status]
    assert [REASONS[r] for r in out.reason] == [f"before {name}", f"after {name}"]


def test_an_ok_row_without_a_finite_probability_is_not_assessed() -> None:
    out = _pair([(SRC_OK, FO, np.nan)], [(SRC_OK, AC, .9)], ["AnnualCrop"])
    assert out.status[0] == OUT_NOT_ASSESSED and REASONS[out.reason[0]] == "before error"


def test_min_confidence_gates_both_dates_and_says_which() -> None:
    ok = SRC_OK
    out = _pair([(ok, HV, .45), (ok, HV, .9), (ok, HV, .3), (ok, HV, .5)],
                [(ok, AC, .9), (ok, AC, .49), (ok, AC, .3), (ok, AC, .5)], ["AnnualCrop"])
    assert list(out.status) == [OUT_UNCERTAIN, OUT_UNCERTAIN, OUT_UNCERTAIN, OUT_OK]  # p >= P passes
    assert [REASONS[r] for r in out.reason] == ["before below --min-confidence", "after below --min-confidence",
                                                "before and after below --min-confidence", None]
    strict = _pair([(ok, HV, .9)], [(ok, AC, .9)], ["AnnualCrop"], p_min=0.95)
    assert strict.status[0] == OUT_UNCERTAIN


def _traj(states: list[list[tuple[int, int, float]]], interest: list[str] = ["AnnualCrop"]) -> rules.Trajectory:  # noqa: B006
    arr = np.array(states, dtype=float)  # windows x dates x 3
    return trajectory(arr[:, :, 0].T.astype(np.int8), arr[:, :, 1].T.astype(int), arr[:, :, 2].T.astype(np.float32),
                      interest_mask(CLASSES, interest), 0.5)


def test_first_appearance_over_three_dates() -> None:
    ok, cl = SRC_OK, SRC_CLOUDY
    t = _traj([
        [(ok, HV, .9), (ok, AC, .9), (ok, AC, .9)],      # appeared at date 1
        [(ok, HV, .9), (ok, HV, .9), (ok, AC, .9)],      # at date 2
        [(ok, HV, .9), (cl, -1, np.nan), (ok, AC, .9)],  # seen at date 2, absent last seen at 0
        [(ok, AC, .9), (ok, AC, .9), (ok, AC, .9)],      # always there: never appeared
        [(ok, AC, .9), (ok, HV, .9), (ok, AC, .9)],      # gone then back: appeared at date 2
        [(ok, HV, .3), (ok, AC, .9), (ok, AC, .9)],      # absence not confident: never appeared
        [(ok, HV, .9), (ok, AC, .4), (ok, AC, .9)],      # first confident presence at date 2
    ])
    assert t.first_appeared.tolist() == [1, 2, 2, -1, 2, -1, 2]
    assert t.last_absent.tolist() == [0, 1, 0, -1, 1, -1, 0]
