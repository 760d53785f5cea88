"""The change rules: what `vision change` calls appeared, disappeared, persisted, absent or
changed, and when it claims nothing.

Inputs, per window of the latest job's grid and per date ``k`` (jobs sorted oldest first,
``k = 0 .. N-1``; the earlier dates aligned onto the latest grid, see `inference.change.align`):

- ``s_k``: the job's own status of the window: ``ok``, ``nodata``, ``cloudy``, ``error``, or
  ``missing`` where the job has no window there (outside its scenes, or outside its AOI);
- ``c_k``: the date's class: the top-1 class of the job's window (same grid), or of the
  nearest earlier window (other grid);
- ``p_k``: the calibrated probability of ``c_k`` at that date (the job's ``probs``; on another
  grid, its bilinear interpolation at the later window's centre, so a window near the
  boundary of two earlier classes has a lower ``p``).

``S`` is the set of classes of interest (``--classes``; default: every class of the model) and
``P`` is ``--min-confidence`` (default `DEFAULT_MIN_CONFIDENCE`, 0.5).

A date is **assessed** when ``s_k == ok`` and ``p_k`` is a finite number; it is **confident**
when it is assessed and ``p_k >= P``.

**The pair** (``before`` = the oldest date, ``after`` = the latest):

1. ``status = not_assessed`` when either date is not assessed (``reason`` names the date and its
   status, e.g. ``after cloudy``). Such a window is never counted as "no change".
2. else ``status = uncertain`` when either date is not confident (``reason``: which date is
   below ``--min-confidence``): neither a change nor its absence is claimed.
3. else ``status = ok`` and ``transition`` is, with ``b = c_before``, ``a = c_after``:

   - ``appeared``:    ``b`` not in ``S`` and ``a`` in ``S``
   - ``disappeared``: ``b`` in ``S`` and ``a`` not in ``S``
   - ``persisted``:   ``b`` in ``S`` and ``a == b``
   - ``changed``:     ``b`` and ``a`` in ``S`` and ``a != b`` (one class of interest replaced by
     another; with the default ``S`` = every class, any change of class)
   - ``absent``:      neither in ``S`` (whatever the two classes are: ``class_before`` and
     ``class_after`` keep them)

So ``--min-confidence`` gates every claim, and the same way: both dates' top-1 probabilities
must reach it. Raising it trades recall for precision; ``bench/change_accuracy.py`` prints the
curve.

**Trajectories** (any ``N >= 2``): per date the state is ``IN`` (confident, ``c_k`` in ``S``),
``OUT`` (confident, ``c_k`` not in ``S``) or unknown (otherwise). ``first_appeared`` is the
acquisition time of the first date ``k`` that is ``IN`` and has an ``OUT`` at some earlier date
``j < k``; ``last_absent`` is the latest such ``j``. The class appeared in ``(last_absent,
first_appeared]``; a cloudy date in between widens that interval, it never moves the
appearance to a date at which nothing was seen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from vision.contracts.changes import (
    ABSENT,
    APPEARED,
    CHANGED,
    DISAPPEARED,
    PERSISTED,
    SOURCE_MISSING,
    STATUS_NOT_ASSESSED,
    STATUS_OK,
    STATUS_UNCERTAIN,
    TRANSITIONS,
)

DEFAULT_MIN_CONFIDENCE = 0.5

#: Source (job row) status codes, as stored in the aligned arrays.
SRC_MISSING, SRC_OK, SRC_NODATA, SRC_CLOUDY, SRC_ERROR = -1, 0, 1, 2, 3
SOURCE_STATUSES: dict[int, str] = {SRC_MISSING: SOURCE_MISSING, SRC_OK: "ok", SRC_NODATA: "nodata",
                                   SRC_CLOUDY: "cloudy", SRC_ERROR: "error"}
#: A job's status string -> code (an unknown status is not assessed, as an error).
STATUS_CODES: dict[str, int] = {"ok": SRC_OK, "nodata": SRC_NODATA, "cloudy": SRC_CLOUDY, "error": SRC_ERROR}

#: Outcome status codes: index into `OUT_STATUSES`.
OUT_STATUSES: tuple[str, ...] = (STATUS_OK, STATUS_UNCERTAIN, STATUS_NOT_ASSESSED)
OUT_OK, OUT_UNCERTAIN, OUT_NOT_ASSESSED = 0, 1, 2

_T = {t: k for k, t in enumerate(TRANSITIONS)}


def _reasons() -> tuple[str | None, ...]:
    """Reason strings by code: 0 none, then the uncertain ones, then every not-assessed pair."""
    out: list[str | None] = [None, "before below --min-confidence", "after below --min-confidence",
                             "before and after below --min-confidence"]
    names = [SOURCE_STATUSES[c] for c in (SRC_MISSING, SRC_OK, SRC_NODATA, SRC_CLOUDY, SRC_ERROR)]
    for b in names:
        for a in names:
            parts = ([f"before {b}"] if b != "ok" else []) + ([f"after {a}"] if a != "ok" else [])
            out.append("; ".join(parts) or None)
    return tuple(out)


#: ``reason`` strings, indexed by the ``reason`` code of `PairOutcome`.
REASONS = _reasons()


@dataclass(frozen=True)
class PairOutcome:
    """The outcome of a chunk of windows (arrays of one length).

    Attributes:
        status: `OUT_STATUSES` codes.
        transition: index into `TRANSITIONS`, -1 unless status ok.
        reason: index into `REASONS` (0: none).
    """

    status: np.ndarray
    transition: np.ndarray
    reason: np.ndarray


def interest_mask(classes: Sequence[str], interest: Sequence[str] | None) -> np.ndarray:
    """``True`` for the classes of interest (all classes when ``interest`` is ``None``)."""
    if interest is None:
        return np.ones(len(classes), bool)
    wanted = set(interest)
    return np.array([c in wanted for c in classes], bool)


def _assessed(status: np.ndarray, p: np.ndarray) -> np.ndarray:
    return (status == SRC_OK) & np.isfinite(p)


def pair_outcome(status_b: np.ndarray, label_b: np.ndarray, p_b: np.ndarray,
                 status_a: np.ndarray, label_a: np.ndarray, p_a: np.ndarray,
                 interest: np.ndarray, min_confidence: float) -> PairOutcome:
    """Apply the pair rules (module docstring) to arrays of windows.

    Args:
        status_b, status_a: source status codes (``SRC_*``) of the before and after dates.
        label_b, label_a: class indices (any value where not ok).
        p_b, p_a: probabilities of those classes (NaN where not ok).
        interest: `interest_mask` of the model's classes.
        min_confidence: ``P``.
    """
    n = len(status_b)
    ok_b, ok_a = _assessed(status_b, p_b), _assessed(status_a, p_a)
    assessed = ok_b & ok_a
    with np.errstate(invalid="ignore"):
        conf_b, conf_a = ok_b & (p_b >= min_confidence), ok_a & (p_a >= min_confidence)
    status = np.full(n, OUT_NOT_ASSESSED, np.int8)
    status[assessed] = OUT_UNCERTAIN
    confident = assessed & conf_b & conf_a
    status[confident] = OUT_OK
    reason = np.zeros(n, np.int16)
    unc = assessed & ~confident
    reason[unc] = np.where(~conf_b[unc] & ~conf_a[unc], 3, np.where(~conf_b[unc], 1, 2))
    # a finite p is part of "assessed": a NaN p on an ok row reads as an error
    sb = np.where((status_b == SRC_OK) & ~ok_b, SRC_ERROR, status_b).astype(np.int16)
    sa = np.where((status_a == SRC_OK) & ~ok_a, SRC_ERROR, status_a).astype(np.int16)
    na = ~assessed
    reason[na] = 4 + (sb[na] + 1) * 5 + (sa[na] + 1)
    transition = np.full(n, -1, np.int8)
    lb = np.clip(label_b, 0, len(interest) - 1)
    la = np.clip(label_a, 0, len(interest) - 1)
    in_b, in_a = interest[lb], interest[la]
    same = label_b == label_a
    t = np.select(
        [~in_b & in_a, in_b & ~in_a, in_b & in_a & same, in_b & in_a & ~same],
        [_T[APPEARED], _T[DISAPPEARED], _T[PERSISTED], _T[CHANGED]],
        default=_T[ABSENT])
    transition[confident] = t[confident]
    return PairOutcome(status, transition, reason)


@dataclass(frozen=True)
class Trajectory:
    """First appearance per window: date indices into the jobs (oldest first), -1 for none."""

    first_appeared: np.ndarray
    last_absent: np.ndarray


def trajectory(status: np.ndarray, label: np.ndarray, p: np.ndarray, interest: np.ndarray,
               min_confidence: float) -> Trajectory:
    """First appearance of a class of interest per window (module docstring).

    Args:
        status, label, p: ``N x n`` arrays, dates oldest first.
    """
    n_dates, n = status.shape
    with np.errstate(invalid="ignore"):
        confident = _assessed(status, p) & (p >= min_confidence)
    inside = interest[np.clip(label, 0, len(interest) - 1)]
    is_in = confident & inside
    is_out = confident & ~inside
    first = np.full(n, -1, np.int32)
    last_out = np.full(n, -1, np.int32)
    absent_at = np.full(n, -1, np.int32)  # latest OUT date so far
    for k in range(n_dates):
        hit = is_in[k] & (absent_at >= 0) & (first < 0)
        first[hit] = k
        last_out[hit] = absent_at[hit]
        absent_at = np.where(is_out[k] & (first < 0), k, absent_at)
    return Trajectory(first, last_out)
