"""Tenant schema: STK pushes, raw M-Pesa callbacks, idempotency keys.

Revision ID: t0002_stk_pushes
Revises: t0001_outbox
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "t0002_stk_pushes"
down_revision = "t0001_outbox"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "stk_pushes",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("phone_number", sa.String(12), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("account_reference", sa.String(12), nullable=False),
        sa.Column("description", sa.String(13), nullable=False),
        sa.Column("metadata", postgresql.JSONB(), nullable=False, server_default="{}"),
        sa.Column("callback_token_hash", sa.String(64), nullable=False),
        sa.Column("merchant_request_id", sa.String(64)),
        sa.Column("checkout_request_id", sa.String(64)),
        sa.Column("mpesa_receipt_number", sa.String(20)),
        sa.Column("result_code", sa.String(20)),
        sa.Column("result_description", sa.String(255)),
        sa.Column("transaction_date", sa.DateTime(timezone=True)),
        sa.Column("flagged_reason", sa.String(255)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True)),
        sa.Column("last_queried_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "status IN ('pending', 'succeeded', 'failed', 'cancelled', 'expired')",
            name="ck_stk_pushes_push_status",
        ),
        sa.CheckConstraint("amount BETWEEN 1 AND 250000", name="ck_stk_pushes_amount"),
        sa.UniqueConstraint("callback_token_hash", name="uq_stk_pushes_callback_token_hash"),
        sa.UniqueConstraint("checkout_request_id", name="uq_stk_pushes_checkout_request_id"),
    )
    op.create_index("ix_stk_pushes_status", "stk_pushes", ["status"])
    op.create_index("ix_stk_pushes_phone_number", "stk_pushes", ["phone_number"])
    op.create_index("ix_stk_pushes_created_at", "stk_pushes", ["created_at"])
    op.create_index(
        "ix_stk_pushes_pending",
        "stk_pushes",
        ["created_at"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "mpesa_callbacks",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("stk_push_id", sa.String(40), nullable=False),
        sa.Column(
            "received_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("source_ip", sa.String(45)),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("detail", sa.String(255)),
    )
    op.create_index("ix_mpesa_callbacks_stk_push_id", "mpesa_callbacks", ["stk_push_id"])
    op.create_table(
        "idempotency_keys",
        sa.Column("livemode", sa.Boolean(), primary_key=True),
        sa.Column("key", sa.String(255), primary_key=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("response_status", sa.Integer()),
        sa.Column("response_body", postgresql.JSONB()),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("completed_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_idempotency_keys_created_at", "idempotency_keys", ["created_at"])


def downgrade():
    op.drop_table("idempotency_keys")
    op.drop_table("mpesa_callbacks")
    op.drop_table("stk_pushes")
