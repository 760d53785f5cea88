"""change items: the before/after of a change folder's rows under review

A change job (``jobs.kind = 'change'``) imports rows of a `vision change` folder; each becomes
an item (the after window) plus a ``change_items`` row (the comparison and the before
window). ``jobs.transitions`` records which transitions were queued.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 12:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("transitions", sa.Text(), nullable=True))
    op.create_table(
        "change_items",
        sa.Column("item_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("change_id", sa.String(length=200), nullable=False),
        sa.Column("transition", sa.String(length=16), nullable=False),
        sa.Column("aoi_id", sa.String(length=200), nullable=True),
        sa.Column("area_ha", sa.Float(), nullable=True),
        sa.Column("alignment", sa.String(length=16), nullable=True),
        sa.Column("item_before", sa.Text(), nullable=True),
        sa.Column("item_after", sa.Text(), nullable=True),
        sa.Column("acquired_before", sa.DateTime(), nullable=True),
        sa.Column("acquired_after", sa.DateTime(), nullable=True),
        sa.Column("class_before", sa.String(length=200), nullable=True),
        sa.Column("class_after", sa.String(length=200), nullable=True),
        sa.Column("p_before", sa.Float(), nullable=True),
        sa.Column("p_after", sa.Float(), nullable=True),
        sa.Column("p_interest_before", sa.Float(), nullable=True),
        sa.Column("p_interest_after", sa.Float(), nullable=True),
        sa.Column("cloud_fraction_before", sa.Float(), nullable=True),
        sa.Column("cloud_fraction_after", sa.Float(), nullable=True),
        sa.Column("path_before", sa.Text(), nullable=False),
        sa.Column("row_off_before", sa.Integer(), nullable=True),
        sa.Column("col_off_before", sa.Integer(), nullable=True),
        sa.Column("height_before", sa.Integer(), nullable=True),
        sa.Column("width_before", sa.Integer(), nullable=True),
        sa.Column("crs_before", sa.Text(), nullable=True),
        sa.Column("minx_before", sa.Float(), nullable=True),
        sa.Column("miny_before", sa.Float(), nullable=True),
        sa.Column("maxx_before", sa.Float(), nullable=True),
        sa.Column("maxy_before", sa.Float(), nullable=True),
        sa.Column("input_sha256_before", sa.String(length=64), nullable=True),
        sa.Column("model_name_before", sa.String(length=200), nullable=True),
        sa.Column("model_version_before", sa.String(length=100), nullable=True),
        sa.Column("model_sha256_before", sa.String(length=64), nullable=True),
        sa.Column("job_before", sa.Text(), nullable=False),
        sa.Column("job_after", sa.Text(), nullable=False),
        sa.Column("trajectory", sa.Text(), nullable=True),
        sa.Column("first_appeared", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"]),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"]),
        sa.PrimaryKeyConstraint("item_id"),
    )
    with op.batch_alter_table("change_items", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_change_items_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    n = op.get_bind().execute(sa.text("SELECT COUNT(*) FROM change_items")).scalar()
    if n:
        # Their items' decisions are audited with the change rows' fingerprints.
        raise RuntimeError(f"the database holds {n} change items: downgrading below 0003 would orphan them")
    with op.batch_alter_table("change_items", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_change_items_job_id"))
    op.drop_table("change_items")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("transitions")
