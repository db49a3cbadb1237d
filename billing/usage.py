"""Usage metering: what the current period has used and will cost, and whether the counters
still agree with the usage ledger behind them.

The ledger (billing.ledger, in the tenant's schema) is the record: what a period used is the
sum of its entries, and that is what usage shows. The counter (public.usage_counters) is the
cache quota checks read. Both change in the push's own transaction, so they agree unless
something went wrong — which `usage_drift` reports and never repairs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import select, text

from billing import ledger
from billing.models import Subscription, UsageCounter
from billing.periods import prepaying_invoice
from billing.subscriptions import current_subscription
from core.extensions import db


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
    records: int  # the ledger's sum


def current_usage(tenant_id: str) -> Usage:
    """The current period's usage (the ledger's sums) and projected charge (whole KES).
    Read-only."""
    subscription, plan = current_subscription(tenant_id)
    by_day = ledger.daily_totals(tenant_id, subscription.current_period_start)
    used = sum(total for (_, livemode), total in by_day.items() if livemode)
    # A hard-cap plan never bills beyond its price, whatever was used.
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
        test_mode_used=sum(total for (_, livemode), total in by_day.items() if not livemode),
        test_allowance=plan.test_allowance,
        daily=_daily_series(
            by_day, subscription.current_period_start, subscription.current_period_end
        ),
    )


def _daily_series(
    by_day: dict[tuple[date, bool], int], period_start: datetime, period_end: datetime
) -> list[DailyUsage]:
    """Per UTC day of the period, from its first day to today (or to its last day once it is
    over), zeros included."""
    first = period_start.astimezone(UTC).date()
    last = min(datetime.now(UTC), period_end - timedelta(microseconds=1)).astimezone(UTC).date()
    last = max(last, first, *(on for on, _ in by_day))
    return [
        DailyUsage(on, by_day.get((on, True), 0), by_day.get((on, False), 0))
        for on in (first + timedelta(days=n) for n in range((last - first).days + 1))
    ]


def usage_drift(tenant_id: str, period_start: datetime) -> list[UsageDrift]:
    """Compare the period's counters (both modes) with the sums of the tenant's ledger. One
    statement, so one snapshot: a push committing meanwhile cannot look like drift.
    Read-only."""
    rows = db.session.execute(
        text(
            "SELECT mode.livemode, "  # noqa: S608 (a checked, quoted schema)
            "coalesce((SELECT c.used FROM public.usage_counters c WHERE c.tenant_id = :tenant_id "
            "AND c.livemode = mode.livemode AND c.period_start = :period_start), 0) AS counter, "
            "(SELECT coalesce(sum(r.quantity), 0) FROM "
            f"{ledger.ledger_table(tenant_id)} r WHERE r.livemode = mode.livemode "
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


def counted_this_period(tenant_id: str) -> tuple[int, int]:
    """(live, test) pushes counted in the tenant's current period, from its quota counters:
    one platform query, cheap enough for a list of tenants (the ledger lives in each tenant's
    schema). (0, 0) for a tenant without a subscription."""
    used = dict(
        db.session.execute(
            select(UsageCounter.livemode, UsageCounter.used)
            .join(
                Subscription,
                (Subscription.tenant_id == UsageCounter.tenant_id)
                & (Subscription.current_period_start == UsageCounter.period_start),
            )
            .where(UsageCounter.tenant_id == tenant_id)
        ).all()
    )
    return used.get(True, 0), used.get(False, 0)
