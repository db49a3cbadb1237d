"""Tenant schema: usage records become an append-only ledger.

Releasing a push's quota reservation appended nothing and deleted its usage record; now it
appends a reversal. Each entry is a count (`usage`, quantity +1) or a reversal (quantity -1),
and every entry after a push's first one reverses the entry before it (`reverses_id`): a
reversal takes back a count, and a push counted again after a release takes back that
reversal. So a push's entries form one chain whose sum is 0 or 1, and two unique indexes keep
that chain exact under any concurrency: one first entry per push, and at most one entry
reversing any entry.

Existing rows are first counts (the defaults). Pushes released before this revision left no
row; counting one of them again appends a first count, as before.

Code from before this revision counts a push again with `ON CONFLICT (stk_push_id)`, which
needs the unique constraint dropped here: deploy this revision with the code that uses it.

Revision ID: t0009_usage_ledger
Revises: t0008_event_handlings
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "t0009_usage_ledger"
down_revision = "t0008_event_handlings"
branch_labels = None
depends_on = None


def upgrade():
    op.add_column(
        "usage_records",
        sa.Column("kind", sa.String(20), nullable=False, server_default="usage"),
    )
    op.add_column(
        "usage_records",
        sa.Column("quantity", sa.SmallInteger(), nullable=False, server_default="1"),
    )
    op.add_column(
        "usage_records",
        sa.Column(
            "reverses_id",
            sa.String(40),
            sa.ForeignKey("usage_records.id", name="fk_usage_records_reverses_id"),
        ),
    )
    op.create_check_constraint(
        "ck_usage_records_entry",
        "usage_records",
        "(kind = 'usage' AND quantity = 1) "
        "OR (kind = 'reversal' AND quantity = -1 AND reverses_id IS NOT NULL)",
    )
    op.drop_constraint("uq_usage_records_stk_push_id", "usage_records", type_="unique")
    op.create_index(
        "uq_usage_records_first_entry",
        "usage_records",
        ["stk_push_id"],
        unique=True,
        postgresql_where=sa.text("reverses_id IS NULL"),
    )
    op.create_index("uq_usage_records_reverses_id", "usage_records", ["reverses_id"], unique=True)


def downgrade():
    # Back to one row per counted push: a push whose entries sum to 0 keeps none, one that
    # sums to 1 keeps its first entry.
    op.execute(
        "DELETE FROM usage_records WHERE stk_push_id IN (SELECT stk_push_id FROM usage_records "
        "GROUP BY stk_push_id HAVING sum(quantity) = 0)"
    )
    op.execute("DELETE FROM usage_records WHERE reverses_id IS NOT NULL")
    op.drop_index("uq_usage_records_reverses_id", "usage_records")
    op.drop_index("uq_usage_records_first_entry", "usage_records")
    op.drop_constraint("ck_usage_records_entry", "usage_records", type_="check")
    op.drop_column("usage_records", "reverses_id")
    op.drop_column("usage_records", "quantity")
    op.drop_column("usage_records", "kind")
    op.create_unique_constraint("uq_usage_records_stk_push_id", "usage_records", ["stk_push_id"])
