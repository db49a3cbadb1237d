"""Subscriptions: which plan a tenant is on and its current billing period."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

from sqlalchemy import select

from billing.models import Plan, Subscription, SubscriptionStatus
from core.errors import ValidationFailed
from core.extensions import db
from core.ids import new_id

DEFAULT_PLAN = "sandbox"


def add_months(moment: datetime, months: int) -> datetime:
    """Same day-of-month `months` later, clamped to the month's end (Jan 31 → Feb 28)."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def get_plan(code: str, *, active_only: bool = True) -> Plan:
    plan = db.session.get(Plan, code)
    if plan is None or (active_only and not plan.active):
        raise ValidationFailed(f"No such plan: {code!r}.", code="plan_unknown", param="plan")
    return plan


def start_subscription(tenant_id: str, plan_code: str | None) -> Subscription:
    """Subscribe a new tenant (in the caller's transaction); the period starts now.
    Raises ValidationFailed for an unknown or retired plan."""
    plan = get_plan(plan_code or DEFAULT_PLAN)
    now = datetime.now(UTC)
    subscription = Subscription(
        id=new_id("sub"),
        tenant_id=tenant_id,
        plan_code=plan.code,
        status=SubscriptionStatus.ACTIVE,
        current_period_start=now,
        current_period_end=add_months(now, 1),
        cancel_at_period_end=False,
        created_at=now,
        updated_at=now,
    )
    db.session.add(subscription)
    return subscription


def subscribe_new_tenant(tenant) -> None:
    """Receiver of tenants' `tenant_created` signal (connected in create_app)."""
    start_subscription(tenant.id, tenant.plan)


def current_subscription(tenant_id: str) -> tuple[Subscription, Plan]:
    row = db.session.execute(
        select(Subscription, Plan)
        .join(Plan, Plan.code == Subscription.plan_code)
        .where(Subscription.tenant_id == tenant_id)
    ).one_or_none()
    if row is None:
        raise LookupError(f"tenant {tenant_id} has no subscription")
    return row[0], row[1]
