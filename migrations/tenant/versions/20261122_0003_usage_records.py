"""Tenant schema: usage records (one per counted push).

Revision ID: t0003_usage_records
Revises: t0002_stk_pushes
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "t0003_usage_records"
down_revision = "t0002_stk_pushes"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "usage_records",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("stk_push_id", sa.String(40), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("stk_push_id", name="uq_usage_records_stk_push_id"),
    )
    op.create_index("ix_usage_records_period_start", "usage_records", ["period_start"])


def downgrade():
    op.drop_table("usage_records")
