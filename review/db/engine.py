"""Engines and sessions for SQLite (embedded default) and PostgreSQL.

SQLite runs in WAL mode with a busy timeout. Write transactions are opened with
``BEGIN IMMEDIATE`` (`write_session`), so two writers never both read and then fail to
upgrade their lock: they queue instead. PostgreSQL needs nothing special: rows are locked
where it matters (claims, the audit head).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

_IMMEDIATE = "review_immediate"


def make_engine(url: str, pool_size: int = 20) -> Engine:
    """Create an engine for ``url`` with this service's connection settings."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=60,
        )
        _sqlite_setup(engine)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_timeout=60, pool_pre_ping=True)


def _sqlite_setup(engine: Engine) -> None:
    # pysqlite's own transaction handling defers BEGIN and cannot do BEGIN IMMEDIATE:
    # take it over (the recipe in SQLAlchemy's SQLite dialect documentation).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get(_IMMEDIATE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


#: Key of the audit key in each session's ``info`` (read by `review.audit.session_key`).
AUDIT_KEY_INFO = "review_audit_key"


class Database:
    """An engine with a session factory for reads and one for writes.

    Args:
        url: SQLAlchemy URL.
        pool_size: connections kept open.
        audit_key: the audit chain's key, handed to every session (``info``) so that
            `review.audit.append` signs rows with it; ``None``: taken from the environment.
    """

    def __init__(self, url: str, pool_size: int = 20, audit_key: bytes | None = None):
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)
        self.is_sqlite = url.startswith("sqlite")
        self.audit_key = audit_key
        info = {AUDIT_KEY_INFO: audit_key} if audit_key is not None else {}
        writer = self.engine.execution_options(**{_IMMEDIATE: True})
        self._read = sessionmaker(self.engine, expire_on_commit=False, info=info)
        self._write = sessionmaker(writer, expire_on_commit=False, info=info)
        self._writer_lock: AbstractContextManager[object] = threading.Lock() if self.is_sqlite else nullcontext()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading (rolled back at the end)."""
        with self._read() as s:
            yield s

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A session that sees one consistent snapshot of the database, however long it reads.

        SQLite's read transactions are snapshots already (WAL); PostgreSQL's default (read
        committed) would let each statement see newer writes, so this asks for
        ``REPEATABLE READ``. For checks that compare several tables (the audit check).
        """
        with self._read() as s:
            if not self.is_sqlite:
                s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield s

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A write transaction: committed when the block succeeds, rolled back otherwise.

        On SQLite, writers of this process also queue on a lock first: SQLite's own busy
        handler polls with sleeps of up to 100 ms, which under many concurrent writers costs
        far more than the writes (other processes still wait through ``busy_timeout``).
        """
        with self._writer_lock, self._write() as s, s.begin():
            yield s

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
