"""Case libraries and autosaved drafts: images (PNG by pixel sha256), support sets, libraries, drafts.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("png", sa.LargeBinary(), nullable=False),
        sa.Column("modality", sa.String(16)),
        sa.Column("body_part", sa.String(64)),
        sa.Column("view", sa.String(16)),
    )
    op.create_table(
        "support_sets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("classes", sa.JSON(), nullable=False),
    )
    op.create_table(
        "support_scans",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("set_id", sa.Integer(), sa.ForeignKey("support_sets.id", ondelete="CASCADE"), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("image_sha256", sa.String(64), sa.ForeignKey("images.sha256"), nullable=False),
    )
    op.create_index("ix_support_scans_set_id", "support_scans", ["set_id"])
    op.create_index("ix_support_scans_image_sha256", "support_scans", ["image_sha256"])
    op.create_table(
        "libraries",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("set_id", sa.Integer(), sa.ForeignKey("support_sets.id"), nullable=False),
        sa.UniqueConstraint("name", "version", name="uq_libraries_name_version"),
    )
    op.create_index("ix_libraries_name", "libraries", ["name"])
    op.create_table(
        "drafts",
        sa.Column("browser_id", sa.String(64), primary_key=True),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("set_id", sa.Integer(), sa.ForeignKey("support_sets.id"), nullable=False),
    )


def downgrade() -> None:
    for table in ("drafts", "libraries", "support_scans", "support_sets", "images"):
        op.drop_table(table)
