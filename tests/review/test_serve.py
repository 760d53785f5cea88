"""`vision review serve` as a real process: URL, signals and its worker, TLS, what it leaves behind.

Every test starts ``python -m vision.cli review serve --port 0`` as a subprocess (its output
goes to a log file, which the tests read), talks to it over 127.0.0.1 and stops it with a
signal. Waits are generous; nothing asserts how long anything took.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import re
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx
import pytest
from cli_runner import run_cli
from conftest import wait_for
from review_helpers import PASSWORD, SECRET, write_scene
from sqlalchemy import select

from review.db.engine import Database
from review.db.models import AuditEntry

REPO = Path(__file__).resolve().parents[2]
SESSION_COOKIE = "vision_review_session"
_URL = re.compile(r"vision review: serving (https?://127\.0\.0\.1:\d+/)")
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
_META = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


def _env(db: Database, tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return dict(
        os.environ,
        PYTHONPATH=str(REPO),
        VISION_REVIEW_SECRET=SECRET,
        VISION_REVIEW_DB=db.url,
        VISION_REVIEW_DATA=str(tmp_path / "data"),
        TMPDIR=str(tmp_path / "tmp"),
        **extra,
    )


@contextmanager
def serving(env: dict[str, str], log: Path, *args: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A running ``vision review serve`` and the URL it printed; killed (with its children) at the end."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vision.cli", "review", "serve", "--port", "0", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    found: list[str] = []

    def printed() -> bool:
        m = _URL.search(log.read_text(errors="replace"))
        if m:
            found.append(m.group(1))
        return bool(m) or proc.poll() is not None

    try:
        assert wait_for(printed, timeout=180) and found, log.read_text(errors="replace")
        yield proc, found[0].rstrip("/")
    finally:
        children = _children(proc.pid)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in children:  # only what this test started
            _kill(pid)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _kill(pid: int) -> None:
    if _alive(pid):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _umask(pid: int) -> str:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return line.split()[1]
    raise AssertionError("no Umask in /proc status")


def _worker_of(proc: subprocess.Popen[bytes]) -> int:
    found: list[int] = []

    def has_worker() -> bool:
        for pid in _children(proc.pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"review" in cmd and b"worker" in cmd:
                found.append(pid)
                return True
        return False

    assert wait_for(has_worker, timeout=60), "serve started no worker"
    return found[0]


def _login(client: httpx.Client, name: str, password: str = PASSWORD) -> str:
    token = _TOKEN.search(client.get("/login").text)
    assert token
    r = client.post("/login", data={"username": name, "password": password, "csrf_token": token.group(1)})
    assert r.status_code == 303, r.text
    meta = _META.search(client.get("/").text)
    assert meta
    return meta.group(1)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_serve_stops_its_worker(db: Database, tmp_path: Path, users: Any, sig: int) -> None:
    log = tmp_path / "serve.log"
    with serving(_env(db, tmp_path), log) as (proc, url):
        assert httpx.get(f"{url}/health").status_code == 200
        worker = _worker_of(proc)
        assert _alive(worker)
        proc.send_signal(sig)
        assert proc.wait(timeout=120) == 0, log.read_text()
        assert wait_for(lambda: not _alive(worker), timeout=60), "the worker outlived serve (an orphan taking jobs)"
    assert re.search(r"vision review: serving http://127\.0\.0\.1:\d+/", log.read_text())


def test_the_worker_stops_when_serve_is_killed_outright(db: Database, tmp_path: Path, users: Any) -> None:
    with serving(_env(db, tmp_path), tmp_path / "serve.log") as (proc, _url):
        worker = _worker_of(proc)
        proc.kill()
        proc.wait()
        assert wait_for(lambda: not _alive(worker), timeout=60), "the worker outlived a killed serve"


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    os.chmod(key_file, 0o600)
    return cert_file, key_file


def test_serve_answers_https_with_secure_cookies_and_hsts(db: Database, tmp_path: Path, users: Any) -> None:
    cert, key = _self_signed(tmp_path)
    args = ("--no-worker", "--tls-cert", str(cert), "--tls-key", str(key))
    with serving(_env(db, tmp_path), tmp_path / "serve.log", *args) as (_proc, url):
        assert url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=url, verify=trust) as c:
            r = c.get("/login")
            assert r.status_code == 200
            assert r.headers["strict-transport-security"].startswith("max-age=")
            assert all("; secure" in v.lower() for v in r.headers.get_list("set-cookie")), r.headers
            token = _TOKEN.search(r.text)
            assert token
            r = c.post("/login", data={"username": "rev", "password": PASSWORD, "csrf_token": token.group(1)})
            assert r.status_code == 303
            session = [v for v in r.headers.get_list("set-cookie") if v.startswith(f"{SESSION_COOKIE}=")]
            assert session and "; secure" in session[0].lower() and "httponly" in session[0].lower()
            assert c.get("/").status_code == 200
        with pytest.raises(httpx.HTTPError):  # no plain HTTP on the TLS port
            httpx.get(url.replace("https://", "http://") + "/health")


def test_tls_options_go_together(db: Database, tmp_path: Path) -> None:
    code, out = run_cli("review", "serve", "--db", db.url, "--no-worker", "--tls-cert", str(tmp_path / "c.pem"))
    assert code == 2 and "--tls-cert and --tls-key go together" in out, out


def _tree_modes(root: Path) -> dict[str, int]:
    modes = {str(root): root.stat().st_mode & 0o777}
    for p in root.rglob("*"):
        modes[str(p)] = p.stat().st_mode & 0o777
    return modes


def test_a_full_session_leaves_no_secrets_in_logs_nothing_in_tmp_and_owner_only_files(
    db: Database, tmp_path: Path, users: Any, job_id: int, roots: Path
) -> None:
    from review.auth.keys import AUDIT_PURPOSE, derive_key
    from review.auth.sessions import CookieSigner

    batch = roots / "batch"
    batch.mkdir()
    write_scene(batch / "scene.tif", 64)
    (roots / "broken.onnx").write_bytes(b"not a model")
    env = _env(db, tmp_path, VISION_REVIEW_ROOTS=str(roots))
    log = tmp_path / "serve.log"
    secrets_seen: list[str] = [SECRET, PASSWORD, derive_key(SECRET, AUDIT_PURPOSE).hex()]
    with serving(env, log) as (proc, url):
        worker = _worker_of(proc)
        assert _umask(proc.pid) == "0077" and _umask(worker) == "0077"
        with httpx.Client(base_url=url) as rev, httpx.Client(base_url=url) as ana:
            csrf = _login(rev, "rev")
            item = rev.post(f"/api/jobs/{job_id}/claim", headers={"X-CSRF-Token": csrf}).json()["item"]
            decided = []
            for decision in ("accept", "correct", "reject", "accept"):
                decided.append(item["id"])
                body = {"decision": decision, "version": item["version"], "class_name": "Forest"}
                r = rev.post(f"/api/items/{item['id']}/decision", json=body, headers={"X-CSRF-Token": csrf})
                assert r.status_code == 200, r.text
                item = r.json()["next"]
            acsrf = _login(ana, "ana")
            for fmt in ("geojson", "dataset"):
                r = ana.post(f"/jobs/{job_id}/export/{fmt}", headers={"X-CSRF-Token": acsrf})
                assert r.status_code == 200 and len(r.content) > 100, r.text
            r = ana.post(
                "/jobs", data={"csrf_token": acsrf, "root": "0", "path": "batch", "model": "broken.onnx"}
            )
            assert r.status_code == 303, r.text
            job = int(r.headers["location"].rsplit("/", 1)[1])

            def finished() -> bool:
                return ana.get(f"/api/jobs/{job}/status").json()["status"] in ("failed", "ready")

            assert wait_for(finished, timeout=180), "the worker did not run the submitted job"
            with httpx.Client(base_url=url) as adm:
                dcsrf = _login(adm, "adm")
                r = adm.post(
                    f"/items/{decided[0]}/override",
                    data={"csrf_token": dcsrf, "decision": "reject", "version": 1, "comment": "no"},
                )
                assert r.status_code in (200, 303), r.text
            for c, token in ((rev, csrf), (ana, acsrf)):
                cookie = c.cookies.get(SESSION_COOKIE)
                assert cookie
                raw = CookieSigner(SECRET, 3600).unsign(cookie)
                assert raw
                secrets_seen += [cookie, raw, token]
                assert c.post("/logout", headers={"X-CSRF-Token": token}).status_code == 303
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0

    code, out = run_cli("review", "audit", "verify", "--db", db.url)  # logins, decisions, override, exports
    assert code == 0, out
    text = log.read_text(errors="replace")
    for s in secrets_seen:
        assert s not in text, f"a secret, password or session token reached the log: {s[:6]}..."
    assert list((tmp_path / "tmp").iterdir()) == [], "files were left in the temp folder"
    data = tmp_path / "data"
    modes = _tree_modes(data)
    assert (data / "jobs").is_dir() and (data / "exports").is_dir(), modes
    loose = {p: oct(m) for p, m in modes.items() if m & 0o077}
    assert loose == {}, f"readable by others: {loose}"
    if db.is_sqlite:
        db_file = Path(db.engine.url.database or "")
        assert db_file.stat().st_mode & 0o777 == 0o600
        assert db_file.parent.stat().st_mode & 0o777 == 0o700


def test_the_sqlite_database_and_data_folder_are_created_owner_only(tmp_path: Path) -> None:
    from review.service import open_database

    target = tmp_path / "fresh" / "data" / "review.db"
    database = open_database(f"sqlite:///{target}")
    try:
        with database.write() as s:  # WAL and shared-memory files appear with the first write
            from review import audit

            audit.append(s, "t", "test", "n:1", None, None, "r")
        for f in [target, *target.parent.glob("review.db-*")]:
            assert f.stat().st_mode & 0o777 == 0o600, f
        assert target.parent.stat().st_mode & 0o777 == 0o700
    finally:
        database.dispose()


def test_anchor_and_verify_hold_across_a_service_restart(
    db: Database, tmp_path: Path, users: Any, job_id: int
) -> None:
    env = _env(db, tmp_path)
    anchors = tmp_path / "offsite" / "anchors.jsonl"
    anchors.parent.mkdir()
    counts = []
    for round_ in range(2):
        with serving(env, tmp_path / f"serve-{round_}.log", "--no-worker") as (proc, url):
            with httpx.Client(base_url=url) as rev:
                csrf = _login(rev, "rev")
                item = rev.post(f"/api/jobs/{job_id}/claim", headers={"X-CSRF-Token": csrf}).json()["item"]
                body = {"decision": "accept", "version": item["version"]}
                r = rev.post(f"/api/items/{item['id']}/decision", json=body, headers={"X-CSRF-Token": csrf})
                assert r.status_code == 200, r.text  # a Response is always truthy: check the code
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=120) == 0
        code, out = run_cli("review", "audit", "anchor", "--to", str(anchors), "--db", db.url)
        assert code == 0, out
        code, out = run_cli("review", "audit", "verify", "--anchor", str(anchors), "--db", db.url)
        assert code == 0, out
        with db.read() as s:
            counts.append(len(s.execute(select(AuditEntry.seq)).all()))
    lines = [json.loads(x) for x in anchors.read_text().splitlines()]
    assert [a["seq"] for a in lines] == counts and counts[0] < counts[1], (lines, counts)


def test_a_refused_start_leaves_the_process_umask_alone(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VISION_REVIEW_SECRET")
    before = os.umask(0o022)
    try:
        code, out = run_cli("review", "serve", "--db", db.url, "--no-worker")
        assert code == 2, out
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(before)
