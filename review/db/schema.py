"""Schema migrations with Alembic, driven from code (no ``alembic.ini`` needed).

``upgrade(url)`` brings a database to the newest revision; the service and every CLI
command call it before use. Developers make a new revision with::

    python -m review.db.schema revision -m "what changed"
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    """An Alembic configuration for the database at ``url``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Migrate the database behind ``engine`` to ``revision`` (default the newest)."""
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    logging.getLogger("alembic").setLevel(logging.WARNING)  # one line per revision is noise
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


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
