"""The quota on every STK push: reserve before Daraja is called, release if it never left
(refused, or expired before Daraja acknowledged it), count again if M-Pesa reports on it.

The counter row (public.usage_counters) changes only through one conditional UPDATE —
`used = used + 1 WHERE used < cap` — which PostgreSQL runs under the row's lock, so no two
pushes can both take the last unit: exact under any concurrency, with no read-then-write.
The counter is the cache the check reads; the usage ledger (billing.ledger) is the record:
each reservation appends a count, each release a reversal, in the same transaction as the
push itself, so counter, ledger and push commit (or vanish) together. A released push that
M-Pesa turns out to have handled is counted again even past the cap (it happened):
`count_again`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text

from billing import ledger
from billing.models import Plan, Subscription, SubscriptionStatus
from billing.subscriptions import current_subscription
from core.errors import LangoError, PermissionDenied
from core.extensions import db


class PlanExcludesLivemode(PermissionDenied):
    code = "livemode_not_enabled"


# Live pushes need a subscription that was ever paid and has not ended: not one whose first
# payment never succeeded (incomplete) or that is canceled. An overdue one (past_due) keeps
# working through the grace period; dunning suspends the tenant when that runs out.
_NO_LIVE_STATUSES = {SubscriptionStatus.INCOMPLETE, SubscriptionStatus.CANCELED}


class QuotaExceeded(LangoError):
    status = 402
    type = "quota_error"
    code = "quota_exceeded"


@dataclass(frozen=True)
class Reservation:
    tenant_id: str
    livemode: bool
    period_start: datetime
    used: int


def push_cap(plan: Plan, subscription: Subscription, livemode: bool) -> int | None:
    """How many pushes the period allows in this mode; None = no limit (overage billed)."""
    if not livemode:
        return plan.test_allowance
    if plan.overage_price is None:
        return plan.included_pushes
    if subscription.overage_spending_cap is not None:
        return plan.included_pushes + subscription.overage_spending_cap // plan.overage_price
    return None


def reserve(tenant_id: str, livemode: bool, stk_push_id: str) -> Reservation:
    """Count one push in the caller's transaction (committed with the push), appending its
    count to the usage ledger. Raises QuotaExceeded (402) with plan, limit, used and reset
    time when full."""
    subscription, plan = current_subscription(tenant_id, share_lock=True)
    if livemode and not plan.livemode_allowed:
        raise PlanExcludesLivemode(
            f"The {plan.name} plan is test-mode only; change plan to take live payments.",
            plan=plan.code,
        )
    if livemode and subscription.status in _NO_LIVE_STATUSES:
        raise PlanExcludesLivemode(
            f"Your {plan.name} subscription is {subscription.status.value}: it is not paid "
            "for. Add a working payment method (POST /v1/subscription with `payment_method`) "
            "to take live payments.",
            plan=plan.code,
            subscription_status=subscription.status.value,
        )
    cap = push_cap(plan, subscription, livemode)
    key = {
        "tenant_id": tenant_id,
        "livemode": livemode,
        "period_start": subscription.current_period_start,
    }
    db.session.execute(
        text(
            "INSERT INTO public.usage_counters (tenant_id, livemode, period_start, used) "
            "VALUES (:tenant_id, :livemode, :period_start, 0) ON CONFLICT DO NOTHING"
        ),
        key,
    )
    used = db.session.execute(
        text(
            "UPDATE public.usage_counters SET used = used + 1 "
            "WHERE tenant_id = :tenant_id AND livemode = :livemode "
            "AND period_start = :period_start AND (CAST(:cap AS integer) IS NULL OR used < :cap) "
            "RETURNING used"
        ),
        {**key, "cap": cap},
    ).scalar()
    if used is None:
        mode = "live" if livemode else "test"
        resets_at = subscription.current_period_end.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        raise QuotaExceeded(
            f"The {plan.name} plan's {mode}-mode allowance of {cap} pushes for this period "
            f"is used up; it resets at {resets_at}.",
            plan=plan.code,
            limit=cap,
            used=cap,
            resets_at=resets_at,
        )
    ledger.count(stk_push_id, livemode, subscription.current_period_start)
    return Reservation(tenant_id, livemode, subscription.current_period_start, used)


def release(tenant_id: str, stk_push_id: str) -> bool:
    """Un-count a push that Daraja refused or that never left Lango, in the caller's
    transaction: the ledger gains a reversal (nothing is deleted) and the counter of the
    count's period gives the unit back. Idempotent, also under concurrency: True only the
    first time."""
    reversal = ledger.reverse(stk_push_id)
    if reversal is None:
        return False
    db.session.execute(
        text(
            "UPDATE public.usage_counters SET used = used - 1 WHERE tenant_id = :tenant_id "
            "AND livemode = :livemode AND period_start = :period_start"
        ),
        {
            "tenant_id": tenant_id,
            "livemode": reversal.livemode,
            "period_start": reversal.period_start,
        },
    )
    return True


def count_again(tenant_id: str, livemode: bool, stk_push_id: str) -> bool:
    """Count a push whose reservation was released (it expired before Daraja acknowledged
    it) but that reached Daraja after all — M-Pesa reported an outcome for it, or it was
    paid — in the caller's transaction and the current period, whatever the cap: the push
    already happened. Idempotent, also under concurrency: True only when it counted the
    push (the ledger appends the count once)."""
    subscription, _ = current_subscription(tenant_id)
    if not ledger.count_again(stk_push_id, livemode, subscription.current_period_start):
        return False
    db.session.execute(
        text(
            "INSERT INTO public.usage_counters (tenant_id, livemode, period_start, used) "
            "VALUES (:tenant_id, :livemode, :period_start, 1) ON CONFLICT (tenant_id, livemode, "
            "period_start) DO UPDATE SET used = public.usage_counters.used + 1"
        ),
        {
            "tenant_id": tenant_id,
            "livemode": livemode,
            "period_start": subscription.current_period_start,
        },
    )
    return True
