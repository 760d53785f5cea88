"""Undo of a reviewer's own last decision, while it is fresh, audited as ``review.undo``.

Nothing is deleted or edited: decisions are append-only, so the undo is *appended* as its own
decision row (``kind = "undo"``, ``decision = "undo"``) and its own audit row, and the
item's review state goes back to what it was before the undone decision. The item is then
claimed by the reviewer again, so the page shows it and they can decide it anew.

Rules (each refusal says why):

- only the reviewer's own **last** decision in the job (a first or second review; an
  admin's override is not undone this way, and an undo is not undone);
- only within the claim window (`ReviewSettings.claim_seconds` after the decision: the
  time the reviewer held the item for), and only while nothing happened to the item since;
- four eyes: a first review that sent the item to second review goes back to *pending*
  (the second look is no longer due), unless another reviewer holds the item for its
  second look right now — then the undo is refused, so nobody decides an item whose first
  review is being taken back under their feet. Undoing a second review puts the item back
  to *second review*, with the first reviewer's decision as it was.

`review.audit_state` checks the undo rows like the other review rows, so ``vision review
audit verify`` still passes after undos (and names an undo edited behind the service's back).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from review import audit
from review.audit_changes import content_fingerprints
from review.db.models import PENDING, SECOND, Decision, Item, User
from review.queue import DecisionConflictError, Reviewer, ReviewError, record_decision, review_state

#: The audit action, decision kind and decision value of an undo.
UNDO_ACTION, UNDO = "review.undo", "undo"
#: Decision kinds a reviewer can undo from the review page.
UNDOABLE = ("first", "second")


class NothingToUndoError(ReviewError):
    """The reviewer has no decision in this job that can still be undone."""


@dataclass(frozen=True)
class Undone:
    """What an undo did.

    Attributes:
        decision: the undo's own decision row.
        undone: the decision it took back.
        item: the item, back in the queue and claimed by the reviewer.
    """

    decision: Decision
    undone: Decision
    item: Item


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="microseconds") if value is not None else None


def _last_decision(db: Session, job_id: int, user: Reviewer) -> Decision | None:
    return db.execute(
        select(Decision)
        .join(Item, Item.id == Decision.item_id)
        .where(Item.job_id == job_id, Decision.reviewer_id == user.id)
        .order_by(Decision.id.desc())
        .limit(1)
    ).scalar_one_or_none()


def _restored(db: Session, last: Decision) -> dict[str, Any]:
    """The item's review columns as they were before ``last`` was made."""
    if last.kind == "first":
        return {
            "status": PENDING,
            "final_decision": None,
            "final_class": None,
            "decided_by": None,
            "decided_at": None,
            "first_reviewer_id": None,
        }
    # A second look was given on the state the (latest) first review left.
    first = db.execute(
        select(Decision)
        .where(Decision.item_id == last.item_id, Decision.kind == "first", Decision.id < last.id)
        .order_by(Decision.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if first is None:
        raise NothingToUndoError(f"item {last.item_id} has no first review to go back to")
    return {
        "status": SECOND,
        "final_decision": first.decision,
        "final_class": first.class_name,
        "decided_by": first.reviewer_id,
        "decided_at": first.decided_at,
        "first_reviewer_id": first.reviewer_id,
    }


def _name(db: Session, user_id: int | None) -> str | None:
    return db.get(User, user_id).name if user_id is not None else None  # type: ignore[union-attr]


def undo_last(
    db: Session,
    job_id: int,
    user: Reviewer,
    now: datetime,
    claim_seconds: int,
    request_id: str,
) -> Undone:
    """Undo ``user``'s last decision in ``job_id`` and give the item back to them, audited.

    Any other item of the job the reviewer holds (the one the page moved on to) is released.

    Raises:
        NothingToUndoError: no decision of theirs, the last one is not a review they made on
            the review page, or it is older than the claim window.
        DecisionConflictError: the item changed since (someone reviewed or overrode it), or
            another reviewer holds it for its second look.
    """
    last = _last_decision(db, job_id, user)
    if last is None:
        raise NothingToUndoError("nothing to undo: you have made no decision in this job")
    if last.kind == UNDO:
        raise NothingToUndoError("nothing to undo: your last decision was undone already")
    if last.kind not in UNDOABLE:
        raise NothingToUndoError(
            f"your last action on item {last.item_id} was an {last.kind}, which is not undone here"
        )
    if now - last.decided_at > timedelta(seconds=claim_seconds):
        raise NothingToUndoError(
            f"too late to undo your decision on item {last.item_id}: undo is possible for {claim_seconds} s after a "
            "decision; ask an admin to override it"
        )
    item = db.execute(select(Item).where(Item.id == last.item_id).with_for_update()).scalar_one()
    version = last.item_version + 1
    if item.version != version:
        raise DecisionConflictError(
            f"item {item.id} was reviewed again since your decision (version {version} → {item.version}): "
            "it cannot be undone; ask an admin to override it"
        )
    if item.claimed_by not in (None, user.id) and item.claim_expires is not None and item.claim_expires >= now:
        what = "its second look" if item.status == SECOND else "a look"
        raise DecisionConflictError(
            f"another reviewer is giving item {item.id} {what} right now: your decision cannot be undone while "
            "they hold it"
        )
    restored = _restored(db, last)
    before = review_state(item)
    # Give back whatever else of this job the reviewer holds: the page shows the undone item.
    db.execute(
        update(Item)
        .where(Item.job_id == job_id, Item.claimed_by == user.id, Item.id != item.id)
        .values(claimed_by=None, claim_expires=None)
        .execution_options(synchronize_session=False)
    )
    free = or_(Item.claimed_by.is_(None), Item.claimed_by == user.id, Item.claim_expires < now)
    res = db.execute(
        update(Item)
        .where(and_(Item.id == item.id, Item.version == version, free))
        .values(
            **restored,
            claimed_by=user.id,
            claim_expires=now + timedelta(seconds=claim_seconds),
            version=Item.version + 1,
        )
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        raise DecisionConflictError(f"item {item.id} changed while undoing; reload it")
    dec = record_decision(db, item, version, user.id, UNDO, UNDO, None, None, now, request_id)
    # `review.audit_state` checks the item's restored state (reviewer, first reviewer and
    # decision time included) and the undo's own decision row against this row.
    after = review_state(item) | {
        "decided_by": _name(db, item.decided_by),
        "first_reviewer": _name(db, item.first_reviewer_id),
        "decided_at": _iso(item.decided_at),
        "predicted": item.class_name,
        **content_fingerprints(db, item),
        "undo_at": _iso(now),
        "undone": {
            "decision_id": last.id,
            "kind": last.kind,
            "decision": last.decision,
            "class": last.class_name,
            "item_version": last.item_version,
        },
    }
    audit.append(db, user.name, UNDO_ACTION, f"item:{item.id}", before, after, request_id)
    return Undone(dec, last, item)

