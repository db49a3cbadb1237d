"""Subscriptions: which plan a tenant is on, its current billing period, and changing plan.

Plan changes take the subscription row's lock (SELECT … FOR UPDATE), so two changes for one
tenant apply one after the other, each seeing the other's result. A downgrade waits for the
period to end (`apply_pending_plan_change`). An upgrade is paid before it applies:
- with Stripe billing on, Stripe charges the card (billing.stripe_subscriptions) and the new
  plan applies at once within the current period (its counters keep counting; the new
  allowance applies to them); a subscription whose payment has not succeeded is `incomplete`
  and live mode stays off;
- without Stripe, Lango issues an `upgrade` invoice for the new plan's first month, due now,
  and the tenant stays on its current plan (quota, rate limit, live mode) until that invoice
  is paid by M-Pesa (billing.periods.start_paid_upgrade). The open upgrade invoice is the
  only record of the plan awaited: a tenant awaits at most one, and any later choice of plan
  voids it. Sign-up on a paid plan without Stripe starts on the free plan, awaiting it.
Whenever the plan changes, the denormalised `tenants.plan` changes in the same transaction.
"""

from __future__ import annotations

import calendar
import enum
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from limits import parse_many
from sqlalchemy import select, update
from sqlalchemy.exc import SQLAlchemyError

from billing.collection import mpesa_payment_status
from billing.models import (
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from billing.stripe_subscriptions import billed_by_stripe, open_in_stripe, use_payment_method
from core.changes import plan_changed
from core.errors import Conflict, ValidationFailed
from core.extensions import db
from core.ids import new_id
from core.plan_limits import PlanLimits
from tenants.models import Tenant

logger = logging.getLogger("lango.billing")

DEFAULT_PLAN = "sandbox"

# How long a process trusts a tenant's plan rate limit it has looked up. A plan change in
# this process forgets it at once; other processes follow within this many seconds.
RATE_LIMIT_CACHE_SECONDS = 10.0
_RATE_LIMIT_CACHE_MAX = 50_000
_rate_limits: dict[str, tuple[float, str | None]] = {}


class UpgradePaymentInProgress(Conflict):
    code = "upgrade_payment_in_progress"
    message = (
        "An M-Pesa payment for the plan you are waiting for is in progress; wait for it to "
        "finish before choosing another plan."
    )


class _Unset(enum.Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET


@dataclass(frozen=True)
class PlanSubscription:
    """A subscription with its plan: serialises like the subscription, plus `plan` and the
    plan awaiting its upgrade invoice's payment (`awaiting_invoice`, None when none)."""

    subscription: Subscription
    plan: Plan
    awaiting_invoice: Invoice | None = None

    @property
    def awaiting_plan_code(self) -> str | None:
        return self.awaiting_invoice.plan_code if self.awaiting_invoice else None

    @property
    def awaiting_invoice_id(self) -> str | None:
        return self.awaiting_invoice.id if self.awaiting_invoice else None

    def __getattr__(self, name: str):
        return getattr(self.subscription, name)


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


def find_plan(code: str) -> Plan | None:
    """The plan with this code, retired or not; None when there is none."""
    return db.session.get(Plan, code)


def list_plans() -> list[Plan]:
    """The plans on offer (active ones), in catalog order."""
    statement = select(Plan).where(Plan.active.is_(True)).order_by(Plan.position, Plan.code)
    return list(db.session.scalars(statement))


def start_subscription(
    tenant_id: str, plan_code: str | None, payment_method: str | None = None
) -> Subscription:
    """Subscribe a new tenant (in the caller's transaction); the period starts now. With
    Stripe configured, a paid plan is opened in Stripe too (billing.stripe_subscriptions);
    without, a paid plan waits for its upgrade invoice on the free plan.
    Raises ValidationFailed for an unknown or retired plan, and Stripe's errors."""
    plan = get_plan(plan_code or DEFAULT_PLAN)
    awaited = None
    if plan.monthly_price > 0 and not billed_by_stripe():
        awaited, plan = plan, get_plan(DEFAULT_PLAN, active_only=False)
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
    open_in_stripe(subscription, plan, payment_method)
    if awaited is not None:
        _issue_upgrade_invoice(subscription, awaited, actor_key_id=None)
    return subscription


def subscribe_new_tenant(tenant, *, payment_method: str | None = None, **_signal_data) -> None:
    """Receiver of tenants' `tenant_created` signal (connected in billing.init_app). The
    tenant's plan is the one it starts on, which is not the chosen one while that awaits payment."""
    tenant.plan = start_subscription(tenant.id, tenant.plan, payment_method).plan_code


def current_subscription(tenant_id: str, *, share_lock: bool = False) -> tuple[Subscription, Plan]:
    """`share_lock` holds the subscription row (FOR SHARE) until the caller's transaction
    ends: pushes counting against a period then never race its close, which locks the row
    FOR UPDATE, while still not blocking one another."""
    statement = (
        select(Subscription, Plan)
        .join(Plan, Plan.code == Subscription.plan_code)
        .where(Subscription.tenant_id == tenant_id)
    )
    if share_lock:
        statement = statement.with_for_update(read=True, of=Subscription)
    row = db.session.execute(statement).one_or_none()
    if row is None:
        raise LookupError(f"tenant {tenant_id} has no subscription")
    return row[0], row[1]


def plan_limits(tenant_id: str) -> PlanLimits:
    """What the tenant's plan allows, for packages below billing (core.plan_limits).
    Raises LookupError for a tenant without a subscription."""
    _, plan = current_subscription(tenant_id)
    return PlanLimits(max_webhook_endpoints=plan.max_webhook_endpoints)


def get_subscription(tenant_id: str) -> PlanSubscription:
    subscription, plan = current_subscription(tenant_id)
    return PlanSubscription(subscription, plan, awaited_upgrade(tenant_id))


def awaited_upgrade(tenant_id: str, *, lock: bool = False) -> Invoice | None:
    """The tenant's open upgrade invoice (the plan waiting for its payment), if any."""
    statement = select(Invoice).where(
        Invoice.tenant_id == tenant_id,
        Invoice.kind == InvoiceKind.UPGRADE,
        Invoice.status == InvoiceStatus.OPEN,
    )
    if lock:
        statement = statement.with_for_update().execution_options(populate_existing=True)
    return db.session.scalars(statement).one_or_none()


def update_subscription(
    tenant_id: str,
    *,
    actor_key_id: str | None,
    plan: str | None = None,
    cancel_at_period_end: bool | None = None,
    overage_spending_cap: int | _Unset | None = UNSET,
    payment_method: str | None = None,
) -> PlanSubscription:
    """Change plan and/or settings, in the caller's transaction, under the subscription's row
    lock. `plan`: a dearer plan applies at once with Stripe, or awaits its upgrade invoice
    without; any other becomes the pending change for period end; the current plan cancels a
    pending or awaited change. `overage_spending_cap` None removes the cap (leave it UNSET to
    keep it). `payment_method` (Stripe) is attached first, so a paid plan chosen in the same
    call is charged with it. Raises ValidationFailed (param `plan`) for an unknown or retired
    plan, changing nothing; UpgradePaymentInProgress (409) when a plan change would void an
    upgrade invoice whose M-Pesa payment is pending; and Stripe's errors."""
    if plan is not None:
        _refuse_while_upgrade_payment_pending(tenant_id)
    subscription = db.session.scalars(
        select(Subscription).where(Subscription.tenant_id == tenant_id).with_for_update()
    ).one()
    if payment_method is not None:
        current = get_plan(subscription.plan_code, active_only=False)
        use_payment_method(subscription, current, payment_method)
    if plan is not None:
        change_plan(subscription, plan, actor_key_id=actor_key_id)
    if cancel_at_period_end is not None:
        subscription.cancel_at_period_end = cancel_at_period_end
    if overage_spending_cap is not UNSET:
        subscription.overage_spending_cap = overage_spending_cap
    subscription.updated_at = datetime.now(UTC)
    db.session.flush()
    forget_rate_limit(tenant_id)
    result = get_subscription(tenant_id)
    logger.info(
        "billing.subscription_updated",
        extra={
            "tenant_id": tenant_id,
            "plan": subscription.plan_code,
            "pending_plan": subscription.pending_plan_code,
            "awaiting_plan": result.awaiting_plan_code,
            "cancel_at_period_end": subscription.cancel_at_period_end,
            "overage_spending_cap": subscription.overage_spending_cap,
            "actor_key_id": actor_key_id,
        },
    )
    return result


def _refuse_while_upgrade_payment_pending(tenant_id: str) -> None:
    """Voiding an upgrade invoice while its M-Pesa prompt waits for the PIN would leave a
    payment that pays nothing. Read before the row lock is taken: the push lives in the
    billing tenant's schema, and reading it ends the transaction."""
    awaiting = awaited_upgrade(tenant_id)
    if awaiting is None or awaiting.mpesa_stk_push_id is None:
        return
    invoice_id, push_id = awaiting.id, awaiting.mpesa_stk_push_id
    if mpesa_payment_status(invoice_id, push_id) == "pending":
        raise UpgradePaymentInProgress(stk_push_id=push_id)


def change_plan(subscription: Subscription, plan_code: str, *, actor_key_id: str | None) -> None:
    """Apply a tenant's choice of plan to its subscription, in the caller's transaction, which
    must hold the subscription's row lock. The latest choice wins: it cancels a pending
    downgrade and voids an awaited upgrade's invoice, unless it chooses that same plan again.
    Raises ValidationFailed for an unknown or retired plan."""
    chosen = get_plan(plan_code)
    current = get_plan(subscription.plan_code, active_only=False)
    awaiting = awaited_upgrade(subscription.tenant_id, lock=True)
    if awaiting is not None and awaiting.plan_code == chosen.code:
        subscription.pending_plan_code = None
        return  # already waiting for this plan's payment
    if awaiting is not None:
        _void_upgrade_invoice(awaiting, actor_key_id=actor_key_id)
    if chosen.code == current.code:
        if subscription.pending_plan_code is not None:
            logger.info(
                "billing.plan_change_cancelled",
                extra={
                    "tenant_id": subscription.tenant_id,
                    "plan": current.code,
                    "cancelled_plan": subscription.pending_plan_code,
                    "actor_key_id": actor_key_id,
                },
            )
        subscription.pending_plan_code = None
    elif chosen.monthly_price > current.monthly_price and billed_by_stripe():
        _switch_plan(subscription, current, chosen, actor_key_id=actor_key_id)
    elif chosen.monthly_price > current.monthly_price:
        subscription.pending_plan_code = None
        _issue_upgrade_invoice(subscription, chosen, actor_key_id=actor_key_id)
    else:
        # Not dearer: the tenant keeps what this period's fee paid for until it ends.
        subscription.pending_plan_code = chosen.code
        logger.info(
            "billing.plan_change_scheduled",
            extra={
                "tenant_id": subscription.tenant_id,
                "from_plan": current.code,
                "to_plan": chosen.code,
                "effective_at": subscription.current_period_end.isoformat(),
                "actor_key_id": actor_key_id,
            },
        )


def _issue_upgrade_invoice(
    subscription: Subscription, plan: Plan, *, actor_key_id: str | None
) -> Invoice:
    """The invoice for `plan`'s first month, due now; its period is the month it would buy
    if paid now (payment sets the real one)."""
    now = datetime.now(UTC)
    invoice = Invoice(
        id=new_id("inv"),
        tenant_id=subscription.tenant_id,
        kind=InvoiceKind.UPGRADE,
        plan_code=plan.code,
        period_start=now,
        period_end=add_months(now, 1),
        base_fee=plan.monthly_price,
        included_pushes=plan.included_pushes,
        used_pushes=0,
        overage_pushes=0,
        overage_amount=0,
        total=plan.monthly_price,
        status=InvoiceStatus.OPEN,
        lines=[
            {
                "type": "base_fee",
                "description": f"{plan.name} plan, the first month from payment",
                "quantity": 1,
                "unit_amount": plan.monthly_price,
                "amount": plan.monthly_price,
            }
        ],
        due_at=now,
        created_at=now,
    )
    db.session.add(invoice)
    db.session.flush()
    logger.info(
        "billing.plan_change_awaiting_payment",
        extra={
            "tenant_id": subscription.tenant_id,
            "from_plan": subscription.plan_code,
            "to_plan": plan.code,
            "invoice_id": invoice.id,
            "actor_key_id": actor_key_id,
        },
    )
    return invoice


def _void_upgrade_invoice(invoice: Invoice, *, actor_key_id: str | None) -> None:
    invoice.status = InvoiceStatus.VOID
    db.session.flush()
    logger.info(
        "billing.plan_change_cancelled",
        extra={
            "tenant_id": invoice.tenant_id,
            "cancelled_plan": invoice.plan_code,
            "invoice_id": invoice.id,
            "actor_key_id": actor_key_id,
        },
    )


def switch_to_paid_plan(subscription: Subscription, plan: Plan) -> None:
    """Switch to the plan an upgrade invoice paid for (billing.periods.start_paid_upgrade),
    in the caller's transaction, which holds the row lock."""
    current = get_plan(subscription.plan_code, active_only=False)
    _switch_plan(subscription, current, plan, actor_key_id=None)
    subscription.status = SubscriptionStatus.ACTIVE
    forget_rate_limit(subscription.tenant_id)


def apply_pending_plan_change(subscription: Subscription) -> Plan | None:
    """Switch the subscription to its pending (downgrade) plan; for period close, in its
    transaction (the caller commits). Takes the row lock itself. Idempotent: returns the new
    plan, or None when no change was pending. A plan retired meanwhile still applies: the
    tenant chose it."""
    db.session.flush()
    db.session.refresh(subscription, with_for_update=True)
    if subscription.pending_plan_code is None:
        return None
    current = get_plan(subscription.plan_code, active_only=False)
    pending = get_plan(subscription.pending_plan_code, active_only=False)
    _switch_plan(subscription, current, pending, actor_key_id=None)
    forget_rate_limit(subscription.tenant_id)
    return pending


def _switch_plan(
    subscription: Subscription, current: Plan, new: Plan, *, actor_key_id: str | None
) -> None:
    subscription.plan_code = new.code
    subscription.pending_plan_code = None
    subscription.updated_at = datetime.now(UTC)
    db.session.execute(
        update(Tenant).where(Tenant.id == subscription.tenant_id).values(plan=new.code)
    )
    plan_changed.send(subscription, from_plan=current, to_plan=new)
    # compliance audits the change through `plan_changed`; this line is for operators' logs.
    logger.info(
        "billing.plan_changed",
        extra={
            "tenant_id": subscription.tenant_id,
            "from_plan": current.code,
            "to_plan": new.code,
            "actor_key_id": actor_key_id,
        },
    )


# --- rate limits -------------------------------------------------------------------------


def plan_rate_limit(tenant_id: str) -> str | None:
    """The API rate limit of the tenant's plan, shared by all its keys (Flask-Limiter
    notation), or None when it cannot be told (no subscription, an unparseable limit, the
    database down): the caller then falls back to its default. Cached in-process for
    RATE_LIMIT_CACHE_SECONDS."""
    now = time.monotonic()
    cached = _rate_limits.get(tenant_id)
    if cached is not None and cached[0] > now:
        return cached[1]
    limit = _load_rate_limit(tenant_id)
    if len(_rate_limits) >= _RATE_LIMIT_CACHE_MAX:
        _rate_limits.clear()
    _rate_limits[tenant_id] = (now + RATE_LIMIT_CACHE_SECONDS, limit)
    return limit


def forget_rate_limit(tenant_id: str | None = None) -> None:
    """Drop the cached rate limit of one tenant (all tenants when None)."""
    if tenant_id is None:
        _rate_limits.clear()
    else:
        _rate_limits.pop(tenant_id, None)


def _load_rate_limit(tenant_id: str) -> str | None:
    # A connection of its own: the request's session stays untouched until its view runs.
    statement = (
        select(Plan.rate_limit)
        .join(Subscription, Subscription.plan_code == Plan.code)
        .where(Subscription.tenant_id == tenant_id)
    )
    try:
        with db.engine.connect() as connection:
            limit = connection.execute(statement).scalar()
    except SQLAlchemyError:
        logger.warning("plan rate limit unavailable", extra={"tenant_id": tenant_id})
        return None
    if limit is None:
        return None
    try:
        parse_many(limit)
    except ValueError:
        logger.error("plan has an invalid rate limit", extra={"rate_limit": limit})
        return None
    return limit
