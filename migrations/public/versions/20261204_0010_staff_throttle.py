"""Staff sign-in throttling moves to core.signin_throttle (per account and client address).

`staff_users.failed_attempts` and `locked_until` locked a whole account for up to a day,
which let anyone who knew a staff email lock its owner out; the counters now live in Redis
(short-lived, forgiven by a flush, never granting access), so the columns go.

Revision ID: 0010_staff_throttle
Revises: 0009_audit_keyed_chain
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0010_staff_throttle"
down_revision = "0009_audit_keyed_chain"
branch_labels = None
depends_on = None


def upgrade():
    op.drop_column("staff_users", "locked_until", schema="public")
    op.drop_column("staff_users", "failed_attempts", schema="public")


def downgrade():
    op.add_column(
        "staff_users",
        sa.Column("failed_attempts", sa.Integer(), nullable=False, server_default="0"),
        schema="public",
    )
    op.add_column(
        "staff_users", sa.Column("locked_until", sa.DateTime(timezone=True)), schema="public"
    )
