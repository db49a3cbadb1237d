"""Tenant schema: an Idempotency-Key claim carries a lease, and the object its request made.

A claim whose request died (the process was killed) is taken over once its lease has run
out; `object_id` is the object (an STK push) the first attempt committed, so a retry answers
with it instead of making a second one.

Revision ID: t0007_idempotency_lease
Revises: t0006_push_expired_at
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "t0007_idempotency_lease"
down_revision = "t0006_push_expired_at"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column(
        "idempotency_keys",
        sa.Column(
            "locked_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.add_column("idempotency_keys", sa.Column("lease_token", sa.String(32)))
    op.add_column("idempotency_keys", sa.Column("object_id", sa.String(40)))
    # Claims already in flight start their lease when they were made.
    op.execute("UPDATE idempotency_keys SET locked_at = created_at")


def downgrade():
    op.drop_column("idempotency_keys", "object_id")
    op.drop_column("idempotency_keys", "lease_token")
    op.drop_column("idempotency_keys", "locked_at")
