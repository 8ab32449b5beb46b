"""Audit trail: one row per Adapt and per diagnosed query scan (no patient identifiers).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_records",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("event_id", sa.String(32), nullable=False),
        sa.Column("time_utc", sa.DateTime(), nullable=False),
        sa.Column("user", sa.String(200), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("library_name", sa.String(200)),
        sa.Column("library_version", sa.Integer()),
        sa.Column("support_sha256", sa.String(64), nullable=False),
        sa.Column("support_counts", sa.JSON(), nullable=False),
        sa.Column("query_sha256", sa.String(64)),
        sa.Column("prediction", sa.String(200)),
        sa.Column("probabilities", sa.JSON()),
        sa.Column("uncertain", sa.Boolean()),
        sa.Column("out_of_distribution", sa.Boolean()),
        sa.Column("prediction_set", sa.JSON()),
    )
    op.create_index("ix_audit_records_event_id", "audit_records", ["event_id"])
    op.create_index("ix_audit_records_time_utc", "audit_records", ["time_utc"])


def downgrade() -> None:
    op.drop_table("audit_records")
