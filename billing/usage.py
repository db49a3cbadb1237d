"""Usage metering: what the current period has used and will cost, and whether the counters
still agree with the usage records behind them.

The counter (public.usage_counters) is what quota checks; the records (one per counted push,
in the tenant's schema) are the evidence. Both change in the push's own transaction, so they
agree unless something went wrong — which `usage_drift` reports and never repairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import func, select, text

from billing.models import UsageCounter, UsageRecord
from billing.periods import prepaying_invoice
from billing.subscriptions import current_subscription
from core.extensions import db
from core.tenancy import require_tenant


@dataclass(frozen=True)
class DailyUsage:
    date: date
    live: int
    test: int


@dataclass(frozen=True)
class Usage:
    plan: str
    period_start: datetime
    period_end: datetime
    used: int
    included: int
    overage: int
    projected_charge: int
    test_mode_used: int
    test_allowance: int
    daily: list[DailyUsage]


@dataclass(frozen=True)
class UsageDrift:
    tenant_id: str
    mode: str
    period_start: datetime
    counter: int
    records: int


def current_usage(tenant_id: str) -> Usage:
    """The current period's usage and projected charge (whole KES). Runs in the tenant's
    scope (the daily series comes from its usage records). Read-only."""
    require_tenant()
    subscription, plan = current_subscription(tenant_id)
    counters = dict(
        db.session.execute(
            select(UsageCounter.livemode, UsageCounter.used).where(
                UsageCounter.tenant_id == tenant_id,
                UsageCounter.period_start == subscription.current_period_start,
            )
        ).all()
    )
    used = counters.get(True, 0)
    # A hard-cap plan never bills beyond its price, whatever the counter says.
    overage = 0 if plan.overage_price is None else max(0, used - plan.included_pushes)
    # A period an upgrade invoice paid in advance bills only its overage at its close.
    prepaid = prepaying_invoice(tenant_id, subscription.current_period_start)
    base_fee = 0 if prepaid else plan.monthly_price
    return Usage(
        plan=plan.code,
        period_start=subscription.current_period_start,
        period_end=subscription.current_period_end,
        used=used,
        included=plan.included_pushes,
        overage=overage,
        projected_charge=base_fee + overage * (plan.overage_price or 0),
        test_mode_used=counters.get(False, 0),
        test_allowance=plan.test_allowance,
        daily=daily_usage(subscription.current_period_start, subscription.current_period_end),
    )


def daily_usage(period_start: datetime, period_end: datetime) -> list[DailyUsage]:
    """Counted pushes per UTC day of the period, from its first day to today (or to its last
    day once it is over), zeros included. Runs in the tenant's scope."""
    day = func.date(func.timezone("UTC", UsageRecord.created_at))
    rows = db.session.execute(
        select(day, UsageRecord.livemode, func.count())
        .where(UsageRecord.period_start == period_start)
        .group_by(day, UsageRecord.livemode)
    ).all()
    counts = {(row[0], row[1]): row[2] for row in rows}
    first = period_start.astimezone(UTC).date()
    last = min(datetime.now(UTC), period_end - timedelta(microseconds=1)).astimezone(UTC).date()
    last = max(last, first, *(on for on, _ in counts))
    return [
        DailyUsage(on, counts.get((on, True), 0), counts.get((on, False), 0))
        for on in (first + timedelta(days=n) for n in range((last - first).days + 1))
    ]


def usage_drift(tenant_id: str, period_start: datetime) -> list[UsageDrift]:
    """Compare the period's counters (both modes) with the tenant's usage records. One
    statement, so one snapshot: a push committing meanwhile cannot look like drift. Runs in
    the tenant's scope; read-only."""
    require_tenant()
    rows = db.session.execute(
        text(
            "SELECT mode.livemode, "
            "coalesce((SELECT c.used FROM public.usage_counters c WHERE c.tenant_id = :tenant_id "
            "AND c.livemode = mode.livemode AND c.period_start = :period_start), 0) AS counter, "
            "(SELECT count(*) FROM usage_records r WHERE r.livemode = mode.livemode "
            "AND r.period_start = :period_start) AS records "
            "FROM (VALUES (false), (true)) AS mode (livemode)"
        ),
        {"tenant_id": tenant_id, "period_start": period_start},
    ).all()
    return [
        UsageDrift(tenant_id, "live" if livemode else "test", period_start, counter, records)
        for livemode, counter, records in rows
        if counter != records
    ]
