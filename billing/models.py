"""Billing models. Plans, subscriptions, quota counters, invoices and Stripe events live in
the public schema; usage records live in each tenant's schema, beside the pushes they count."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.extensions import TenantBase, db
from core.sqltypes import text_enum


class Plan(db.Model):
    """A price list entry. Prices are whole Kenya shillings."""

    __tablename__ = "plans"
    __table_args__ = {"schema": "public"}

    code: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    monthly_price: Mapped[int] = mapped_column(BigInteger)
    included_pushes: Mapped[int] = mapped_column(Integer)
    # Price per live push beyond the included ones; None makes the allowance a hard cap.
    overage_price: Mapped[int | None] = mapped_column(Integer)
    # Flask-Limiter notation, per tenant (all its keys), e.g. "50 per second".
    rate_limit: Mapped[str] = mapped_column(String(40))
    max_webhook_endpoints: Mapped[int] = mapped_column(Integer)
    livemode_allowed: Mapped[bool] = mapped_column(Boolean)
    # Test-mode pushes per month (never billed; a hard cap).
    test_allowance: Mapped[int] = mapped_column(Integer)
    stripe_plan_id: Mapped[str | None] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    position: Mapped[int] = mapped_column(Integer, default=0)


class SubscriptionStatus(enum.StrEnum):
    TRIALING = "trialing"
    ACTIVE = "active"
    INCOMPLETE = "incomplete"  # the first payment failed (Stripe); live mode stays off
    PAST_DUE = "past_due"
    CANCELED = "canceled"


class Subscription(db.Model):
    __tablename__ = "subscriptions"
    __table_args__ = {"schema": "public"}

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40), unique=True)
    plan_code: Mapped[str] = mapped_column(String(40))
    status: Mapped[SubscriptionStatus] = mapped_column(
        text_enum(SubscriptionStatus, "subscription_status")
    )
    current_period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    current_period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    # A downgrade waits for the period to end.
    pending_plan_code: Mapped[str | None] = mapped_column(String(40))
    # Most a tenant lets overage cost per period (KES); None = no cap.
    overage_spending_cap: Mapped[int | None] = mapped_column(BigInteger)
    stripe_customer_id: Mapped[str | None] = mapped_column(String(100))
    stripe_subscription_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UsageCounter(db.Model):
    """Pushes counted in one period and mode: the number quota checks against, changed only
    by one conditional UPDATE at a time (row lock), so it is exact under any concurrency."""

    __tablename__ = "usage_counters"
    __table_args__ = {"schema": "public"}

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    livemode: Mapped[bool] = mapped_column(Boolean, primary_key=True)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), primary_key=True)
    used: Mapped[int] = mapped_column(Integer, default=0)


class UsageKind(enum.StrEnum):
    USAGE = "usage"  # a push counted (+1)
    REVERSAL = "reversal"  # a count taken back (-1): the push never left Lango


class UsageRecord(TenantBase):
    """The usage ledger (tenant schema): appended in the push's own transaction, never changed
    or deleted. A push's first entry counts it; each later one reverses the entry before it
    (billing.ledger), so the push's entries sum to 0 or 1."""

    __tablename__ = "usage_records"
    __table_args__ = (
        CheckConstraint(
            "(kind = 'usage' AND quantity = 1) "
            "OR (kind = 'reversal' AND quantity = -1 AND reverses_id IS NOT NULL)",
            name="ck_usage_records_entry",
        ),
        # One first entry per push; at most one entry reverses any entry.
        Index(
            "uq_usage_records_first_entry",
            "stk_push_id",
            unique=True,
            postgresql_where=text("reverses_id IS NULL"),
        ),
        Index("uq_usage_records_reverses_id", "reverses_id", unique=True),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    stk_push_id: Mapped[str] = mapped_column(String(40))
    livemode: Mapped[bool] = mapped_column(Boolean)
    # The period the entry counts in; a reversal's is the one of the count it takes back.
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    kind: Mapped[str] = mapped_column(String(20), default=UsageKind.USAGE, server_default="usage")
    quantity: Mapped[int] = mapped_column(SmallInteger, default=1, server_default="1")
    reverses_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("usage_records.id", name="fk_usage_records_reverses_id")
    )


class InvoiceStatus(enum.StrEnum):
    OPEN = "open"
    PAID = "paid"
    VOID = "void"


class InvoiceKind(enum.StrEnum):
    PERIOD = "period"  # written when a period closes: its fee (in arrears) and overage
    # Issued when a tenant chooses a dearer plan that Stripe does not collect: the new plan's
    # first month, paid up front. Paying it switches the plan and opens that month (its
    # period_start/period_end then say which); the month's own invoice leaves the fee out.
    UPGRADE = "upgrade"


class Invoice(db.Model):
    """Lango's own record of what a period cost, or of an upgrade paid up front, with or
    without Stripe."""

    __tablename__ = "invoices"
    __table_args__ = (
        # One invoice per tenant and period: closing a period twice cannot bill twice.
        Index(
            "uq_invoices_tenant_id_period",
            "tenant_id",
            "period_start",
            unique=True,
            postgresql_where=text("kind = 'period'"),
        ),
        # One plan at a time waits for its payment.
        Index(
            "uq_invoices_tenant_id_open_upgrade",
            "tenant_id",
            unique=True,
            postgresql_where=text("kind = 'upgrade' AND status = 'open'"),
        ),
        {"schema": "public"},
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[InvoiceKind] = mapped_column(
        text_enum(InvoiceKind, "invoice_kind"), default=InvoiceKind.PERIOD
    )
    plan_code: Mapped[str] = mapped_column(String(40))
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    base_fee: Mapped[int] = mapped_column(BigInteger)
    included_pushes: Mapped[int] = mapped_column(Integer)
    used_pushes: Mapped[int] = mapped_column(Integer)
    overage_pushes: Mapped[int] = mapped_column(Integer)
    overage_amount: Mapped[int] = mapped_column(BigInteger)
    total: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[InvoiceStatus] = mapped_column(text_enum(InvoiceStatus, "invoice_status"))
    lines: Mapped[list] = mapped_column(JSONB)
    due_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    paid_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    stripe_invoice_id: Mapped[str | None] = mapped_column(String(100))
    stripe_overage_item_id: Mapped[str | None] = mapped_column(String(100))
    # The STK push (in the platform tenant) paying it by M-Pesa, when there is one.
    mpesa_stk_push_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StripeEvent(db.Model):
    """Every Stripe webhook event received, by id: a replayed event is skipped."""

    __tablename__ = "stripe_events"
    __table_args__ = {"schema": "public"}

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(20))  # received | applied | ignored | failed
    detail: Mapped[str | None] = mapped_column(String(255))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
