"""The audit trail: an append-only log of every state change, chained by keyed hashes.

Each row holds who, when, what (action and target), the state before and after (JSON) and
the request id. Its ``hash`` is ``HMAC-SHA256(audit key, prev_hash + canonical JSON of the
row)``, and the single `AuditHead` row carries a MAC of ``(seq, hash)`` of the last row.
The audit key is derived from the service's secret (or read from a dedicated key file,
`review.auth.keys`); it is never stored in the database. So someone who can write the
database but does not hold the key cannot edit a row and recompute the chain, cut rows off
the end and rewrite the head, or forge new rows: `verify` names the first row that fails.
`verify` also checks the tables that exports read (decisions, items, users) against what
their audit rows say (`review.audit_state`), which detects a wiped log in a database that
still holds data, and checks anchored heads kept outside the database
(`review.audit_anchor`), which detect a rollback or a wipe of everything.

Rows written before the keyed chain (``version`` 1, plain SHA-256) still verify: when a
database is upgraded, `seal_legacy` appends a keyed ``audit.seal`` row right after them,
whose MAC covers the last unkeyed row. Unkeyed rows are accepted only as a prefix ending
in that seal.

Appends are serialised by locking the single `AuditHead` row (``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite write transactions are already exclusive), so the chain never forks.
Nothing in this project updates or deletes audit rows: `guard_audit_rows` makes the ORM
refuse to.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import event, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import ORMExecuteState, Session

from review.db.batches import batches
from review.db.engine import AUDIT_KEY_INFO
from review.db.models import AuditEntry, AuditHead, utcnow
from vision.errors import ConfigError, VisionError

GENESIS = "0" * 64
#: ``AuditEntry.version`` of rows from before the keyed chain (plain SHA-256).
LEGACY_VERSION = 1
#: ``AuditEntry.version`` of keyed rows (HMAC-SHA256 with the audit key).
CHAIN_VERSION = 2
#: The action of the row that closes the unkeyed prefix of an upgraded database.
SEAL_ACTION = "audit.seal"


class AuditTamperError(VisionError, RuntimeError):
    """Code tried to change or delete an audit row."""


class AuditKeyError(ConfigError):
    """The audit key is needed (to write or verify the log) and none is configured."""


def canonical(value: Any) -> str:
    """JSON with sorted keys and no spaces: the form that is hashed and stored."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


class ChainFields(NamedTuple):
    """What a row's hash covers, in hashed order: the previous row's hash and the row's columns.

    Its field names are `AuditEntry` columns, so ``AuditEntry(**fields._asdict(), ...)`` writes them.
    """

    prev_hash: str
    seq: int
    at: str
    actor: str
    action: str
    target: str
    before: str
    after: str
    request_id: str

    @classmethod
    def of(cls, row: AuditEntry | Mapping[str, Any]) -> ChainFields:
        """The fields of a stored row, or of a row read back as a mapping (an evidence package)."""
        if isinstance(row, AuditEntry):
            return cls(*(getattr(row, name) for name in cls._fields))
        return cls(*(row[name] for name in cls._fields))


def legacy_entry_hash(*fields: *ChainFields) -> str:
    """The unkeyed hash of a version-1 row (how rows were chained before the audit key)."""
    f = ChainFields(*fields)
    body = canonical(list(f[1:]))
    return hashlib.sha256(f"{f.prev_hash}\n{body}".encode()).hexdigest()


def entry_mac(key: bytes, *fields: *ChainFields) -> str:
    """The keyed hash of a version-2 row, covering the previous row's hash."""
    f = ChainFields(*fields)
    body = canonical([CHAIN_VERSION, *f[1:]])
    return hmac.new(key, f"{f.prev_hash}\n{body}".encode(), hashlib.sha256).hexdigest()


def head_mac(key: bytes, seq: int, hash_: str) -> str:
    """The MAC of the head row: signs how long the chain is and where it ends."""
    return hmac.new(key, canonical(["audit-head", seq, hash_]).encode(), hashlib.sha256).hexdigest()


def session_key(db: Session) -> bytes:
    """The audit key of ``db``: the one its `Database` was opened with, else the environment's.

    Raises:
        AuditKeyError: no key is configured.
    """
    key = db.info.get(AUDIT_KEY_INFO)
    if isinstance(key, bytes):
        return key
    from review.auth.keys import audit_key_from_env

    found = audit_key_from_env()
    if found is None:
        raise AuditKeyError(
            "the audit log is keyed with the service's secret: set VISION_REVIEW_SECRET to the value the "
            "service uses (or VISION_REVIEW_AUDIT_KEY_FILE to its audit key file)"
        )
    return found


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
    """Append one keyed row in the caller's transaction (it commits or rolls back with it).

    Args:
        db: a session inside a write transaction.
        actor: user name, or ``cli:<os user>`` for commands.
        action: what happened, e.g. ``decision``, ``login``, ``job.submit``.
        target: what it happened to, e.g. ``item:42``.
        before: state before (JSON-serialisable), ``None`` for creations.
        after: state after.
        request_id: the HTTP request id, or ``cli``.

    Raises:
        AuditKeyError: no audit key is configured (nothing is written).
    """
    key = session_key(db)
    head = _locked_head(db)
    if head is None:
        # The first append ever: concurrent first appends may race to create the head row.
        # The loser's insert fails inside its savepoint; it then waits for the winner's lock.
        try:
            with db.begin_nested():
                db.add(AuditHead(id=1, seq=0, hash=GENESIS, mac=head_mac(key, 0, GENESIS)))
        except IntegrityError:
            pass
        head = _locked_head(db)
        assert head is not None
    seq = head.seq + 1
    at = utcnow().isoformat(timespec="microseconds")
    fields = ChainFields(head.hash, seq, at, actor, action, target, canonical(before), canonical(after), request_id)
    h = entry_mac(key, *fields)
    row = AuditEntry(**fields._asdict(), version=CHAIN_VERSION, hash=h)
    db.add(row)
    head.seq, head.hash, head.mac = seq, h, head_mac(key, seq, h)
    db.flush()
    return row


def seal_legacy(db: Session) -> AuditEntry | None:
    """Close the unkeyed rows of an upgraded database with a keyed ``audit.seal`` row.

    Called by `review.db.schema.upgrade` in the transaction that adds the keyed chain. The
    seal's MAC covers the last unkeyed row's hash, so none of them can be rewritten later
    without the key. Nothing is sealed in an empty log.
    """
    n = db.execute(select(func.count()).select_from(AuditEntry)).scalar_one()
    if not n:
        return None
    head = db.get(AuditHead, 1)
    if head is None:
        raise AuditTamperError(
            f"the audit log holds {n} rows but no head row: it was tampered with before this upgrade; "
            "restore the database from a backup"
        )
    legacy = {"rows": int(n), "head_seq": head.seq, "head_hash": head.hash}
    return append(db, "system", SEAL_ACTION, "audit_log", None, {"legacy": legacy, "chain": CHAIN_VERSION}, "upgrade")


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of `verify`.

    Attributes:
        ok: the chain, its head, the anchors and the checked tables all agree.
        rows: rows checked.
        bad_seq: the first audit row that fails, when a row is to blame (``None`` otherwise).
        reason: why it fails.
        head_hash: the hash of the last row (``GENESIS`` for an empty log).
    """

    ok: bool
    rows: int
    bad_seq: int | None = None
    reason: str = ""
    head_hash: str = GENESIS

    @property
    def message(self) -> str:
        """One line for people: what was found, and where."""
        if self.ok:
            return f"audit log intact: {self.rows} rows"
        where = f" at row {self.bad_seq}" if self.bad_seq is not None else ""
        return f"audit log BROKEN{where}: {self.reason}"


def verify(
    db: Session,
    key: bytes | None = None,
    anchors: Iterable[Any] = (),
    check_tables: bool = True,
    batch: int = 5000,
) -> VerifyResult:
    """Walk the chain from the first row and report the first thing that does not hold.

    Detects an edited row (its MAC no longer matches; recomputing needs the key), a deleted
    row (a gap in ``seq`` or a broken ``prev_hash`` link), rows cut off the end (the head
    disagrees, and rewriting the head needs the key), a chain that differs from or is shorter
    than an anchored head, and decision, item and user rows that differ from their audit
    rows (`review.audit_state`).

    Run it in one snapshot (`review.db.engine.Database.snapshot`) so that writes made while
    it runs cannot look like tampering.

    Args:
        db: a session reading the database.
        key: the audit key (default: the session's, see `session_key`).
        anchors: `review.audit_anchor.Anchor` heads kept outside the database.
        check_tables: also check decisions, items and users against the log.

    Raises:
        AuditKeyError: no audit key is configured.
    """
    from review.audit_state import Expectations

    key = key or session_key(db)
    anchored = {int(a.seq): a for a in anchors}
    expect = Expectations() if check_tables else None
    prev, n, legacy, keyed = GENESIS, 0, 0, False
    for rows in batches(db, AuditEntry, AuditEntry.seq, size=batch):
        for r in rows:
            bad = _check_row(r, key, prev, n + 1, legacy, keyed)
            if bad:
                return VerifyResult(False, n, r.seq if r.seq == n + 1 else n + 1, bad)
            a = anchored.get(r.seq)
            if a is not None and not hmac.compare_digest(str(a.hash), r.hash):
                return VerifyResult(
                    False, n, r.seq, f"row {r.seq} differs from the head anchored at {a.at} (rewritten since)"
                )
            if r.version == LEGACY_VERSION:
                legacy += 1
            else:
                keyed = True
            if expect is not None:
                expect.feed(r)
            prev, n = r.hash, r.seq
    bad = _check_head(db.get(AuditHead, 1), key, n, prev, legacy, keyed)
    if bad:
        return VerifyResult(False, n, n + 1, bad, prev)
    for seq, a in sorted(anchored.items()):
        if seq > n:
            return VerifyResult(
                False,
                n,
                n + 1,
                f"the log ends at row {n} but the head anchored at {a.at} had {seq} rows: rows were deleted "
                "(or the database was restored from an older copy)",
                prev,
            )
    if expect is not None:
        mismatch = expect.check(db, n)
        if mismatch is not None:
            return VerifyResult(False, n, mismatch.seq, mismatch.reason, prev)
    return VerifyResult(True, n, head_hash=prev)


def _check_row(r: AuditEntry, key: bytes, prev: str, expected_seq: int, legacy: int, keyed: bool) -> str:
    """Why row ``r`` breaks the chain, or ``""``."""
    if r.seq != expected_seq:
        return f"row {expected_seq} is missing (next row is {r.seq})"
    if r.prev_hash != prev:
        return f"row {r.seq}: previous-hash link broken (a row before it was changed or removed)"
    fields = ChainFields.of(r)
    if r.version == LEGACY_VERSION:
        if keyed:
            return (
                f"row {r.seq} is in the unkeyed format of before the keyed chain although keyed rows precede it: "
                "written or rewritten without the audit key"
            )
        expected = legacy_entry_hash(*fields)
    elif r.version == CHAIN_VERSION:
        if legacy and not keyed and r.action != SEAL_ACTION:
            return f"row {r.seq}: the unkeyed rows 1-{legacy} are not closed by a seal row (rows were rewritten)"
        expected = entry_mac(key, *fields)
    else:
        return f"row {r.seq} has an unknown chain version {r.version!r}"
    if not hmac.compare_digest(expected, r.hash):
        return (
            f"row {r.seq}: content does not match its hash (edited, or rewritten without the audit key; "
            "also shown when VISION_REVIEW_SECRET is not the service's)"
        )
    return ""


def _check_head(head: AuditHead | None, key: bytes, n: int, last_hash: str, legacy: int, keyed: bool) -> str:
    """Why the head disagrees with the ``n`` rows walked, or ``""``."""
    if head is None:
        return f"the audit head is missing (the log has {n} rows)" if n else ""
    if head.seq != n or head.hash != last_hash:
        if head.seq > n:
            return f"rows after {n} are missing (the head records {head.seq} rows)"
        return f"the head records {head.seq} rows but the log has {n}: the head or the rows were rewritten"
    if n and not keyed:
        return (
            f"the log holds only unkeyed rows (1-{legacy}) and no seal: its keyed rows were removed, or the "
            "database was put back to the format of before the keyed chain"
        )
    if not head.mac or not hmac.compare_digest(head.mac, head_mac(key, head.seq, head.hash)):
        return (
            f"the audit head (row {head.seq}) is not signed with the audit key: rows after it were deleted and the "
            "head rewritten (or VISION_REVIEW_SECRET is not the service's)"
        )
    return ""


def guard_audit_rows() -> None:
    """Make every ORM session refuse to update or delete audit rows (idempotent)."""
    if event.contains(Session, "before_flush", _refuse_changes):
        return
    event.listen(Session, "before_flush", _refuse_changes)
    event.listen(Session, "do_orm_execute", _refuse_bulk)


def _refuse_changes(session: Session, _ctx: Any, _instances: Any) -> None:
    for obj in list(session.dirty) + list(session.deleted):
        if isinstance(obj, AuditEntry) and (obj in session.deleted or session.is_modified(obj)):
            raise AuditTamperError("audit rows are append-only")


def _refuse_bulk(state: ORMExecuteState) -> None:
    if (state.is_update or state.is_delete) and any(m.class_ is AuditEntry for m in state.all_mappers):
        raise AuditTamperError("audit rows are append-only")
