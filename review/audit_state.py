"""What the audit log says the tables must hold, and the check that they do.

Exports read the ``items`` and ``decisions`` tables, and sign-in reads ``users``; none of
them is chained. `review.audit.verify` feeds every authentic audit row to `Expectations`,
which then compares the tables with what the rows recorded and names the first mismatch:

- every decision row matches the review row (``review.first``/``second``/``override``/
  ``undo``) made on the same item version: kind, decision, class, comment, reviewer, request
  id and time, and no review row lacks its decision (an undo is a decision row of its own,
  ``kind = decision = "undo"``: nothing is deleted);
- every item's review state (status, final decision and class, version, deciding reviewer,
  time, first reviewer) equals what its last review row says (or is untouched when none
  exists; after an undo, the state it restored); its prediction and location
  (`item_fingerprint`) equal what the reviewer saw;
- each job has as many items as its import recorded, and the settings that decided which rows
  were queued (``include_cloudy``, from ``job.import``) and what was counted as not assessed
  (``not_assessed`` by reason, from ``job.ready``) are still the recorded ones;
- a change item's change row (its before window, classes, inputs and models:
  `review.audit_changes`) equals what each decision on it recorded, every change row has its
  item in a change job, and every item of a change job has its change row;
- every user exists in the log with the role and active flag of their last change;
- an empty log in a database that holds users, jobs, items or decisions was wiped.

Items, decisions and users are only changed together with an audit row (one transaction),
so on an untouched database every check holds.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from review.audit_changes import change_fingerprint, changes_of, check_change_rows
from review.db.batches import batches
from review.db.models import PENDING, AuditEntry, ChangeItem, Decision, Item, Job, User
from vision.contracts.window import WINDOW_COLUMNS

#: Review actions and the decision kind each records.
REVIEW_KINDS = {
    "review.first": "first",
    "review.second": "second",
    "review.override": "override",
    "review.undo": "undo",
}
#: The decision kind (and decision value) of an undo (`review.undo`).
UNDO_KIND = "undo"
#: Audit actions that record how many items a job holds.
ITEM_COUNT_ACTIONS = ("job.import", "job.ready")
#: Job settings an import records (name: JSON type), with the action that records each:
#: ``include_cloudy`` in ``job.import``, ``not_assessed`` in ``job.ready``.
JOB_SETTINGS: dict[str, type] = {"include_cloudy": bool, "not_assessed": dict}
#: Audit actions that record a user's role and active flag.
USER_ACTIONS = ("user.add", "user.update")
#: The item columns an export shows that never change after import.
ITEM_FIELDS = (
    "job_id",
    "row_index",
    "path",
    *WINDOW_COLUMNS,
    "label",
    "class_name",
    "confidence",
    "probs",
    "flagged",
    "input_sha256",
    "model_name",
    "model_version",
    "model_sha256",
)

def item_fingerprint(item: Any) -> str:
    """SHA-256 of an item's imported content (`ITEM_FIELDS`): recorded with each decision."""
    values = [getattr(item, f) for f in ITEM_FIELDS]
    return hashlib.sha256(json.dumps(values, separators=(",", ":"), default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Mismatch:
    """A table row that differs from the audit log.

    Attributes:
        seq: the audit row it contradicts (``None`` when there is none).
        reason: what differs, naming the row.
    """

    seq: int | None
    reason: str


@dataclass(frozen=True)
class _Review:
    seq: int
    item_id: int
    version: int
    actor: str
    kind: str
    request_id: str
    after: dict[str, Any]


def _target_id(target: str, kind: str) -> int | None:
    prefix, _, rest = target.partition(":")
    return int(rest) if prefix == kind and rest.isdigit() else None


def _load(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="microseconds") if value is not None else None


def decision_mismatch(d: Any, r: _Review, names: dict[int, str]) -> str | None:
    """Why decision row ``d`` (a `Decision` or an object with its attributes) differs from
    the review row ``r`` made on the same item version, or ``None``."""
    for label, actual, want in _decision_expected(d, r, names):
        if actual != want:
            return f"decision {d.id} (item {d.item_id}): {label} is {actual!r} but audit row {r.seq} says {want!r}"
    return None


def _decision_expected(d: Any, r: _Review, names: dict[int, str]) -> list[tuple[str, Any, Any]]:
    """``(what, in the table, in the audit row)`` for one decision row."""
    undo = r.kind == UNDO_KIND  # its after holds the item's restored state, not the undo's
    expected: list[tuple[str, Any, Any]] = [
        ("kind", d.kind, r.kind),
        ("decision", d.decision, UNDO_KIND if undo else r.after.get("decision")),
        ("class", d.class_name, None if undo else r.after.get("class")),
        ("comment", d.comment, None if undo else r.after.get("comment")),
        ("reviewer", names.get(d.reviewer_id), r.actor),
        ("request id", d.request_id, r.request_id),
    ]
    at = "undo_at" if undo else "decided_at"
    if at in r.after or undo:
        expected.append(("time", _iso(d.decided_at), r.after.get(at)))
    return expected


class Expectations:
    """Collects, from audit rows in order, what the tables must hold; `check` compares."""

    def __init__(self) -> None:
        self.reviews: dict[tuple[int, int], _Review] = {}
        self.last: dict[int, _Review] = {}
        self.first_reviewer: dict[int, str] = {}
        self.jobs: dict[int, tuple[int, int]] = {}
        self.job_settings: dict[tuple[int, str], tuple[int, Any]] = {}
        self.users: dict[str, tuple[int, str, bool]] = {}
        self.broken: Mismatch | None = None

    def feed(self, r: AuditEntry) -> None:
        """Take in one (authentic) audit row."""
        if r.action in REVIEW_KINDS:
            self._review(r, REVIEW_KINDS[r.action])
        elif r.action in ITEM_COUNT_ACTIONS:
            after, job_id = _load(r.after), _target_id(r.target, "job")
            if isinstance(after, dict) and job_id is not None and isinstance(after.get("items"), int):
                self.jobs[job_id] = (r.seq, after["items"])
            if isinstance(after, dict) and job_id is not None:
                for name, kind in JOB_SETTINGS.items():
                    if isinstance(after.get(name), kind):
                        self.job_settings[(job_id, name)] = (r.seq, after[name])
        elif r.action in USER_ACTIONS:
            after = _load(r.after)
            if isinstance(after, dict) and isinstance(after.get("name"), str):
                self.users[after["name"]] = (r.seq, str(after.get("role")), bool(after.get("active")))

    def _review(self, r: AuditEntry, kind: str) -> None:
        before, after, item_id = _load(r.before), _load(r.after), _target_id(r.target, "item")
        if not (isinstance(before, dict) and isinstance(after, dict) and item_id is not None):
            self.broken = self.broken or Mismatch(r.seq, f"audit row {r.seq}: unreadable review record")
            return
        rev = _Review(r.seq, item_id, int(before.get("version", -1)), r.actor, kind, r.request_id, after)
        self.reviews[(item_id, rev.version)] = rev
        self.last[item_id] = rev
        if kind == "first":
            self.first_reviewer[item_id] = r.actor
        elif kind == UNDO_KIND:  # the undo recorded whose first review stands now, if any
            first = after.get("first_reviewer")
            if isinstance(first, str):
                self.first_reviewer[item_id] = first
            else:
                self.first_reviewer.pop(item_id, None)

    def check(self, db: Session, rows: int) -> Mismatch | None:
        """The first table row that contradicts the log, or ``None`` when all agree."""
        if self.broken is not None:
            return self.broken
        if rows == 0:
            wiped = self._wiped(db)
            if wiped is not None:
                return wiped
        names = {int(i): str(n) for i, n in db.execute(select(User.id, User.name))}
        return (self._users(db) or self._job_items(db) or self._job_settings(db) or self._change_rows(db)
                or self._decisions(db, names) or self._items(db, names))

    def _change_rows(self, db: Session) -> Mismatch | None:
        bad = check_change_rows(db)
        return Mismatch(None, bad) if bad is not None else None

    def _wiped(self, db: Session) -> Mismatch | None:
        counts = {
            "users": db.execute(select(func.count()).select_from(User)).scalar_one(),
            "jobs": db.execute(select(func.count()).select_from(Job)).scalar_one(),
            "items": db.execute(select(func.count()).select_from(Item)).scalar_one(),
            "decisions": db.execute(select(func.count()).select_from(Decision)).scalar_one(),
        }
        if not any(counts.values()):
            return None
        held = ", ".join(f"{n} {what}" for what, n in counts.items())
        return Mismatch(None, f"the audit log is empty but the database holds {held}: the log was wiped")

    def _users(self, db: Session) -> Mismatch | None:
        present = set()
        for name, role, active in db.execute(select(User.name, User.role, User.active).order_by(User.id)):
            present.add(name)
            exp = self.users.get(name)
            if exp is None:
                return Mismatch(None, f"user {name!r} has no audit row: added behind the service's back")
            seq, exp_role, exp_active = exp
            if role != exp_role:
                return Mismatch(seq, f"user {name!r} has role {role!r} but audit row {seq} says {exp_role!r}")
            if bool(active) != exp_active:
                return Mismatch(seq, f"user {name!r} has active={bool(active)} but audit row {seq} says {exp_active}")
        for name, (seq, _, _) in self.users.items():
            if name not in present:
                return Mismatch(seq, f"user {name!r} of audit row {seq} is missing from the users table")
        return None

    def _job_items(self, db: Session) -> Mismatch | None:
        counts = {int(j): int(c) for j, c in db.execute(select(Item.job_id, func.count()).group_by(Item.job_id))}
        for job_id, (seq, items) in sorted(self.jobs.items()):
            have = counts.get(job_id, 0)
            if have != items:
                return Mismatch(
                    seq, f"job {job_id} has {have} items but audit row {seq} recorded {items}: items added or deleted"
                )
        for job_id, have in sorted(counts.items()):
            if job_id not in self.jobs:
                return Mismatch(None, f"job {job_id} has {have} items but no audit row records their import")
        return None

    def _job_settings(self, db: Session) -> Mismatch | None:
        settings = {int(j): {"include_cloudy": bool(c), "not_assessed": n}
                    for j, c, n in db.execute(select(Job.id, Job.include_cloudy, Job.not_assessed))}
        for (job_id, name), (seq, recorded) in sorted(self.job_settings.items()):
            have = settings.get(job_id, {}).get(name)
            if job_id in settings and have != recorded:
                return Mismatch(seq, f"job {job_id} has {name}={have!r} but audit row {seq} recorded {recorded!r}")
        return None

    def _decisions(self, db: Session, names: dict[int, str]) -> Mismatch | None:
        seen: set[tuple[int, int]] = set()
        for batch in batches(db, Decision, Decision.id):
            for d in batch:
                key = (d.item_id, d.item_version)
                r = self.reviews.get(key)
                if r is None:
                    return Mismatch(
                        None,
                        f"decision {d.id} (item {d.item_id}, version {d.item_version}) has no audit row: "
                        "added behind the service's back",
                    )
                seen.add(key)
                bad = decision_mismatch(d, r, names)
                if bad is not None:
                    return Mismatch(r.seq, bad)
        for key, r in self.reviews.items():
            if key not in seen:
                return Mismatch(
                    r.seq,
                    f"audit row {r.seq} records a {r.kind} decision on item {r.item_id} (version {r.version}) "
                    "that the decisions table lacks: deleted",
                )
        return None

    def _items(self, db: Session, names: dict[int, str]) -> Mismatch | None:
        seen: set[int] = set()
        for batch in batches(db, Item, Item.id):
            changes = changes_of(db, [item.id for item in batch])
            for item in batch:
                seen.add(item.id)
                bad = self.check_item(item, names, changes.get(item.id))
                if bad is not None:
                    return bad
        for item_id, r in self.last.items():
            if item_id not in seen:
                return Mismatch(r.seq, f"audit row {r.seq} records a decision on item {item_id}, which is missing")
        return None

    def check_item(self, item: Any, names: dict[int, str], change: ChangeItem | Any | None = None) -> Mismatch | None:
        """Whether one item (an `Item` or an object with its attributes, and its change row
        for a change item) holds what its last review row says."""
        r = self.last.get(item.id)
        first = names.get(item.first_reviewer_id) if item.first_reviewer_id is not None else None
        if r is None:
            state = (item.status, item.final_decision, item.final_class, item.version, item.decided_by, first)
            if state != (PENDING, None, None, 0, None, None):
                return Mismatch(
                    None,
                    f"item {item.id} is {item.status!r} (decision {item.final_decision!r}, class "
                    f"{item.final_class!r}, version {item.version}) but no audit row records a decision on it",
                )
            return None
        # After an undo the deciding reviewer is the one whose decision stands again (if any).
        deciding = r.after.get("decided_by") if r.kind == UNDO_KIND else r.actor
        expected: list[tuple[str, Any, Any]] = [
            ("status", item.status, r.after.get("status")),
            ("decision", item.final_decision, r.after.get("decision")),
            ("class", item.final_class, r.after.get("class")),
            ("version", item.version, r.after.get("version")),
            ("reviewer", names.get(item.decided_by) if item.decided_by is not None else None, deciding),
            ("first reviewer", first, self.first_reviewer.get(item.id)),
        ]
        if "predicted" in r.after:
            expected.append(("predicted class", item.class_name, r.after["predicted"]))
        if "decided_at" in r.after or r.kind == UNDO_KIND:
            expected.append(("decision time", _iso(item.decided_at), r.after.get("decided_at")))
        if "item" in r.after:
            expected.append(("imported content (path, window, prediction)", item_fingerprint(item), r.after["item"]))
        if "change" in r.after:
            have = change_fingerprint(change) if change is not None else None
            expected.append(("imported change (before window, classes, inputs, models)", have, r.after["change"]))
        for label, actual, want in expected:
            if actual == want:
                continue
            if label.startswith("imported"):
                return Mismatch(r.seq, f"item {item.id}: its {label} changed since the decision of audit row {r.seq}")
            return Mismatch(r.seq, f"item {item.id}: {label} is {actual!r} but audit row {r.seq} says {want!r}")
        return None
