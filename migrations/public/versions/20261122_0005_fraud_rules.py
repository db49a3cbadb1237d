"""Fraud rules, review cases, phone blocklists.

Seeds the default rule set (first match wins, lowest position first). Velocity counters count
every screened attempt including the one being screened, so `phone_pushes_10m >= 5` blocks
the fifth push to a phone within ten minutes and lets the first four through.

Revision ID: 0005_fraud_rules
Revises: 0004_audit_log
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_fraud_rules"
down_revision = "0004_audit_log"
branch_labels = None
depends_on = None

# id, position, expression, outcome, description
DEFAULT_RULES = [
    (
        "frule_phone_velocity_10m",
        10,
        "phone_pushes_10m >= 5",
        "block",
        "Block a phone with 5 or more pushes (this one included) in 10 minutes.",
    ),
    (
        "frule_new_tenant_large_amount",
        20,
        "amount > 50000 and tenant_age_days < 7",
        "review",
        "Review amounts above KES 50,000 on tenants younger than 7 days.",
    ),
    (
        "frule_phone_cancellations_1h",
        30,
        "phone_cancellations_1h >= 3",
        "review",
        "Review a phone whose customer cancelled 3 or more pushes in the last hour.",
    ),
]


def upgrade():
    rules = op.create_table(
        "fraud_rules",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("expression", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(10), nullable=False),
        sa.Column("description", sa.String(255), nullable=False, server_default=""),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.CheckConstraint(
            "outcome IN ('allow', 'review', 'block')", name="ck_fraud_rules_outcome"
        ),
        schema="public",
    )
    op.create_index("ix_fraud_rules_position", "fraud_rules", ["position"], schema="public")
    op.bulk_insert(
        rules,
        [
            {
                "id": rule_id,
                "position": position,
                "expression": expression,
                "outcome": outcome,
                "description": description,
                "enabled": True,
            }
            for rule_id, position, expression, outcome, description in DEFAULT_RULES
        ],
    )
    op.create_table(
        "fraud_review_cases",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(40), nullable=False, index=True),
        sa.Column("stk_push_id", sa.String(40), nullable=False, unique=True),
        sa.Column("rule_id", sa.String(40), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="open"),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("notes", sa.Text(), nullable=False, server_default=""),
        sa.CheckConstraint(
            "status IN ('open', 'legitimate', 'fraudulent')",
            name="ck_fraud_review_cases_status",
        ),
        schema="public",
    )
    op.create_index(
        "ix_fraud_review_cases_open",
        "fraud_review_cases",
        ["created_at"],
        schema="public",
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_table(
        "phone_blocklist",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("phone", sa.String(12), primary_key=True),
        sa.Column("reason", sa.String(255), nullable=False, server_default=""),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        schema="public",
    )


def downgrade():
    op.drop_table("phone_blocklist", schema="public")
    op.drop_table("fraud_review_cases", schema="public")
    op.drop_table("fraud_rules", schema="public")
