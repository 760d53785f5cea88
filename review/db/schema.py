"""Schema migrations with Alembic, driven from code (no ``alembic.ini`` needed).

``upgrade(engine)`` brings a database to the newest revision; the service and every CLI
command call it before use. Upgrading a database from before the keyed audit chain (revision
0001 with audit rows) also seals its log with the audit key (`review.audit.seal_legacy`), in
the same transaction, so it needs the key. Developers make a new revision with::

    python -m review.db.schema revision -m "what changed"
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

# alembic logs a "setup plugin" line per plugin when first imported: noise on every command.
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402
from alembic.migration import MigrationContext  # noqa: E402
from sqlalchemy import Connection, Engine, inspect, text  # noqa: E402

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    """An Alembic configuration for the database at ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


#: Revisions whose audit rows are unkeyed: upgrading from one of them seals the log.
UNKEYED_REVISIONS = frozenset({"0001"})


def upgrade(engine: Engine, revision: str = "head", audit_key: bytes | None = None) -> None:
    """Migrate the database behind ``engine`` to ``revision`` (default the newest).

    Raises:
        AuditKeyError: the log must be sealed (see the module docstring) and there is no key;
            nothing is changed then.
    """
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per revision is noise
    with engine.begin() as conn:
        before = MigrationContext.configure(conn).get_current_revision()
        seal = before in UNKEYED_REVISIONS and _has_audit_rows(conn)
        if seal and audit_key is None:
            from review.audit import AuditKeyError

            raise AuditKeyError(
                "this database's audit log predates the keyed chain; the upgrade seals it with the audit key: "
                "set VISION_REVIEW_SECRET (the service's) and run the command again"
            )
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        if seal and MigrationContext.configure(conn).get_current_revision() not in UNKEYED_REVISIONS:
            _seal(conn, audit_key)


def _has_audit_rows(conn: Connection) -> bool:
    if "audit_log" not in inspect(conn).get_table_names():
        return False
    return conn.execute(text("SELECT 1 FROM audit_log LIMIT 1")).first() is not None


def _seal(conn: Connection, audit_key: bytes | None) -> None:
    from sqlalchemy.orm import Session

    from review.audit import seal_legacy
    from review.db.engine import AUDIT_KEY_INFO

    # The session joins the migration's transaction: it commits with the schema change.
    with Session(bind=conn, info={AUDIT_KEY_INFO: audit_key}) as s:
        seal_legacy(s)
        s.flush()


def main(argv: list[str]) -> None:
    """``python -m review.db.schema revision -m MSG --url URL``: autogenerate a revision."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m review.db.schema")
    p.add_argument("command", choices=["revision"])
    p.add_argument("-m", "--message", required=True)
    p.add_argument("--url", default="sqlite:///alembic-dev.db")
    a = p.parse_args(argv)
    cfg = alembic_config(a.url)
    command.upgrade(cfg, "head")
    command.revision(cfg, message=a.message, autogenerate=True)


if __name__ == "__main__":
    main(sys.argv[1:])
