"""The review queue: what needs a human first, exclusive claims, and decisions.

Order: items waiting for a second reviewer, then classes of interest, then lowest
confidence. A reviewer *claims* an item for `ReviewSettings.claim_seconds`; nobody else is
offered it until the claim expires. Claims are compare-and-set updates (with
``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so two reviewers never hold the same item.

A reviewer may *skip* items: the page keeps the ids it skipped and passes them as
``exclude``, so a skipped item is not offered to them again in that session (others still
get it). `remaining` counts what is left for one reviewer ("N left in this queue").

A decision names the item version it was made on. The update only applies to that version
and ``decisions(item_id, item_version)`` is unique, so a concurrent decision is refused with
`DecisionConflictError`, never silently overwritten.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from review import audit
from review.audit_changes import content_fingerprints
from review.db.models import CHANGE_DECISIONS, CONFIRMED, DECISIONS, DONE, PENDING, SECOND, Decision, Item, Job
from review.jobs.records import KIND_CHANGE
from vision.errors import VisionError


class Reviewer(Protocol):
    """Who acts: a `User` row, or the signed-in `Principal` of a request."""

    @property
    def id(self) -> int: ...  # noqa: D102

    @property
    def name(self) -> str: ...  # noqa: D102


class ReviewError(VisionError):
    """A review action cannot be done as asked."""


class DecisionConflictError(ReviewError):
    """The item changed (someone else decided it) since the reviewer loaded it."""


class InvalidDecisionError(ReviewError, ValueError):
    """Unknown decision or class, or a four-eyes rule broken."""


def _claimable(user_id: int, now: datetime) -> Any:
    free = _free(user_id, now)
    needs_look = or_(
        Item.status == PENDING,
        and_(Item.status == SECOND, Item.first_reviewer_id != user_id),
    )
    return and_(free, needs_look)


def _free(user_id: int, now: datetime) -> Any:
    return or_(Item.claimed_by.is_(None), Item.claim_expires < now, Item.claimed_by == user_id)


#: Most skipped items one claim can leave out (the page keeps its newest ones).
MAX_EXCLUDED = 1000


def _candidates(job_id: int, user_id: int, now: datetime, exclude: Collection[int] = ()) -> list[Any]:
    """The queue, most urgent first, as queries that each walk ``ix_items_queue`` in order.

    One ``ORDER BY CASE ...`` over the whole job would sort every pending item on each
    claim; three index-ordered queries with ``LIMIT 1`` stay fast with 100k items.
    """
    free = _free(user_id, now)
    base = select(Item.id).where(Item.job_id == job_id, free)
    if exclude:
        base = base.where(Item.id.not_in(list(exclude)))
    return [
        base.where(Item.status == SECOND, Item.first_reviewer_id != user_id).order_by(
            Item.interest.desc(), Item.confidence, Item.id
        ),
        base.where(Item.status == PENDING, Item.interest == True).order_by(Item.confidence, Item.id),  # noqa: E712
        base.where(Item.status == PENDING, Item.interest == False).order_by(Item.confidence, Item.id),  # noqa: E712
    ]


def _check_exclude(exclude: Collection[int]) -> None:
    if len(exclude) > MAX_EXCLUDED:
        raise InvalidDecisionError(f"at most {MAX_EXCLUDED} skipped items can be left out of a claim")


def claim_next(
    db: Session,
    job_id: int,
    user: Reviewer,
    now: datetime,
    claim_seconds: int,
    exclude: Collection[int] = (),
) -> Item | None:
    """Claim the item that most needs a human, or ``None`` when the queue is empty.

    An item this user already holds (e.g. after a page reload, or given back by `undo`)
    is returned first. Items in ``exclude`` (the ones this reviewer skipped) are not
    offered.

    Raises:
        InvalidDecisionError: more than `MAX_EXCLUDED` items to leave out.
    """
    _check_exclude(exclude)
    held_q = (
        select(Item)
        .where(Item.claimed_by == user.id, Item.job_id == job_id, Item.claim_expires >= now)
        .where(_claimable(user.id, now))
    )
    if exclude:
        held_q = held_q.where(Item.id.not_in(list(exclude)))
    held = db.execute(held_q.order_by(Item.id).limit(1)).scalar_one_or_none()
    if held is not None:
        return held
    expires = now + timedelta(seconds=claim_seconds)
    for _ in range(20):
        item_id = None
        for query in _candidates(job_id, user.id, now, exclude):
            item_id = db.execute(query.limit(1).with_for_update(skip_locked=True)).scalar_one_or_none()
            if item_id is not None:
                break
        if item_id is None:
            return None
        res = db.execute(
            update(Item)
            .where(Item.id == item_id, _claimable(user.id, now))
            .values(claimed_by=user.id, claim_expires=expires)
            .execution_options(synchronize_session=False)
        )
        if res.rowcount == 1:  # type: ignore[attr-defined]
            return db.get(Item, item_id, populate_existing=True)
    return None


#: `remaining` counts up to this many items: a count must stay cheap with 100k items (the
#: page says "1000+ left"; the job page has the exact numbers).
LEFT_CAP = 1000


@dataclass(frozen=True)
class Left:
    """How many items are left for a reviewer.

    Attributes:
        count: the number, at most `LEFT_CAP`.
        more: more than ``count`` are left (the count stopped at the cap).
    """

    count: int
    more: bool = False


def remaining(
    db: Session, job_id: int, user: Reviewer, now: datetime, exclude: Collection[int] = (), cap: int | None = None
) -> Left:
    """How many items are left for ``user`` in a job: pending ones and second looks they
    may give (not their own first reviews), that nobody else holds now, including the one
    they hold and leaving out ``exclude`` (the ones they skipped).

    Counting stops after ``cap`` (default `LEFT_CAP`) items, so the answer costs the same
    in a job of 100 items as in one of 100k.
    """
    _check_exclude(exclude)
    cap = LEFT_CAP if cap is None else cap
    q = select(Item.id).where(Item.job_id == job_id, _claimable(user.id, now))
    if exclude:
        q = q.where(Item.id.not_in(list(exclude)))
    n = int(db.execute(select(func.count()).select_from(q.limit(cap + 1).subquery())).scalar_one())
    return Left(min(n, cap), n > cap)


def release(db: Session, item_id: int, user: Reviewer) -> bool:
    """Give back a claim (the reviewer left or skipped). Returns whether one was held."""
    res = db.execute(
        update(Item)
        .where(Item.id == item_id, Item.claimed_by == user.id)
        .values(claimed_by=None, claim_expires=None)
        .execution_options(synchronize_session=False)
    )
    return bool(res.rowcount)  # type: ignore[attr-defined]


@dataclass(frozen=True)
class DecisionInput:
    """What a reviewer sent.

    Attributes:
        decision: ``accept``, ``correct`` or ``reject`` (reject = wrong and unclear); on a
            change item ``confirmed``, ``no_change`` or ``unclear``.
        class_name: the right class, for ``correct``.
        comment: optional free text.
        version: the item version the reviewer saw.
    """

    decision: str
    class_name: str | None
    comment: str | None
    version: int


def review_state(item: Item) -> dict[str, Any]:
    """An item's review state as its audit rows record it (``before`` and ``after``)."""
    return {
        "status": item.status,
        "decision": item.final_decision,
        "class": item.final_class,
        "version": item.version,
    }


def decisions_for(job: Job) -> tuple[str, ...]:
    """The decisions a reviewer can give on the items of ``job``."""
    return CHANGE_DECISIONS if job.kind == KIND_CHANGE else DECISIONS


def _outcome(job: Job, item: Item, given: DecisionInput) -> tuple[str | None, bool]:
    """The reviewed class a decision gives, and whether it is a positive (four eyes).

    A change item has no class to correct: its positives are confirmed changes.
    """
    if given.decision not in decisions_for(job):
        raise InvalidDecisionError(f"decision must be one of {', '.join(decisions_for(job))}")
    if job.kind == KIND_CHANGE:
        return None, given.decision == CONFIRMED
    classes = list(job.classes or [])
    final_class: str | None
    if given.decision == "accept":
        if item.class_name is None:  # a cloudy window queued with --include-cloudy
            raise InvalidDecisionError("the model did not assess this window (cloudy): correct it to a "
                                       "class or reject it")
        final_class = item.class_name
    elif given.decision == "correct":
        if not given.class_name or given.class_name not in classes:
            raise InvalidDecisionError(f"choose a class among {classes}")
        final_class = given.class_name
    else:
        final_class = None
    return final_class, final_class is not None and final_class in set(job.classes_of_interest or [])


def record_decision(
    db: Session,
    item: Item,
    version: int,
    reviewer_id: int,
    kind: str,
    decision: str,
    class_name: str | None,
    comment: str | None,
    now: datetime,
    request_id: str,
) -> Decision:
    """Append the decision row taken on ``item`` at ``version``, then reload the item.

    Called after the item's conditional update, in the same transaction.

    Raises:
        DecisionConflictError: another decision on the same item version was written first.
    """
    dec = Decision(
        item_id=item.id,
        item_version=version,
        reviewer_id=reviewer_id,
        kind=kind,
        decision=decision,
        class_name=class_name,
        comment=comment,
        decided_at=now,
        request_id=request_id,
    )
    db.add(dec)
    try:
        db.flush()
    except IntegrityError as exc:
        raise DecisionConflictError(f"item {item.id} was decided concurrently; reload it") from exc
    db.refresh(item)
    return dec


def decide(
    db: Session,
    item_id: int,
    user: Reviewer,
    given: DecisionInput,
    now: datetime,
    request_id: str,
    override: bool = False,
) -> Decision:
    """Record a decision (or an admin's override) and update the item, audited.

    Raises:
        DecisionConflictError: the item moved on since version ``given.version``, or another
            reviewer holds it.
        InvalidDecisionError: bad decision/class, or the same person giving both looks.
    """
    item = db.execute(select(Item).where(Item.id == item_id).with_for_update()).scalar_one_or_none()
    if item is None:
        raise InvalidDecisionError(f"no item {item_id}")
    job = db.get(Job, item.job_id)
    assert job is not None
    final_class, positive = _outcome(job, item, given)
    if item.version != given.version:
        raise DecisionConflictError(
            f"item {item_id} changed since you opened it (version {given.version} → "
            f"{item.version}): someone else decided it; reload to see their decision"
        )
    if override:
        if item.status != DONE:
            raise InvalidDecisionError("only finished reviews can be overridden")
        kind, status = "override", DONE
    else:
        if item.status == DONE:
            raise DecisionConflictError(f"item {item_id} is already decided")
        if item.claimed_by not in (None, user.id) and item.claim_expires and item.claim_expires > now:
            raise DecisionConflictError(f"item {item_id} is being reviewed by someone else")
        if item.status == SECOND:
            if item.first_reviewer_id == user.id:
                raise InvalidDecisionError("a second review must come from another reviewer")
            kind, status = "second", DONE
        else:
            kind = "first"
            status = SECOND if job.four_eyes and positive else DONE
    before = review_state(item)
    values: dict[str, Any] = {
        "status": status,
        "final_decision": given.decision,
        "final_class": final_class,
        "decided_by": user.id,
        "decided_at": now,
        "claimed_by": None,
        "claim_expires": None,
        "version": Item.version + 1,
    }
    if kind == "first":
        values["first_reviewer_id"] = user.id
    res = db.execute(
        update(Item)
        .where(Item.id == item_id, Item.version == given.version)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        raise DecisionConflictError(f"item {item_id} was decided concurrently; reload it")
    comment = (given.comment or "").strip()[:2000] or None
    dec = record_decision(db, item, given.version, user.id, kind, given.decision, final_class, comment, now, request_id)
    # The decision time and the item's imported content (and a change item's change row)
    # are recorded so `audit verify` can check the rows that exports read against this row.
    after = review_state(item) | {
        "predicted": item.class_name,
        "comment": comment,
        "decided_at": now.isoformat(timespec="microseconds"),
        **content_fingerprints(db, item),
    }
    audit.append(
        db,
        user.name,
        "review.override" if override else f"review.{kind}",
        f"item:{item_id}",
        before,
        after,
        request_id,
    )
    return dec


@dataclass(frozen=True)
class ClassAgreement:
    """How often reviewers agreed with the model on one predicted class.

    Attributes:
        class_name: the model's predicted class.
        reviewed: items with a label from a reviewer (accept or correct).
        agreed: of those, where the reviewer's class equals the prediction.
        rejected: items marked reject/unclear (left out of precision).
    """

    class_name: str
    reviewed: int
    agreed: int
    rejected: int

    @property
    def precision(self) -> float | None:
        """Model precision as judged by reviewers (``None`` before any review)."""
        return self.agreed / self.reviewed if self.reviewed else None


def agreement(db: Session, job_id: int) -> list[ClassAgreement]:
    """Per predicted class, the model's precision as judged by reviewers (finished items)."""
    labelled = case((Item.final_decision.in_(("accept", "correct")), 1), else_=0)
    agreed = case(
        (and_(Item.final_decision.in_(("accept", "correct")), Item.final_class == Item.class_name), 1),
        else_=0,
    )
    rejected = case((Item.final_decision == "reject", 1), else_=0)
    rows = db.execute(
        select(Item.class_name, func.sum(labelled), func.sum(agreed), func.sum(rejected))
        .where(Item.job_id == job_id, Item.status == DONE)
        .group_by(Item.class_name)
        .order_by(Item.class_name)
    ).all()
    return [ClassAgreement(str(c), int(n or 0), int(a or 0), int(r or 0)) for c, n, a, r in rows]


def job_counts(db: Session, job_id: int) -> dict[str, int]:
    """Items per review state for a job (``pending``, ``second``, ``done``)."""
    rows = db.execute(select(Item.status, func.count()).where(Item.job_id == job_id).group_by(Item.status)).all()
    out = {PENDING: 0, SECOND: 0, DONE: 0}
    out.update({str(s): int(n) for s, n in rows})
    return out


@dataclass(frozen=True)
class TransitionAgreement:
    """How reviewers judged the changes of one transition (finished change items).

    Attributes:
        transition: ``appeared``, ``disappeared``, ``changed`` (or another queued one).
        confirmed, no_change, unclear: finished reviews of each decision.
    """

    transition: str
    confirmed: int
    no_change: int
    unclear: int

    @property
    def precision(self) -> float | None:
        """Share of the clear answers that confirmed the change (``None`` before any)."""
        clear = self.confirmed + self.no_change
        return self.confirmed / clear if clear else None


def change_agreement(db: Session, job_id: int) -> list[TransitionAgreement]:
    """Per transition of a change job, the reviewers' decisions on finished items."""
    from review.db.models import NO_CHANGE, UNCLEAR, ChangeItem

    def count(decision: str) -> Any:
        return func.sum(case((Item.final_decision == decision, 1), else_=0))

    rows = db.execute(
        select(ChangeItem.transition, count(CONFIRMED), count(NO_CHANGE), count(UNCLEAR))
        .join(Item, Item.id == ChangeItem.item_id)
        .where(ChangeItem.job_id == job_id, Item.status == DONE)
        .group_by(ChangeItem.transition)
        .order_by(ChangeItem.transition)
    ).all()
    return [TransitionAgreement(str(t), int(c or 0), int(n or 0), int(u or 0)) for t, c, n, u in rows]
