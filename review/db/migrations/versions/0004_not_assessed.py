"""not-assessed rows of an imported job: counted by reason, and cloudy rows optionally queued

``jobs.not_assessed`` records, per reason (``nodata``, ``cloudy``, ``error``, ``invalid``
for ``ok`` rows with non-finite numbers), the rows of a job's table that were not queued;
``jobs.include_cloudy`` says whether the import queued the ``cloudy`` rows (schema 2 of the
prediction table) for a reviewer to label.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("not_assessed", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("include_cloudy", sa.Boolean(), server_default=sa.false(),
                                      nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("include_cloudy")
        batch_op.drop_column("not_assessed")
