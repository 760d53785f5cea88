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


class Database:
    """An engine with a session factory for reads and one for writes.

    Args:
        url: SQLAlchemy URL.
    """

    def __init__(self, url: str, pool_size: int = 20):
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size)
        self.is_sqlite = url.startswith("sqlite")
        writer = self.engine.execution_options(**{_IMMEDIATE: True})
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(writer, expire_on_commit=False)
        self._writer_lock: AbstractContextManager[object] = threading.Lock() if self.is_sqlite else nullcontext()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading (rolled back at the end)."""
        with self._read() as s:
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
