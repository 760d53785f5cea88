"""Fixtures of the review tests.

Database: SQLite in a temporary folder by default. ``VISION_TEST_DB=postgresql://...`` runs
the same tests against that server (a fresh database per test); ``VISION_TEST_DB=auto``
starts a throw-away PostgreSQL from the system's packages (initdb/pg_ctl on 127.0.0.1 in a
temporary folder) for the session.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import argon2
import pytest
from fastapi.testclient import TestClient
from review_helpers import PASSWORD, SECRET, write_job
from sqlalchemy import create_engine, text

from review.auth import passwords
from review.auth.users import add_user
from review.db.engine import Database
from review.jobs.files import service_roots
from review.jobs.importer import import_job
from review.service import open_database
from review.settings import ReviewSettings, normalize_db_url
from review.web.app import create_app


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bindir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """The PostgreSQL server URL to test against, or ``None`` for SQLite."""
    wanted = os.environ.get("VISION_TEST_DB", "").strip()
    if not wanted or wanted == "sqlite":
        yield None
        return
    if wanted != "auto":
        yield normalize_db_url(wanted)
        return
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("VISION_TEST_DB=auto needs PostgreSQL (Debian package `postgresql`)")
    base = tmp_path_factory.mktemp("pg")
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the `postgres` user
        prefix = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")
        os.chmod(base.parent, 0o755)
        os.chmod(base.parent.parent, 0o755)
    port = free_port()
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True,
        capture_output=True,
    )
    opts = f"-h 127.0.0.1 -p {port} -k {sock} -F -c fsync=off -c max_connections=400 -c full_page_writes=off"
    subprocess.run(
        [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(base / "log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )


@pytest.fixture
def db_url(tmp_path: Path, pg_server: str | None) -> Iterator[str]:
    """A fresh, empty database for one test."""
    if pg_server is None:
        yield f"sqlite:///{tmp_path / 'review.db'}"
        return
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield pg_server.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(autouse=True)
def service_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's secret in the environment, as in production: the audit chain is keyed with it."""
    monkeypatch.setenv("VISION_REVIEW_SECRET", SECRET)
    monkeypatch.delenv("VISION_REVIEW_AUDIT_KEY_FILE", raising=False)


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2 with the library's cheapest parameters: the tests are not about its cost."""
    monkeypatch.setattr(passwords, "HASHER", argon2.PasswordHasher.from_parameters(argon2.profiles.CHEAPEST))


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    """The allow-listed root for submissions."""
    root = tmp_path / "incoming"
    root.mkdir()
    return root


@pytest.fixture(autouse=True)
def review_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, roots: Path) -> None:
    """The environment of the `vision review` commands the tests run: the same allowed root
    and data folder as `settings`."""
    monkeypatch.setenv("VISION_REVIEW_ROOTS", str(roots))
    monkeypatch.setenv("VISION_REVIEW_DATA", str(tmp_path / "data"))


@pytest.fixture
def settings(db_url: str, tmp_path: Path, roots: Path) -> ReviewSettings:
    """Service settings on the test database."""
    return ReviewSettings(
        secret_key=SECRET,
        db_url=db_url,
        data_dir=tmp_path / "data",
        job_roots=(roots.resolve(),),
    )


@pytest.fixture
def allowed(settings: ReviewSettings) -> tuple[Path, ...]:
    """Where the service may read a job's files (the roots and ``DATA/jobs``)."""
    return service_roots(settings.job_roots, settings.data_dir)


@pytest.fixture
def db(settings: ReviewSettings) -> Iterator[Database]:
    """The migrated test database."""
    database = open_database(settings.db_url, pool_size=10)
    yield database
    database.dispose()


@pytest.fixture
def users(db: Database) -> dict[str, str]:
    """One person per role (and a second reviewer); name → role."""
    people = {"ana": "analyst", "rev": "reviewer", "rev2": "reviewer", "adm": "admin"}
    with db.write() as s:
        for name, role in people.items():
            add_user(s, name, role, PASSWORD, actor="test")
    return people


@pytest.fixture
def job_id(db: Database, roots: Path, allowed: tuple[Path, ...], users: dict[str, str]) -> int:
    """An imported job with 49 scene windows and 3 chips (2 more rows not assessed), in a
    folder under the allowed root."""
    folder = write_job(roots / "jobs" / "job1")
    return import_job(db, folder, "test", allowed, classes_of_interest=["AnnualCrop"])


@pytest.fixture
def change_folder(roots: Path, data_dir: Path) -> Path:
    """A `vision change` folder (8 x 8 windows of real EuroSAT chips at two dates, simulated
    jobs, class of interest AnnualCrop) under the allowed root, with its jobs and scenes."""
    from change_helpers import write_change_folder

    return write_change_folder(roots / "area", data_dir)


@pytest.fixture
def change_job(db: Database, change_folder: Path, allowed: tuple[Path, ...], users: dict[str, str]) -> int:
    """The change folder imported (appeared, disappeared and changed windows queued)."""
    from review.jobs.change_import import import_change_folder

    return import_change_folder(db, change_folder, "test", allowed)


@pytest.fixture
def app_client(settings: ReviewSettings, db: Database) -> Iterator[TestClient]:
    """A test client of the app (not signed in)."""
    app = create_app(settings, db)
    with TestClient(app, base_url="http://testserver") as c:
        yield c


@pytest.fixture
def client_for(settings: ReviewSettings, db: Database) -> Iterator[object]:
    """Factory: a new client signed in as the given user; returns ``(client, csrf)``."""
    from review_helpers import login

    app = create_app(settings, db)
    made: list[TestClient] = []

    def make(name: str) -> tuple[TestClient, str]:
        c = TestClient(app, base_url="http://testserver")
        c.__enter__()
        made.append(c)
        return c, login(c, name)

    yield make
    for c in made:
        c.__exit__(None, None, None)


def wait_for(predicate: object, timeout: float = 600.0, every: float = 0.2) -> bool:
    """Poll ``predicate()`` until true or ``timeout`` (generous: a loaded 2-core machine is
    slow, and this is a safety net against a hang, not a speed check)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(every)
    return False


@pytest.fixture
def live_server(settings: ReviewSettings, db: Database) -> Iterator[str]:
    """The app served by uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    import threading

    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, db), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert wait_for(lambda: server.started or not thread.is_alive())
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
