"""Billing: plans (seeded), subscriptions, usage counters, invoices, Stripe events.

Existing tenants are subscribed to the free `sandbox` plan, their period starting now.

Revision ID: 0003_billing
Revises: 0002_mpesa_credentials
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0003_billing"
down_revision = "0002_mpesa_credentials"
branch_labels = None
depends_on = None

# code, name, monthly KES, included live pushes, overage KES/push (None = hard cap),
# rate limit per key, webhook endpoints, live mode, test pushes per month
CATALOG = [
    ("sandbox", "Sandbox", 0, 0, None, "25 per second", 2, False, 1_000),
    ("starter", "Starter", 2_500, 1_000, 3, "50 per second", 5, True, 10_000),
    ("growth", "Growth", 10_000, 10_000, 2, "100 per second", 10, True, 50_000),
    ("scale", "Scale", 40_000, 100_000, 1, "250 per second", 25, True, 200_000),
]


def upgrade():
    plans = op.create_table(
        "plans",
        sa.Column("code", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("monthly_price", sa.BigInteger(), nullable=False),
        sa.Column("included_pushes", sa.Integer(), nullable=False),
        sa.Column("overage_price", sa.Integer()),
        sa.Column("rate_limit", sa.String(40), nullable=False),
        sa.Column("max_webhook_endpoints", sa.Integer(), nullable=False),
        sa.Column("livemode_allowed", sa.Boolean(), nullable=False),
        sa.Column("test_allowance", sa.Integer(), nullable=False),
        sa.Column("stripe_plan_id", sa.String(100)),
        sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("position", sa.Integer(), nullable=False, server_default="0"),
        sa.CheckConstraint("monthly_price >= 0 AND included_pushes >= 0", name="ck_plans_prices"),
        schema="public",
    )
    op.bulk_insert(
        plans,
        [
            {
                "code": code,
                "name": name,
                "monthly_price": price,
                "included_pushes": included,
                "overage_price": overage,
                "rate_limit": rate,
                "max_webhook_endpoints": endpoints,
                "livemode_allowed": live,
                "test_allowance": test,
                "active": True,
                "position": i,
            }
            for i, (code, name, price, included, overage, rate, endpoints, live, test) in enumerate(
                CATALOG
            )
        ],
    )
    op.create_table(
        "subscriptions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(40),
            sa.ForeignKey("public.tenants.id", name="fk_subscriptions_tenant_id_tenants"),
            nullable=False,
        ),
        sa.Column(
            "plan_code",
            sa.String(40),
            sa.ForeignKey("public.plans.code", name="fk_subscriptions_plan_code_plans"),
            nullable=False,
        ),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("current_period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("current_period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancel_at_period_end", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column(
            "pending_plan_code",
            sa.String(40),
            sa.ForeignKey("public.plans.code", name="fk_subscriptions_pending_plan_code_plans"),
        ),
        sa.Column("overage_spending_cap", sa.BigInteger()),
        sa.Column("stripe_customer_id", sa.String(100)),
        sa.Column("stripe_subscription_id", sa.String(100)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('trialing', 'active', 'incomplete', 'past_due', 'canceled')",
            name="ck_subscriptions_subscription_status",
        ),
        sa.UniqueConstraint("tenant_id", name="uq_subscriptions_tenant_id"),
        schema="public",
    )
    op.create_table(
        "usage_counters",
        sa.Column("tenant_id", sa.String(40), primary_key=True),
        sa.Column("livemode", sa.Boolean(), primary_key=True),
        sa.Column("period_start", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("used", sa.Integer(), nullable=False, server_default="0"),
        sa.CheckConstraint("used >= 0", name="ck_usage_counters_used"),
        schema="public",
    )
    op.create_table(
        "invoices",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column(
            "tenant_id",
            sa.String(40),
            sa.ForeignKey("public.tenants.id", name="fk_invoices_tenant_id_tenants"),
            nullable=False,
        ),
        sa.Column("plan_code", sa.String(40), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("base_fee", sa.BigInteger(), nullable=False),
        sa.Column("included_pushes", sa.Integer(), nullable=False),
        sa.Column("used_pushes", sa.Integer(), nullable=False),
        sa.Column("overage_pushes", sa.Integer(), nullable=False),
        sa.Column("overage_amount", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("lines", postgresql.JSONB(), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("paid_at", sa.DateTime(timezone=True)),
        sa.Column("stripe_invoice_id", sa.String(100)),
        sa.Column("stripe_overage_item_id", sa.String(100)),
        sa.Column("mpesa_stk_push_id", sa.String(40)),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("status IN ('open', 'paid', 'void')", name="ck_invoices_invoice_status"),
        sa.UniqueConstraint("tenant_id", "period_start", name="uq_invoices_tenant_id"),
        schema="public",
    )
    op.create_index("ix_public_invoices_tenant_id", "invoices", ["tenant_id"], schema="public")
    op.create_table(
        "stripe_events",
        sa.Column("id", sa.String(100), primary_key=True),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("payload", postgresql.JSONB(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("detail", sa.String(255)),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        schema="public",
    )
    op.add_column("tenants", sa.Column("suspended_reason", sa.String(40)), schema="public")
    op.execute(
        "INSERT INTO public.subscriptions (id, tenant_id, plan_code, status, "
        "current_period_start, current_period_end, created_at, updated_at) "
        "SELECT 'sub_' || substr(id, 5), id, 'sandbox', 'active', now(), "
        "now() + interval '1 month', now(), now() FROM public.tenants"
    )
    op.execute("UPDATE public.tenants SET plan = 'sandbox' WHERE plan = 'free'")


def downgrade():
    op.drop_column("tenants", "suspended_reason", schema="public")
    for table in ("stripe_events", "invoices", "usage_counters", "subscriptions", "plans"):
        op.drop_table(table, schema="public")
