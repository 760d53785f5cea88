"""Migrations build exactly the schema the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from review.db.engine import Database
from review.db.models import Base
from review.db.schema import upgrade


def test_migrated_schema_matches_the_models(db: Database) -> None:
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_downgrade_and_upgrade_again(db: Database) -> None:
    from alembic import command

    from review.db.schema import alembic_config

    cfg = alembic_config(db.url)
    with db.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert "items" not in inspect(db.engine).get_table_names()
    upgrade(db.engine)
    assert {"items", "audit_log", "users", "decisions"} <= set(inspect(db.engine).get_table_names())
