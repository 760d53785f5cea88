"""The audit trail: an append-only, hash-chained log of every state change.

Each row holds who, when, what (action and target), the state before and after (JSON) and
the request id. Its hash is ``sha256(prev_hash + canonical JSON of the row)``, so editing,
deleting or reordering any row breaks the chain from there on; `verify` says where.

Appends are serialised by locking the single `AuditHead` row (``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite write transactions are already exclusive), so the chain never forks.
Nothing in this project updates or deletes audit rows: `guard_audit_rows` makes the ORM
refuse to.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import ORMExecuteState, Session

from review.db.models import AuditEntry, AuditHead, utcnow

GENESIS = "0" * 64


def canonical(value: Any) -> str:
    """JSON with sorted keys and no spaces: the form that is hashed and stored."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def entry_hash(
    prev_hash: str,
    seq: int,
    at: str,
    actor: str,
    action: str,
    target: str,
    before: str,
    after: str,
    request_id: str,
) -> str:
    """The hash of one row, covering the previous row's hash."""
    body = canonical([seq, at, actor, action, target, before, after, request_id])
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def _locked_head(db: Session) -> AuditHead | None:
    """The chain's head row, locked until the transaction ends (serialises appends)."""
    return db.execute(select(AuditHead).where(AuditHead.id == 1).with_for_update()).scalar_one_or_none()


def append(
    db: Session,
    actor: str,
    action: str,
    target: str,
    before: Any = None,
    after: Any = None,
    request_id: str = "-",
) -> AuditEntry:
    """Append one row in the caller's transaction (it commits or rolls back with it).

    Args:
        db: a session inside a write transaction.
        actor: user name, or ``cli:<os user>`` for commands.
        action: what happened, e.g. ``decision``, ``login``, ``job.submit``.
        target: what it happened to, e.g. ``item:42``.
        before: state before (JSON-serialisable), ``None`` for creations.
        after: state after.
        request_id: the HTTP request id, or ``cli``.
    """
    head = _locked_head(db)
    if head is None:
        # The first append ever: concurrent first appends may race to create the head row.
        # The loser's insert fails inside its savepoint; it then waits for the winner's lock.
        try:
            with db.begin_nested():
                db.add(AuditHead(id=1, seq=0, hash=GENESIS))
        except IntegrityError:
            pass
        head = _locked_head(db)
        assert head is not None
    seq = head.seq + 1
    at = utcnow().isoformat(timespec="microseconds")
    b, a = canonical(before), canonical(after)
    h = entry_hash(head.hash, seq, at, actor, action, target, b, a, request_id)
    row = AuditEntry(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        target=target,
        before=b,
        after=a,
        request_id=request_id,
        prev_hash=head.hash,
        hash=h,
    )
    db.add(row)
    head.seq, head.hash = seq, h
    db.flush()
    return row


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of `verify`.

    Attributes:
        ok: the whole chain is intact.
        rows: rows checked.
        bad_seq: the first row that fails (``None`` when ok).
        reason: why it fails.
    """

    ok: bool
    rows: int
    bad_seq: int | None = None
    reason: str = ""


def verify(db: Session, batch: int = 5000) -> VerifyResult:
    """Walk the chain from the first row and report the first break.

    Detects an edited row (its hash no longer matches), a deleted row (a gap in ``seq`` or a
    ``prev_hash`` that does not match), and deleted rows at the end (the head disagrees).
    """
    prev_hash, expected_seq, n = GENESIS, 1, 0
    last = 0
    while True:
        rows = (
            db.execute(select(AuditEntry).where(AuditEntry.seq > last).order_by(AuditEntry.seq).limit(batch))
            .scalars()
            .all()
        )
        if not rows:
            break
        for r in rows:
            if r.seq != expected_seq:
                return VerifyResult(False, n, expected_seq, f"row {expected_seq} is missing (next row is {r.seq})")
            if r.prev_hash != prev_hash:
                return VerifyResult(
                    False, n, r.seq, f"row {r.seq}: previous-hash link broken (a row before it was changed or removed)"
                )
            h = entry_hash(prev_hash, r.seq, r.at, r.actor, r.action, r.target, r.before, r.after, r.request_id)
            if h != r.hash:
                return VerifyResult(False, n, r.seq, f"row {r.seq}: content does not match its hash (edited)")
            prev_hash, expected_seq, n = r.hash, r.seq + 1, n + 1
        last = rows[-1].seq
        db.expunge_all()
    head = db.get(AuditHead, 1)
    head_seq, head_hash = (head.seq, head.hash) if head is not None else (0, GENESIS)
    if head_seq != n or head_hash != prev_hash:
        return VerifyResult(False, n, n + 1, f"rows after {n} are missing (the head records {head_seq} rows)")
    return VerifyResult(True, n)


def guard_audit_rows() -> None:
    """Make every ORM session refuse to update or delete audit rows (idempotent)."""
    if event.contains(Session, "before_flush", _refuse_changes):
        return
    event.listen(Session, "before_flush", _refuse_changes)
    event.listen(Session, "do_orm_execute", _refuse_bulk)


class AuditTamperError(RuntimeError):
    """Code tried to change or delete an audit row."""


def _refuse_changes(session: Session, _ctx: Any, _instances: Any) -> None:
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, AuditEntry) and (obj in session.deleted or session.is_modified(obj)):
            raise AuditTamperError("audit rows are append-only")


def _refuse_bulk(state: ORMExecuteState) -> None:
    if (state.is_update or state.is_delete) and any(m.class_ is AuditEntry for m in state.all_mappers):
        raise AuditTamperError("audit rows are append-only")
