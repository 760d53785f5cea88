"""Tables of the review service (SQLAlchemy 2 declarative models).

Times are naive UTC ``datetime``s (see `utcnow`) so SQLite and PostgreSQL agree. The audit
log stores its timestamp as text, because its hash covers the exact characters.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

ROLES: tuple[str, ...] = ("analyst", "reviewer", "admin")

#: Item states: waiting for a first look, waiting for a second reviewer ("four eyes"), done.
PENDING, SECOND, DONE = "pending", "second", "done"
#: Reviewer decisions.
DECISIONS: tuple[str, ...] = ("accept", "correct", "reject")
#: Reviewer decisions on a change item (`ChangeItem`): the change is real, there is none, or
#: the reviewer cannot tell.
CONFIRMED, NO_CHANGE, UNCLEAR = "confirmed", "no_change", "unclear"
CHANGE_DECISIONS: tuple[str, ...] = (CONFIRMED, NO_CHANGE, UNCLEAR)
#: Job states.
JOB_QUEUED, JOB_RUNNING, JOB_READY, JOB_FAILED = "queued", "running", "ready", "failed"
#: A job whose table is being brought into the review queue (by the worker, in batches).
JOB_IMPORTING = "importing"


def utcnow() -> datetime:
    """Now, as a naive UTC datetime (the convention of every table here)."""
    return datetime.now(UTC).replace(tzinfo=None)


class JSONText(TypeDecorator[Any]):
    """A JSON value stored as text (the ``TEXT`` columns the first schema declared hold JSON
    already, so no migration is needed). Assign a new value to change it: in-place edits
    of a loaded list are not tracked."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else json.dumps(value, allow_nan=False)

    def process_result_value(self, value: str | None, dialect: Dialect) -> Any:
        return None if value is None or value == "" else json.loads(value)


class Base(DeclarativeBase):
    """Declarative base of the review tables."""


class User(Base):
    """A person who signs in: analyst, reviewer or admin."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(255))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class LoginSession(Base):
    """A signed-in browser. The cookie holds a token; the table only its SHA-256."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Job(Base):
    """A batch: either run by the worker through ``vision infer`` or imported finished.

    The jobs table is also the worker's queue (``status == queued``).
    """

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))  # "inference" or "import"
    status: Mapped[str] = mapped_column(String(16), index=True)
    input_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    model: Mapped[str | None] = mapped_column(Text, nullable=True)
    job_dir: Mapped[str] = mapped_column(Text)
    classes: Mapped[list[str]] = mapped_column(JSONText, default=list)  # model order
    classes_of_interest: Mapped[list[str]] = mapped_column(JSONText, default=list)
    four_eyes: Mapped[bool] = mapped_column(Boolean, default=False)
    model_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(100), nullable=True)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    rows_skipped: Mapped[int] = mapped_column(Integer, default=0)
    #: Rows not queued, by reason (``nodata``, ``cloudy``, ``error``, ``invalid``; ``None``
    #: for jobs imported before these were counted).
    not_assessed: Mapped[dict[str, int] | None] = mapped_column(JSONText, nullable=True)
    #: The import queued ``cloudy`` rows too (``--include-cloudy``), for a reviewer to label.
    include_cloudy: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    submitted_by: Mapped[str] = mapped_column(String(64))
    #: For a change job: the transitions that became review items (``None`` otherwise).
    transitions: Mapped[list[str] | None] = mapped_column(JSONText, nullable=True)
    worker_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Item(Base):
    """One row of a job's ``predictions.parquet`` that entered the review queue."""

    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("job_id", "row_index", name="uq_items_job_row"),
        Index("ix_items_queue", "job_id", "status", "interest", "confidence"),
        Index("ix_items_claimed_by", "claimed_by"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    row_index: Mapped[int] = mapped_column(Integer)
    path: Mapped[str] = mapped_column(Text)
    row_off: Mapped[int | None] = mapped_column(Integer, nullable=True)
    col_off: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    crs: Mapped[str | None] = mapped_column(Text, nullable=True)
    minx: Mapped[float | None] = mapped_column(Float, nullable=True)
    miny: Mapped[float | None] = mapped_column(Float, nullable=True)
    maxx: Mapped[float | None] = mapped_column(Float, nullable=True)
    maxy: Mapped[float | None] = mapped_column(Float, nullable=True)
    label: Mapped[int | None] = mapped_column(Integer, nullable=True)
    class_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)
    probs: Mapped[list[float] | None] = mapped_column(JSONText, nullable=True)
    flagged: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    input_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    model_version: Mapped[str | None] = mapped_column(String(100), nullable=True)
    model_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    interest: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default=PENDING)
    final_decision: Mapped[str | None] = mapped_column(String(16), nullable=True)
    final_class: Mapped[str | None] = mapped_column(String(200), nullable=True)
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    first_reviewer_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    claimed_by: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    claim_expires: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=0)


class ChangeItem(Base):
    """The two dates of a change item: one row of a change folder's ``changes.parquet``
    (`vision.contracts.changes`) that entered the review queue.

    The `Item` it belongs to (same id) holds the *after* window (the latest date: path,
    window, CRS, bounds, class, input and model identity) and the review state; this row
    holds the comparison and the *before* window (the oldest date) in its own scene's pixels
    and CRS. Nothing here changes after the import: `review.audit_changes` fingerprints it
    into every decision's audit row, so ``audit verify`` names an edited one.
    """

    __tablename__ = "change_items"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), primary_key=True, autoincrement=False)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    change_id: Mapped[str] = mapped_column(String(200))
    transition: Mapped[str] = mapped_column(String(16))
    aoi_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    area_ha: Mapped[float | None] = mapped_column(Float, nullable=True)
    alignment: Mapped[str | None] = mapped_column(String(16), nullable=True)
    item_before: Mapped[str | None] = mapped_column(Text, nullable=True)
    item_after: Mapped[str | None] = mapped_column(Text, nullable=True)
    acquired_before: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    acquired_after: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    class_before: Mapped[str | None] = mapped_column(String(200), nullable=True)
    class_after: Mapped[str | None] = mapped_column(String(200), nullable=True)
    p_before: Mapped[float | None] = mapped_column(Float, nullable=True)
    p_after: Mapped[float | None] = mapped_column(Float, nullable=True)
    p_interest_before: Mapped[float | None] = mapped_column(Float, nullable=True)
    p_interest_after: Mapped[float | None] = mapped_column(Float, nullable=True)
    cloud_fraction_before: Mapped[float | None] = mapped_column(Float, nullable=True)
    cloud_fraction_after: Mapped[float | None] = mapped_column(Float, nullable=True)
    path_before: Mapped[str] = mapped_column(Text)
    row_off_before: Mapped[int | None] = mapped_column(Integer, nullable=True)
    col_off_before: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height_before: Mapped[int | None] = mapped_column(Integer, nullable=True)
    width_before: Mapped[int | None] = mapped_column(Integer, nullable=True)
    crs_before: Mapped[str | None] = mapped_column(Text, nullable=True)
    minx_before: Mapped[float | None] = mapped_column(Float, nullable=True)
    miny_before: Mapped[float | None] = mapped_column(Float, nullable=True)
    maxx_before: Mapped[float | None] = mapped_column(Float, nullable=True)
    maxy_before: Mapped[float | None] = mapped_column(Float, nullable=True)
    input_sha256_before: Mapped[str | None] = mapped_column(String(64), nullable=True)
    model_name_before: Mapped[str | None] = mapped_column(String(200), nullable=True)
    model_version_before: Mapped[str | None] = mapped_column(String(100), nullable=True)
    model_sha256_before: Mapped[str | None] = mapped_column(String(64), nullable=True)
    job_before: Mapped[str] = mapped_column(Text)
    job_after: Mapped[str] = mapped_column(Text)
    #: Every date, oldest first: ``[item, class or status, probability]``.
    trajectory: Mapped[list[Any] | None] = mapped_column(JSONText, nullable=True)
    first_appeared: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Decision(Base):
    """A reviewer's decision on an item (append-only; the item holds the current state).

    ``item_version`` is the item version the decision was made on: the unique constraint
    makes two decisions on the same version impossible, so a concurrent one is detected.
    """

    __tablename__ = "decisions"
    __table_args__ = (UniqueConstraint("item_id", "item_version", name="uq_decisions_item_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"), index=True)
    item_version: Mapped[int] = mapped_column(Integer)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # first | second | override
    decision: Mapped[str] = mapped_column(String(16))
    class_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    comment: Mapped[str | None] = mapped_column(Text, nullable=True)
    decided_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class AuditEntry(Base):
    """One state change. Append-only and chained by keyed hashes (see `review.audit`).

    ``version`` says how ``hash`` is computed: 1 = plain SHA-256 (rows written before the
    keyed chain), 2 = HMAC-SHA256 with the audit key.
    """

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(Integer, server_default="1")
    at: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(200))
    before: Mapped[str] = mapped_column(Text)
    after: Mapped[str] = mapped_column(Text)
    request_id: Mapped[str] = mapped_column(String(64))
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The single row naming the last audit entry; locking it serialises appends.

    ``mac`` signs ``(seq, hash)`` with the audit key, so cutting rows off the end and
    rewriting the head is detected by anyone holding the key.
    """

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    hash: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str | None] = mapped_column(String(64), nullable=True)
