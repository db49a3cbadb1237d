"""Period close: when a subscription's period ends, bill it and open the next one.

Run by the scheduler (billing.jobs.close_billing_periods). For each subscription whose
`current_period_end` has passed, one transaction, holding the subscription's row lock:
reads the period's live push count (the sum of its usage ledger), writes the invoice,
applies a pending plan change or a cancellation, and advances the period. Safe to run twice
and concurrently: a second closer waits for the lock, then sees the period already advanced
and does nothing; the unique (tenant_id, period_start) on period invoices backs that up.

A paid upgrade invoice (billing.subscriptions) ends the current period early, at the moment
it is paid: that period is billed its fee pro rata, and the new plan's period starts then.
Its fee was the upgrade invoice, so when that period closes, its invoice leaves the fee out
(overage is still billed): nothing is charged twice.

Overage then goes to Stripe (when configured) after the invoice has committed, under the
invoice's row lock and once only: the item id is stored on the invoice and a retried close
skips an invoice that has one, so localstripe (which ignores Idempotency-Key) never sees a
second item either. Stripe's own idempotency key covers a crash between its answer and our
commit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert

from billing import ledger, subscriptions
from billing import stripe_gateway as stripe_api
from billing.models import (
    Invoice,
    InvoiceKind,
    InvoiceStatus,
    Plan,
    Subscription,
    SubscriptionStatus,
)
from core.changes import plan_changed
from core.extensions import db
from core.ids import new_id
from core.unit_of_work import tenant_unit_of_work, unit_of_work
from tenants.models import Tenant

logger = logging.getLogger("lango.billing.periods")

# A scheduler that was down for months catches up at most this many periods per run.
MAX_PERIODS_PER_RUN = 12


@dataclass
class CloseReport:
    closed: list[str] = field(default_factory=list)  # invoice ids written
    stripe_items: int = 0
    stripe_errors: int = 0


def close_due_periods(now: datetime | None = None) -> CloseReport:
    """Close every period that has ended by `now` (default: the current time), each in its
    own unit of work (a period's invoice commits before its overage goes to Stripe), then
    hand overage to Stripe, one invoice per unit of work (a failure is counted, and retried
    by the next run)."""
    now = now or datetime.now(UTC)
    report = CloseReport()
    with unit_of_work():
        tenant_ids = db.session.scalars(
            select(Subscription.tenant_id).where(Subscription.current_period_end <= now)
        ).all()
    for tenant_id in tenant_ids:
        for _ in range(MAX_PERIODS_PER_RUN):
            with tenant_unit_of_work(tenant_id):
                invoice_id = close_period(tenant_id, now=now)
            if invoice_id is None:
                break
            report.closed.append(invoice_id)
    # Also retries overage that an earlier run could not hand to Stripe.
    with unit_of_work():
        awaiting_stripe = _invoices_awaiting_stripe()
    for invoice_id in awaiting_stripe:
        try:
            with unit_of_work():
                added = add_overage_to_stripe(invoice_id)
        except Exception:
            report.stripe_errors += 1
            logger.exception("stripe overage item failed", extra={"invoice_id": invoice_id})
            continue
        if added:
            report.stripe_items += 1
    return report


def close_period(tenant_id: str, *, now: datetime | None = None) -> str | None:
    """Close the tenant's current period if it has ended, in the caller's transaction: write
    its invoice, apply the period-end plan change or cancellation, open the next period.
    Idempotent and safe under concurrent callers (the subscription's row lock, held until the
    caller commits). Returns the invoice id, or None when the period had not ended (or
    another closer got there first)."""
    now = now or datetime.now(UTC)
    subscription = db.session.scalars(
        select(Subscription)
        .where(Subscription.tenant_id == tenant_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    if subscription is None or subscription.current_period_end > now:
        return None
    return _close_ended_period(subscription, now)


def _close_ended_period(subscription: Subscription, now: datetime) -> str:
    plan = db.session.get(Plan, subscription.plan_code)
    invoice_id = _write_invoice(subscription, plan, now)
    _apply_period_end_changes(subscription, plan)
    subscription.current_period_start = subscription.current_period_end
    subscription.current_period_end = subscriptions.add_months(subscription.current_period_end, 1)
    subscription.updated_at = now
    logger.info(
        "billing.period_closed",
        extra={"tenant_id": subscription.tenant_id, "invoice_id": invoice_id, "plan": plan.code},
    )
    return invoice_id


def start_paid_upgrade(subscription: Subscription, invoice: Invoice, now: datetime) -> None:
    """An upgrade invoice has just been paid (billing.invoices.mark_invoice_paid, in its
    transaction, which holds the subscription's row lock and then the invoice's): close the
    current period now (periods that ended meanwhile first), switch to the plan paid for, and
    open its period from now; the invoice records that period as paid."""
    for _ in range(MAX_PERIODS_PER_RUN):
        if subscription.current_period_end > now:
            break
        _close_ended_period(subscription, now)
    if subscription.current_period_start < now < subscription.current_period_end:
        plan = db.session.get(Plan, subscription.plan_code)
        subscription.current_period_end = now  # cut short: billed pro rata
        _write_invoice(subscription, plan, now)
    subscriptions.switch_to_paid_plan(
        subscription, subscriptions.get_plan(invoice.plan_code, active_only=False)
    )
    subscription.current_period_start = now
    subscription.current_period_end = subscriptions.add_months(now, 1)
    subscription.updated_at = now
    invoice.period_start = subscription.current_period_start
    invoice.period_end = subscription.current_period_end
    logger.info(
        "billing.upgrade_paid",
        extra={
            "tenant_id": subscription.tenant_id,
            "invoice_id": invoice.id,
            "plan": invoice.plan_code,
        },
    )


def live_pushes_used(tenant_id: str, period_start: datetime) -> int:
    """The period's live pushes: the sum of the tenant's usage ledger there."""
    return ledger.period_totals(tenant_id, period_start).get(True, 0)


def invoice_amounts(plan: Plan, used: int, base_fee: int | None = None) -> dict:
    """What a period on `plan` with `used` live pushes costs; `base_fee` when it is not the
    plan's monthly price (a period cut short, or paid in advance). A hard-cap plan (no
    overage price) never bills overage."""
    base_fee = plan.monthly_price if base_fee is None else base_fee
    overage = max(0, used - plan.included_pushes) if plan.overage_price is not None else 0
    overage_amount = overage * (plan.overage_price or 0)
    return {
        "base_fee": base_fee,
        "included_pushes": plan.included_pushes,
        "used_pushes": used,
        "overage_pushes": overage,
        "overage_amount": overage_amount,
        "total": base_fee + overage_amount,
    }


def period_base_fee(plan: Plan, start: datetime, end: datetime) -> int:
    """The plan's fee for [start, end): the monthly price for a whole period, pro rata (whole
    KES, rounded down) for one cut short by a paid upgrade."""
    whole = subscriptions.add_months(start, 1) - start
    return min(plan.monthly_price, plan.monthly_price * (end - start) // whole)


def prepaying_invoice(tenant_id: str, period_start: datetime) -> str | None:
    """The paid upgrade invoice that paid this period's fee in advance, if any."""
    return db.session.scalar(
        select(Invoice.id).where(
            Invoice.tenant_id == tenant_id,
            Invoice.kind == InvoiceKind.UPGRADE,
            Invoice.status == InvoiceStatus.PAID,
            Invoice.period_start == period_start,
        )
    )


def _write_invoice(subscription: Subscription, plan: Plan, now: datetime) -> str:
    start, end = subscription.current_period_start, subscription.current_period_end
    period = f"{start.astimezone(UTC):%Y-%m-%d} to {end.astimezone(UTC):%Y-%m-%d}"
    prepaid_by = prepaying_invoice(subscription.tenant_id, start)
    if prepaid_by:
        base_fee, description = 0, f"{plan.name} plan, {period}: paid in advance ({prepaid_by})"
    else:
        base_fee, description = period_base_fee(plan, start, end), f"{plan.name} plan, {period}"
    amounts = invoice_amounts(plan, live_pushes_used(subscription.tenant_id, start), base_fee)
    lines = [
        {
            "type": "base_fee",
            "description": description,
            "quantity": 1,
            "unit_amount": base_fee,
            "amount": base_fee,
        }
    ]
    if amounts["overage_pushes"]:
        lines.append(
            {
                "type": "overage",
                "description": f"{amounts['overage_pushes']} live pushes beyond the "
                f"{plan.included_pushes} included",
                "quantity": amounts["overage_pushes"],
                "unit_amount": plan.overage_price,
                "amount": amounts["overage_amount"],
            }
        )
    settled = amounts["total"] == 0
    invoice_id = db.session.scalar(
        insert(Invoice)
        .values(
            id=new_id("inv"),
            tenant_id=subscription.tenant_id,
            kind=InvoiceKind.PERIOD,
            plan_code=plan.code,
            period_start=start,
            period_end=end,
            **amounts,
            status=InvoiceStatus.PAID if settled else InvoiceStatus.OPEN,
            lines=lines,
            due_at=end,
            paid_at=now if settled else None,
            created_at=now,
        )
        .on_conflict_do_nothing(
            index_elements=[Invoice.tenant_id, Invoice.period_start],
            # A literal, not a bound parameter: once psycopg prepares the statement (its fifth
            # run on a connection), PostgreSQL can no longer match a parameter to the
            # partial index's predicate ("no unique or exclusion constraint matching").
            index_where=text(f"kind = '{InvoiceKind.PERIOD.value}'"),
        )
        .returning(Invoice.id)
    )
    if invoice_id is None:  # written before (e.g. by hand): keep it, still advance
        invoice_id = db.session.scalar(
            select(Invoice.id).where(
                Invoice.tenant_id == subscription.tenant_id,
                Invoice.kind == InvoiceKind.PERIOD,
                Invoice.period_start == start,
            )
        )
    return invoice_id


def _apply_period_end_changes(subscription: Subscription, plan: Plan) -> None:
    """A cancellation moves the tenant to the free plan (no base fee from now on, no live
    mode); otherwise a pending downgrade takes effect. Both wait for the period's end: now."""
    if not subscription.cancel_at_period_end:
        subscriptions.apply_pending_plan_change(subscription)
        return
    free_plan = subscriptions.get_plan(subscriptions.DEFAULT_PLAN, active_only=False)
    subscription.plan_code = free_plan.code
    subscription.pending_plan_code = None
    subscription.cancel_at_period_end = False
    db.session.execute(
        update(Tenant).where(Tenant.id == subscription.tenant_id).values(plan=free_plan.code)
    )
    # Receivers follow the switch (Stripe stops charging); the status is set after them.
    plan_changed.send(subscription, from_plan=plan, to_plan=free_plan)
    subscription.status = SubscriptionStatus.CANCELED
    subscriptions.forget_rate_limit(subscription.tenant_id)
    logger.info(
        "billing.subscription_canceled",
        extra={"tenant_id": subscription.tenant_id, "from_plan": plan.code},
    )


# --- Stripe overage --------------------------------------------------------------------


def stripe_gateway():
    """The Stripe gateway module when Stripe is configured, else None (billing then runs on
    Lango's own invoices alone)."""
    return stripe_api if stripe_api.configured() else None


def overage_idempotency_key(invoice: Invoice) -> str:
    return f"overage-{invoice.tenant_id}-{invoice.period_start.astimezone(UTC).isoformat()}"


def add_overage_to_stripe(invoice_id: str) -> bool:
    """Add the invoice's overage to the tenant's next Stripe invoice, once, in the caller's
    transaction, which must commit right after: it holds the invoice's row lock across the
    Stripe call, so concurrent closers cannot both add it, and then stores the item's id.
    Returns True if this call added the item; raises whatever the gateway raises."""
    gateway = stripe_gateway()
    if gateway is None:
        return False
    invoice = db.session.scalars(
        select(Invoice)
        .where(Invoice.id == invoice_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    customer_id = db.session.scalar(
        select(Subscription.stripe_customer_id).where(Subscription.tenant_id == invoice.tenant_id)
    )
    # Paid already (by M-Pesa) or voided: charging the card too would bill twice.
    if (
        invoice.stripe_overage_item_id
        or invoice.status is not InvoiceStatus.OPEN
        or invoice.overage_amount <= 0
        or not customer_id
    ):
        return False
    item = gateway.add_invoice_item(
        customer_id,
        invoice.overage_amount,
        _overage_description(invoice),
        idempotency_key=overage_idempotency_key(invoice),
    )
    invoice.stripe_overage_item_id = _item_id(item)
    logger.info(
        "billing.stripe_overage_added",
        extra={"invoice_id": invoice.id, "stripe_item_id": invoice.stripe_overage_item_id},
    )
    return True


def _overage_description(invoice: Invoice) -> str:
    return (
        f"Lango overage: {invoice.overage_pushes} live pushes, "
        f"{invoice.period_start.astimezone(UTC):%Y-%m-%d} to "
        f"{invoice.period_end.astimezone(UTC):%Y-%m-%d}"
    )


def _item_id(item) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        return item["id"]
    return item.id


def _invoices_awaiting_stripe() -> list[str]:
    if stripe_gateway() is None:
        return []
    ids = db.session.scalars(
        select(Invoice.id)
        .join(Subscription, Subscription.tenant_id == Invoice.tenant_id)
        .where(
            Invoice.overage_amount > 0,
            Invoice.stripe_overage_item_id.is_(None),
            Invoice.status == InvoiceStatus.OPEN,
            Subscription.stripe_customer_id.is_not(None),
        )
        .order_by(Invoice.id)
        .limit(500)
    ).all()
    return list(ids)
