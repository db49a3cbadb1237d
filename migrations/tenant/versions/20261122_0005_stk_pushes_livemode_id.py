"""Tenant schema: index stk_pushes on (livemode, id).

Every list of pushes (the API's and the dashboard's, cursor-paginated by id) and the
dashboard's latest payments read one mode, newest id first. The primary key serves that
while the mode on screen is the common one; for the rare one (a live tenant looking at its
few test pushes) PostgreSQL fell back to reading the whole table. With this index both modes
read just the rows they show.

Revision ID: t0005_stk_pushes_livemode_id
Revises: t0004_webhooks
Create Date: 2026-11-22
"""

from alembic import op

revision = "t0005_stk_pushes_livemode_id"
down_revision = "t0004_webhooks"
branch_labels = None
depends_on = None


def upgrade():
    op.create_index("ix_stk_pushes_livemode_id", "stk_pushes", ["livemode", "id"])


def downgrade():
    op.drop_index("ix_stk_pushes_livemode_id", table_name="stk_pushes")
