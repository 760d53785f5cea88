"""The keyed audit log: a real session's log verifies; tampering without the key is named.

Each attack is done the way someone who can write the database but does not hold the
service's key would: raw SQL behind the application's back.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_runner import run_cli
from review_helpers import PASSWORD, SECRET
from sqlalchemy import select, text

from review import audit
from review.audit import AuditTamperError, entry_mac, head_mac, legacy_entry_hash
from review.auth.keys import AUDIT_PURPOSE, COOKIE_PURPOSE, derive_key
from review.db.engine import Database
from review.db.models import AuditEntry, Decision, Item
from vision.errors import VisionError

KEY = derive_key(SECRET, AUDIT_PURPOSE)


def _session(client_for: Any, job_id: int) -> None:
    """A reviewer signs in, decides three items, signs out; an admin overrides one; exports."""
    rev, csrf = client_for("rev")
    item = rev.post(f"/api/jobs/{job_id}/claim", headers={"X-CSRF-Token": csrf}).json()["item"]
    for decision in ("accept", "reject", "correct"):
        body = {"decision": decision, "version": item["version"], "class_name": "Forest", "comment": "seen"}
        r = rev.post(f"/api/items/{item['id']}/decision", json=body, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200, r.text
        last, item = item, r.json()["next"]
    assert rev.post("/logout", headers={"X-CSRF-Token": csrf}, follow_redirects=False).status_code == 303
    adm, acsrf = client_for("adm")
    r = adm.post(
        f"/items/{last['id']}/override",
        data={"csrf_token": acsrf, "decision": "accept", "version": 1, "comment": "looked again"},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    ana, ncsrf = client_for("ana")
    r = ana.post(f"/jobs/{job_id}/export/geojson", headers={"X-CSRF-Token": ncsrf})
    assert r.status_code == 200, r.text


def _verify_cli(db: Database, *extra: str) -> tuple[int, str]:
    return run_cli("review", "audit", "verify", "--db", db.url, *extra)


def _rows(db: Database) -> list[dict[str, Any]]:
    with db.engine.connect() as c:
        return [dict(r._mapping) for r in c.execute(text("SELECT * FROM audit_log ORDER BY seq"))]


def _rechain(db: Database, rows: list[dict[str, Any]], start: int, digest: Callable[[dict[str, Any]], str]) -> None:
    """Recompute every hash from row ``start`` on with ``digest`` and rewrite the head."""
    prev = rows[start - 2]["hash"] if start > 1 else audit.GENESIS
    with db.engine.begin() as c:
        for r in rows[start - 1 :]:
            r["prev_hash"] = prev
            r["hash"] = prev = digest(r)
            c.execute(
                text(
                    "UPDATE audit_log SET after=:after, prev_hash=:prev_hash, hash=:hash, version=:version "
                    "WHERE seq=:seq"
                ),
                r,
            )
        c.execute(text("UPDATE audit_head SET seq=:s, hash=:h"), {"s": rows[-1]["seq"], "h": prev})


def _fields(r: dict[str, Any]) -> tuple[Any, ...]:
    names = ("prev_hash", "seq", "at", "actor", "action", "target", "before", "after", "request_id")
    return tuple(r[n] for n in names)


def test_verify_passes_on_a_real_session_and_names_an_edited_row(client_for: Any, job_id: int, db: Database) -> None:
    _session(client_for, job_id)
    with db.read() as s:
        actions = [a for (a,) in s.execute(select(AuditEntry.action).order_by(AuditEntry.seq))]
        versions = set(s.execute(select(AuditEntry.version)).scalars())
    for expected in ("user.add", "job.import", "login", "review.first", "logout", "review.override", "export"):
        assert expected in actions
    assert versions == {audit.CHAIN_VERSION}
    code, out = _verify_cli(db)
    assert code == 0 and f"intact: {len(actions)} rows" in out, out
    target = actions.index("review.first") + 1
    with db.engine.begin() as c:  # tamper behind the application's back
        c.execute(text("UPDATE audit_log SET after = :a WHERE seq = :s"), {"a": '{"class":"Forest"}', "s": target})
    code, out = _verify_cli(db)
    assert code == 1
    assert f"row {target}" in out and "edited" in out, out


@pytest.mark.parametrize("where", ["middle", "last"])
def test_verify_names_a_deleted_row(client_for: Any, job_id: int, db: Database, where: str) -> None:
    _session(client_for, job_id)
    with db.read() as s:
        n = s.execute(select(AuditEntry.seq).order_by(AuditEntry.seq.desc())).scalars().first()
    assert n is not None
    seq = 3 if where == "middle" else n
    with db.engine.begin() as c:
        c.execute(text("DELETE FROM audit_log WHERE seq = :s"), {"s": seq})
    with db.read() as s:
        result = audit.verify(s)
    assert not result.ok and result.bad_seq == seq, result


def test_tail_deleted_and_head_rewritten_is_detected(client_for: Any, job_id: int, db: Database) -> None:
    _session(client_for, job_id)
    rows = _rows(db)
    keep = len(rows) - 4
    with db.engine.begin() as c:
        c.execute(text("DELETE FROM audit_log WHERE seq > :k"), {"k": keep})
        c.execute(text("UPDATE audit_head SET seq = :k, hash = :h"), {"k": keep, "h": rows[keep - 1]["hash"]})
    code, out = _verify_cli(db)
    assert code == 1 and f"head (row {keep}) is not signed" in out, out
    with db.engine.begin() as c:  # a head MAC copied from a row does not help either
        c.execute(text("UPDATE audit_head SET mac = :h"), {"h": rows[keep - 1]["hash"]})
    code, out = _verify_cli(db)
    assert code == 1 and "not signed" in out, out


def test_both_tables_wiped_is_detected(client_for: Any, job_id: int, db: Database) -> None:
    _session(client_for, job_id)
    with db.engine.begin() as c:
        c.execute(text("DELETE FROM audit_log"))
        c.execute(text("DELETE FROM audit_head"))
    code, out = _verify_cli(db)
    assert code == 1 and "the audit log is empty but the database holds 4 users" in out and "wiped" in out, out


@pytest.mark.parametrize("how", ["sha256", "wrong key", "unkeyed format", "all unkeyed"])
def test_edited_row_with_every_later_hash_recomputed_without_the_key_is_named(
    client_for: Any, job_id: int, db: Database, how: str
) -> None:
    _session(client_for, job_id)
    rows = _rows(db)
    target = next(r["seq"] for r in rows if r["action"] == "review.first")
    after = json.loads(rows[target - 1]["after"])
    rows[target - 1]["after"] = json.dumps(after | {"class": "River"}, sort_keys=True, separators=(",", ":"))
    start = 1 if how == "all unkeyed" else target

    def digest(r: dict[str, Any]) -> str:
        if how in ("unkeyed format", "all unkeyed"):
            r["version"] = audit.LEGACY_VERSION
            return legacy_entry_hash(*_fields(r))
        if how == "wrong key":
            return entry_mac(hashlib.sha256(SECRET.encode()).digest(), *_fields(r))
        body = audit.canonical([2, *_fields(r)[1:]])
        return hashlib.sha256(f"{r['prev_hash']}\n{body}".encode()).hexdigest()

    _rechain(db, rows, start, digest)
    if how == "all unkeyed":
        with db.engine.begin() as c:
            c.execute(text("UPDATE audit_head SET mac = NULL"))
    code, out = _verify_cli(db)
    assert code == 1, out
    if how == "all unkeyed":
        assert "only unkeyed rows" in out, out
    else:
        assert f"row {target}" in out, out


def test_a_decision_row_edited_is_named(client_for: Any, job_id: int, db: Database) -> None:
    _session(client_for, job_id)
    with db.read() as s:
        dec = s.execute(select(Decision).where(Decision.decision == "reject")).scalars().first()
    assert dec is not None
    with db.engine.begin() as c:
        c.execute(text("UPDATE decisions SET decision = 'accept' WHERE id = :i"), {"i": dec.id})
    code, out = _verify_cli(db)
    assert code == 1 and f"decision {dec.id} (item {dec.item_id}): decision is 'accept'" in out, out
    assert "says 'reject'" in out, out


def test_a_deleted_decision_row_is_named(client_for: Any, job_id: int, db: Database) -> None:
    _session(client_for, job_id)
    with db.read() as s:
        dec = s.execute(select(Decision).where(Decision.kind == "override")).scalar_one()
    with db.engine.begin() as c:
        c.execute(text("DELETE FROM decisions WHERE id = :i"), {"i": dec.id})
    code, out = _verify_cli(db)
    assert code == 1 and f"override decision on item {dec.item_id}" in out and "lacks" in out, out


@pytest.mark.parametrize("edit", ["final_class", "undecided_done", "path", "decided_by"])
def test_an_item_state_edited_is_named(client_for: Any, job_id: int, db: Database, edit: str) -> None:
    _session(client_for, job_id)
    with db.read() as s:
        decided = s.execute(select(Item).where(Item.final_decision == "reject")).scalars().first()
        untouched = s.execute(select(Item).where(Item.version == 0)).scalars().first()
        rev2 = s.execute(text("SELECT id FROM users WHERE name = 'rev2'")).scalar_one()
    assert decided is not None and untouched is not None
    statements = {
        "final_class": ("UPDATE items SET final_class = 'River' WHERE id = :i", decided.id, "class is 'River'"),
        "undecided_done": (
            "UPDATE items SET status = 'done', final_decision = 'accept', final_class = class_name WHERE id = :i",
            untouched.id,
            "no audit row records a decision",
        ),
        "path": ("UPDATE items SET path = '/elsewhere/scene.tif' WHERE id = :i", decided.id, "imported content"),
        "decided_by": (f"UPDATE items SET decided_by = {rev2} WHERE id = :i", decided.id, "reviewer is 'rev2'"),
    }
    sql, item_id, expected = statements[edit]
    with db.engine.begin() as c:
        c.execute(text(sql), {"i": item_id})
    code, out = _verify_cli(db)
    assert code == 1 and f"item {item_id}" in out and expected in out, out


def test_a_user_promoted_behind_the_services_back_is_named(client_for: Any, job_id: int, db: Database) -> None:
    _session(client_for, job_id)
    with db.engine.begin() as c:
        c.execute(text("UPDATE users SET role = 'admin' WHERE name = 'ana'"))
    code, out = _verify_cli(db)
    assert code == 1 and "user 'ana' has role 'admin'" in out, out


def test_anchor_and_verify_anchor(client_for: Any, job_id: int, db: Database, tmp_path: Path) -> None:
    _session(client_for, job_id)
    code, out = run_cli("review", "audit", "anchor", "--db", db.url)
    assert code == 0, out
    printed = json.loads(out.strip().splitlines()[-1])
    n = len(_rows(db))
    assert printed["seq"] == n and printed["hash"] == _rows(db)[-1]["hash"] and printed["at"].endswith("Z")
    anchors = tmp_path / "anchors.jsonl"
    anchors.write_text("")
    os.chmod(anchors, 0o600)
    for _ in range(2):
        code, out = run_cli("review", "audit", "anchor", "--to", str(anchors), "--db", db.url)
        assert code == 0 and f"anchored row {n}" in out, out
    assert len(anchors.read_text().splitlines()) == 2, "appended, never rewritten"
    _session(client_for, job_id)  # the log grows: older anchors still hold
    code, out = _verify_cli(db, "--anchor", str(anchors))
    assert code == 0 and "1 anchor file(s) matched" in out, out

    # Someone holding the key AND the database rewrites an anchored row and the chain after it:
    # only the anchor notices.
    rows = _rows(db)
    login = next(r["seq"] for r in rows if r["action"] == "login")
    rows[login - 1]["after"] = json.dumps({"role": "admin"})
    _rechain(db, rows, login, lambda r: entry_mac(KEY, *_fields(r)))
    with db.engine.begin() as c:
        c.execute(text("UPDATE audit_head SET mac = :m"), {"m": head_mac(KEY, rows[-1]["seq"], rows[-1]["hash"])})
    with db.read() as s:  # tables untouched; the chain is valid for the key
        assert audit.verify(s).ok
    code, out = _verify_cli(db, "--anchor", str(anchors))
    assert code == 1 and f"row {n} differs from the head anchored" in out, out


def test_verify_anchor_detects_a_rollback(client_for: Any, job_id: int, db: Database, tmp_path: Path) -> None:
    _session(client_for, job_id)
    before = _rows(db)
    anchors = tmp_path / "anchors.jsonl"
    _session(client_for, job_id)
    assert run_cli("review", "audit", "anchor", "--to", str(anchors), "--db", db.url)[0] == 0
    n = len(_rows(db))
    # Put the log back to an older state, head MAC included (an old copy of the database).
    with db.engine.begin() as c:
        c.execute(text("DELETE FROM audit_log WHERE seq > :k"), {"k": len(before)})
        last = before[-1]
        c.execute(
            text("UPDATE audit_head SET seq = :s, hash = :h, mac = :m"),
            {"s": last["seq"], "h": last["hash"], "m": head_mac(KEY, last["seq"], last["hash"])},
        )
    with db.read() as s:
        assert audit.verify(s, check_tables=False).ok, "a consistent older log: only an anchor can tell"
    code, out = _verify_cli(db, "--anchor", str(anchors))
    assert code == 1 and f"ends at row {len(before)} but the head anchored" in out and f"had {n} rows" in out, out


def test_a_broken_anchor_file_is_refused_naming_the_line(db: Database, users: Any, tmp_path: Path) -> None:
    bad = tmp_path / "anchors.jsonl"
    bad.write_text('{"seq": 1, "hash": "' + "a" * 64 + '", "at": "x"}\nnot json\n')
    code, out = _verify_cli(db, "--anchor", str(bad))
    assert code == 2 and f"{bad}:2" in out, out


def test_the_audit_key_is_derived_and_never_stored(client_for: Any, job_id: int, db: Database) -> None:
    _session(client_for, job_id)
    assert KEY not in (SECRET.encode(), derive_key(SECRET, COOKIE_PURPOSE))
    with db.read() as s:
        rows = s.execute(select(AuditEntry).order_by(AuditEntry.seq)).scalars().all()
    prev = audit.GENESIS
    for r in rows:  # every row is HMAC'd with the derived key
        body = audit.canonical([2, r.seq, r.at, r.actor, r.action, r.target, r.before, r.after, r.request_id])
        assert r.hash == hmac.new(KEY, f"{prev}\n{body}".encode(), hashlib.sha256).hexdigest()
        prev = r.hash
    if db.is_sqlite:
        raw = Path(db.engine.url.database or "").read_bytes()
        for wal in Path(db.engine.url.database or "").parent.glob("*-wal"):
            raw += wal.read_bytes()
        assert SECRET.encode() not in raw and KEY not in raw and KEY.hex().encode() not in raw


def test_writing_and_verifying_need_the_key(db: Database, users: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VISION_REVIEW_SECRET")
    code, out = run_cli(
        "users", "add", "newbie", "--role", "analyst", "--password-stdin", "--db", db.url, input=PASSWORD + "\n"
    )
    assert code == 2 and "VISION_REVIEW_SECRET" in out, out
    code, out = _verify_cli(db)
    assert code == 2 and "VISION_REVIEW_SECRET" in out, out
    monkeypatch.setenv("VISION_REVIEW_SECRET", "another-" + SECRET)
    code, out = _verify_cli(db)
    assert code == 1 and "row 1" in out and "VISION_REVIEW_SECRET" in out, out


def test_a_dedicated_audit_key_file(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from review.auth.keys import audit_key_from_env
    from review.service import open_database

    key_file = tmp_path / "audit.key"
    key_file.write_text("k" * 10 + "0123456789abcdefghijklmnopqrstuvwxyz")
    monkeypatch.setenv("VISION_REVIEW_AUDIT_KEY_FILE", str(key_file))
    os.chmod(key_file, 0o644)
    with pytest.raises(VisionError, match="chmod 600"):
        audit_key_from_env()
    os.chmod(key_file, 0o600)
    key = audit_key_from_env()
    assert key is not None and key != KEY
    database = open_database(db_url)
    try:
        with database.write() as s:
            audit.append(s, "t", "test", "n:1", None, {"i": 1}, "r")
        with database.read() as s:
            assert audit.verify(s).ok
            assert not audit.verify(s, key=KEY).ok, "the secret's key is not the file's"
    finally:
        database.dispose()


def test_the_application_cannot_change_or_delete_audit_rows(db: Database, users: dict[str, str]) -> None:
    assert issubclass(AuditTamperError, VisionError) and issubclass(AuditTamperError, RuntimeError)
    with pytest.raises(AuditTamperError), db.write() as s:
        row = s.execute(select(AuditEntry).limit(1)).scalar_one()
        row.actor = "someone else"
    with pytest.raises(AuditTamperError), db.write() as s:
        s.delete(s.execute(select(AuditEntry).limit(1)).scalar_one())
    from sqlalchemy import delete, update

    with pytest.raises(AuditTamperError), db.write() as s:
        s.execute(update(AuditEntry).values(actor="x"))
    with pytest.raises(AuditTamperError), db.write() as s:
        s.execute(delete(AuditEntry))
    with db.read() as s:
        assert audit.verify(s).ok


def test_concurrent_appends_keep_one_chain(db: Database) -> None:
    def worker(k: int) -> None:
        for i in range(15):
            with db.write() as s:
                audit.append(s, f"t{k}", "test", f"n:{i}", None, {"i": i}, "r")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with db.read() as s:
        result = audit.verify(s)
    assert result.ok and result.rows == 90, result


def _legacy_log(db_url: str) -> None:
    """A database as the service left it before the keyed chain: schema 0001, SHA-256 rows."""
    from review.auth.passwords import hash_password
    from review.db.models import utcnow
    from review.db.schema import upgrade

    database = Database(db_url)
    upgrade(database.engine, "0001")
    entries = [
        ("cli:root", "user.add", "user:old", "null", '{"active":true,"name":"old","role":"reviewer"}'),
        ("old", "login", "user:old", "null", '{"role":"reviewer"}'),
        ("old", "logout", "user:old", "null", "null"),
    ]
    prev = audit.GENESIS
    with database.engine.begin() as c:
        c.execute(
            text(
                "INSERT INTO users (id, name, role, password_hash, active, failed_logins, created_at) "
                "VALUES (1, 'old', 'reviewer', :h, :t, 0, :now)"
            ),
            {"h": hash_password(PASSWORD), "t": True, "now": utcnow()},
        )
        for seq, (actor, action, target, before, after) in enumerate(entries, start=1):
            at = f"2026-01-0{seq}T10:00:00.000000"
            h = legacy_entry_hash(prev, seq, at, actor, action, target, before, after, "cli")
            c.execute(
                text("INSERT INTO audit_log VALUES (:seq, :at, :actor, :action, :target, :b, :a, 'cli', :prev, :h)"),
                {"seq": seq, "at": at, "actor": actor, "action": action, "target": target, "b": before, "a": after}
                | {"prev": prev, "h": h},
            )
            prev = h
        c.execute(text("INSERT INTO audit_head (id, seq, hash) VALUES (1, :s, :h)"), {"s": len(entries), "h": prev})
    database.dispose()


def test_a_log_from_before_the_keyed_chain_still_verifies_and_is_sealed(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alembic.migration import MigrationContext

    from review.service import open_database

    _legacy_log(db_url)
    monkeypatch.delenv("VISION_REVIEW_SECRET")
    with pytest.raises(VisionError, match="predates the keyed chain"):
        open_database(db_url)
    probe = Database(db_url)
    with probe.engine.connect() as c:
        assert MigrationContext.configure(c).get_current_revision() == "0001", "nothing changed without the key"
    probe.dispose()
    monkeypatch.setenv("VISION_REVIEW_SECRET", SECRET)
    database = open_database(db_url)
    try:
        rows = _rows(database)
        assert [r["version"] for r in rows] == [1, 1, 1, 2] and rows[3]["action"] == audit.SEAL_ACTION
        code, out = _verify_cli(database)
        assert code == 0 and "intact: 4 rows" in out, out
        code, out = run_cli(
            "users", "set", "old", "--role", "analyst", "--db", database.url
        )  # new rows chain on after the seal
        assert code == 0, out
        assert _verify_cli(database)[0] == 0

        # An unkeyed row edited and the unkeyed chain recomputed up to the seal: the seal breaks.
        rows = _rows(database)
        rows[1]["after"] = '{"role":"admin"}'
        legacy = rows[:3]
        _rechain(database, legacy, 2, lambda r: legacy_entry_hash(*_fields(r)))
        with database.engine.begin() as c:  # _rechain moved the head: put it back
            c.execute(text("UPDATE audit_head SET seq = :s, hash = :h"), {"s": rows[-1]["seq"], "h": rows[-1]["hash"]})
        code, out = _verify_cli(database)
        assert code == 1 and "row 4: previous-hash link broken" in out, out
    finally:
        database.dispose()
