"""Tenant schema: stk_pushes.expired_at, when Lango (not M-Pesa) expired a push.

Lango expires a push it heard nothing about in time; that is its own conclusion, so a valid
success M-Pesa reports later still moves the push to succeeded. The column keeps the moment
Lango gave up, so a push that succeeded late says so.

Revision ID: t0006_push_expired_at
Revises: t0005_stk_pushes_livemode_id
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "t0006_push_expired_at"
down_revision = "t0005_stk_pushes_livemode_id"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column("stk_pushes", sa.Column("expired_at", sa.DateTime(timezone=True)))
    # Pushes Lango expired before this column existed carry result_code 'expired'.
    op.execute(
        "UPDATE stk_pushes SET expired_at = resolved_at "
        "WHERE status = 'expired' AND result_code = 'expired'"
    )


def downgrade():
    op.drop_column("stk_pushes", "expired_at")
