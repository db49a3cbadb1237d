"""Tenant schema: the outbox's handlings — each subscriber's duty towards each event.

A handling is inserted with its event (core.events.record_event) and marked handled in the
same transaction as the subscriber's work (core.outbox), so every (event, subscriber) is
handled exactly once. Events recorded before this revision were fanned out to webhooks in
their own transaction already; they get no handlings.

Revision ID: t0008_event_handlings
Revises: t0007_idempotency_lease
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "t0008_event_handlings"
down_revision = "t0007_idempotency_lease"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "event_handlings",
        sa.Column(
            "event_id",
            sa.String(40),
            sa.ForeignKey(
                "events.id", ondelete="CASCADE", name="fk_event_handlings_event_id_events"
            ),
            primary_key=True,
        ),
        sa.Column("subscriber", sa.String(60), primary_key=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text()),
        sa.Column("handled_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("event_id", "subscriber", name="pk_event_handlings"),
    )
    # The dispatcher and the sweeper read only what is still owed, by when it is due.
    op.create_index(
        "ix_event_handlings_due",
        "event_handlings",
        ["next_attempt_at"],
        postgresql_where=sa.text("handled_at IS NULL"),
    )


def downgrade():
    op.drop_table("event_handlings")
