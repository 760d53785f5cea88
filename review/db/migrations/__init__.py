"""Alembic migrations of the review database (see review.db.schema)."""
