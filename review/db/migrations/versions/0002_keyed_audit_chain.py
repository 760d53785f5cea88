"""keyed audit chain: a chain version per audit row and a signed head

Rows already in the log keep version 1 (plain SHA-256) and still verify; every row written
from now on is version 2 (HMAC-SHA256 with the audit key). `review.db.schema.upgrade` seals
an existing log right after this revision runs: it appends a keyed ``audit.seal`` row whose
MAC covers the last unkeyed row, so the old rows cannot be rewritten afterwards either.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 10:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), server_default="1", nullable=False))
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.add_column(sa.Column("mac", sa.String(length=64), nullable=True))


def downgrade() -> None:
    keyed = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM audit_log WHERE version >= 2")).scalar()
    if keyed:
        # Dropping the column would turn keyed rows into unverifiable ones.
        raise RuntimeError(f"the audit log holds {keyed} keyed rows: downgrading below 0002 would break it")
    with op.batch_alter_table("audit_head", schema=None) as batch_op:
        batch_op.drop_column("mac")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_column("version")
