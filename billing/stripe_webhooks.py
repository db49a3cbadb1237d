"""Stripe's news, inbound: the events Stripe posts to /callbacks/stripe, verified, recorded
and applied once.

Each event is recorded in public.stripe_events by id in the same transaction as its
effects, so a redelivery (Stripe delivers at least once, and retries) finds its id and is
skipped, and two copies arriving together queue on the id's unique index. The row says how
the event was handled: `applied`, `ignored` (a type Lango does not act on, or about no
current Lango subscription) or `failed` (its effects undone in a savepoint, the failure
committed at a named checkpoint; Stripe's retry then applies it).

Stripe's subscription status, plan and cancel-at-period-end are mirrored onto Lango's
subscription; Stripe's billing periods are not: Lango's own clock drives periods (quota
counters are keyed by them, and a Stripe period a few seconds off would reset a counter).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert

from billing import dunning, stripe_gateway
from billing.models import Invoice, InvoiceStatus, Plan, StripeEvent, Subscription
from billing.models import SubscriptionStatus as Status
from billing.subscriptions import forget_rate_limit
from core.errors import ValidationFailed
from core.extensions import db
from core.unit_of_work import Checkpoint, checkpoint
from tenants.models import Tenant

logger = logging.getLogger("lango.billing.stripe_webhooks")

APPLIED, IGNORED, FAILED = "applied", "ignored", "failed"

Outcome = tuple[str, str | None]  # (status, detail)


@dataclass(frozen=True)
class EventReceipt:
    id: str
    type: str
    status: str
    duplicate: bool


def receive_event(payload: bytes, signature: str | None) -> EventReceipt:
    """Verify, record and apply one webhook delivery, in the caller's transaction.
    Idempotent per event id: a replay returns the first delivery's status with `duplicate`
    true and changes nothing. Raises StripeSignatureInvalid (400); if applying fails the
    event is recorded `failed` (committed: STRIPE_EVENT_FAILED) and the error re-raised
    (500), so Stripe retries it."""
    event = stripe_gateway.construct_event(payload, signature)
    event_id, event_type = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not isinstance(event_type, str):
        raise ValidationFailed("The payload is not a Stripe event.", code="stripe_event_invalid")
    if not _claim(event):
        status = db.session.scalar(select(StripeEvent.status).where(StripeEvent.id == event_id))
        return EventReceipt(event_id, event_type, status, duplicate=True)
    handler = _HANDLERS.get(event_type)
    try:
        # A savepoint: a handler that raises leaves none of its work, only the claim.
        with db.session.begin_nested():
            if handler is None:
                status, detail = IGNORED, "Lango does not act on this event type"
            else:
                status, detail = handler(event["data"]["object"])
    except Exception as error:
        _record_status(event_id, FAILED, f"{type(error).__name__}: {error}")
        checkpoint(Checkpoint.STRIPE_EVENT_FAILED)
        logger.error("billing.stripe_event_failed", extra={"stripe_event_id": event_id})
        raise
    _record_status(event_id, status, detail)
    logger.info(
        "billing.stripe_event",
        extra={"stripe_event_id": event_id, "type": event_type, "status": status, "detail": detail},
    )
    return EventReceipt(event_id, event_type, status, duplicate=False)


def _claim(event: dict) -> bool:
    """Record the event as received, holding its row until the caller's transaction ends;
    False when it was handled before. A `failed` one is claimed again: this delivery is its
    retry."""
    statement = (
        insert(StripeEvent)
        .values(
            id=event["id"],
            type=event["type"],
            payload=event,
            status="received",
            received_at=datetime.now(UTC),
        )
        .on_conflict_do_update(
            index_elements=[StripeEvent.id],
            set_={"status": "received", "detail": None},
            where=StripeEvent.status == FAILED,
        )
        .returning(StripeEvent.id)
    )
    return db.session.execute(statement).scalar() is not None


def _record_status(event_id: str, status: str, detail: str | None) -> None:
    db.session.execute(
        update(StripeEvent)
        .where(StripeEvent.id == event_id)
        .values(status=status, detail=detail and detail[:255])
    )


# --- handlers: one per event type, each given the event's object ----------------------


def invoice_payment_succeeded(stripe_invoice: dict) -> Outcome:
    """The invoice is paid: so is Lango's invoice it carries, the subscription is active, and
    a tenant suspended for billing that now owes nothing overdue is reinstated."""
    subscription = _subscription_of_customer(stripe_invoice.get("customer"))
    if subscription is None:
        return IGNORED, f"no Lango subscription for customer {stripe_invoice.get('customer')}"
    notes = []
    invoice = _lango_invoice(subscription.tenant_id, stripe_invoice)
    if invoice is not None and invoice.status is InvoiceStatus.OPEN:
        invoice.status = InvoiceStatus.PAID
        invoice.paid_at = datetime.now(UTC)
        notes.append(f"invoice {invoice.id} paid")
    if _is_current(subscription, _subscription_of_invoice(stripe_invoice)) and (
        subscription.status is not Status.CANCELED
    ):
        _set_status(subscription, Status.ACTIVE, notes)
    db.session.flush()  # reinstating looks at the tenant's open invoices
    if dunning.reinstate_after_payment(subscription.tenant_id):
        notes.append("tenant reinstated")
    return APPLIED, "; ".join(notes) or None


def invoice_payment_failed(stripe_invoice: dict) -> Outcome:
    """A charge failed: the subscription is past due, and if the invoice has been unpaid
    past the grace period since it fell due, the tenant is suspended for billing."""
    subscription = _subscription_of_customer(stripe_invoice.get("customer"))
    if subscription is None:
        return IGNORED, f"no Lango subscription for customer {stripe_invoice.get('customer')}"
    notes = []
    if _is_current(subscription, _subscription_of_invoice(stripe_invoice)) and (
        subscription.status in (Status.ACTIVE, Status.TRIALING)
    ):
        _set_status(subscription, Status.PAST_DUE, notes)
    invoice = _lango_invoice(subscription.tenant_id, stripe_invoice)
    if invoice is not None and invoice.status is not InvoiceStatus.OPEN:
        notes.append(f"invoice {invoice.id} is {invoice.status.value}: no dunning")
        return APPLIED, "; ".join(notes)
    due_at = invoice.due_at if invoice is not None else _stripe_due_at(stripe_invoice)
    if due_at <= dunning.grace_cutoff() and dunning.suspend_for_billing(
        subscription.tenant_id,
        reason_detail=f"Stripe invoice {stripe_invoice.get('id')} unpaid past grace",
    ):
        notes.append("tenant suspended")
    return APPLIED, "; ".join(notes) or None


def customer_subscription_updated(stripe_subscription: dict) -> Outcome:
    """Mirror Stripe's status, plan and cancel-at-period-end."""
    subscription = _subscription_by_stripe_id(stripe_subscription.get("id"))
    if subscription is None:
        return IGNORED, f"{stripe_subscription.get('id')} is no current Lango subscription"
    notes = []
    _set_status(
        subscription, stripe_gateway.subscription_status(stripe_subscription["status"]), notes
    )
    subscription.cancel_at_period_end = bool(stripe_subscription.get("cancel_at_period_end"))
    plan = _lango_plan(stripe_subscription)
    if plan is not None and plan.code != subscription.plan_code:
        # Changed in Stripe (its dashboard): Lango follows.
        notes.append(f"plan {subscription.plan_code} → {plan.code}")
        subscription.plan_code = plan.code
        if subscription.pending_plan_code == plan.code:
            subscription.pending_plan_code = None
        db.session.execute(
            update(Tenant).where(Tenant.id == subscription.tenant_id).values(plan=plan.code)
        )
        forget_rate_limit(subscription.tenant_id)
    subscription.updated_at = datetime.now(UTC)
    return APPLIED, "; ".join(notes) or None


def customer_subscription_deleted(stripe_subscription: dict) -> Outcome:
    subscription = _subscription_by_stripe_id(stripe_subscription.get("id"))
    if subscription is None:
        return IGNORED, f"{stripe_subscription.get('id')} is no current Lango subscription"
    notes: list[str] = []
    _set_status(subscription, Status.CANCELED, notes)
    return APPLIED, "; ".join(notes) or None


_HANDLERS: dict[str, Callable[[dict], Outcome]] = {
    "invoice.payment_succeeded": invoice_payment_succeeded,
    "invoice.payment_failed": invoice_payment_failed,
    "customer.subscription.updated": customer_subscription_updated,
    "customer.subscription.deleted": customer_subscription_deleted,
}


# --- reading Stripe's objects ----------------------------------------------------------


def _subscription_of_customer(customer_id: Any) -> Subscription | None:
    if not isinstance(customer_id, str):
        return None
    return db.session.scalars(
        select(Subscription).where(Subscription.stripe_customer_id == customer_id).with_for_update()
    ).one_or_none()


def _subscription_by_stripe_id(stripe_subscription_id: Any) -> Subscription | None:
    """Only the tenant's current Stripe subscription: news of one Lango replaced (an
    incomplete one, say) must not touch the tenant."""
    if not isinstance(stripe_subscription_id, str):
        return None
    return db.session.scalars(
        select(Subscription)
        .where(Subscription.stripe_subscription_id == stripe_subscription_id)
        .with_for_update()
    ).one_or_none()


def _subscription_of_invoice(stripe_invoice: dict) -> str | None:
    # Older API versions (and localstripe) name it at the top; newer ones under `parent`.
    parent = (stripe_invoice.get("parent") or {}).get("subscription_details") or {}
    return stripe_invoice.get("subscription") or parent.get("subscription")


def _is_current(subscription: Subscription, stripe_subscription_id: str | None) -> bool:
    return (
        stripe_subscription_id is not None
        and stripe_subscription_id == subscription.stripe_subscription_id
    )


def _lango_invoice(tenant_id: str, stripe_invoice: dict) -> Invoice | None:
    """Lango's invoice that this Stripe invoice collects: the one linked to it, or the one
    whose overage item it carries (linked now)."""
    stripe_invoice_id = stripe_invoice.get("id")
    invoice = db.session.scalars(
        select(Invoice)
        .where(Invoice.tenant_id == tenant_id, Invoice.stripe_invoice_id == stripe_invoice_id)
        .with_for_update()
    ).first()
    if invoice is not None:
        return invoice
    item_ids = [_invoice_item_of_line(line) for line in _lines(stripe_invoice)]
    item_ids = [item_id for item_id in item_ids if item_id]
    if not item_ids:
        return None
    invoice = db.session.scalars(
        select(Invoice)
        .where(Invoice.tenant_id == tenant_id, Invoice.stripe_overage_item_id.in_(item_ids))
        .with_for_update()
    ).first()
    if invoice is not None and invoice.stripe_invoice_id is None:
        invoice.stripe_invoice_id = stripe_invoice_id
    return invoice


def _lines(stripe_invoice: dict) -> list[dict]:
    return ((stripe_invoice.get("lines") or {}).get("data")) or []


def _invoice_item_of_line(line: dict) -> str | None:
    parent = (line.get("parent") or {}).get("invoice_item_details") or {}
    return line.get("invoice_item") or parent.get("invoice_item")


def _stripe_due_at(stripe_invoice: dict) -> datetime:
    """When a Stripe invoice Lango has no record of fell due: its due date, else (charged
    automatically) when it was finalized or created."""
    transitions = stripe_invoice.get("status_transitions") or {}
    moment = (
        stripe_invoice.get("due_date")
        or transitions.get("finalized_at")
        or stripe_invoice.get("created")
    )
    return datetime.fromtimestamp(int(moment), UTC) if moment else datetime.now(UTC)


def _lango_plan(stripe_subscription: dict) -> Plan | None:
    items = (stripe_subscription.get("items") or {}).get("data") or []
    stripe_plan = stripe_subscription.get("plan") or (items[0].get("plan") if items else None)
    if not stripe_plan:
        return None
    code = (stripe_plan.get("metadata") or {}).get("plan")
    if code:
        return db.session.get(Plan, code)
    return db.session.scalars(
        select(Plan).where(Plan.stripe_plan_id == stripe_plan.get("id"))
    ).first()


def _set_status(subscription: Subscription, status: Status, notes: list[str]) -> None:
    if subscription.status is not status:
        notes.append(f"subscription {subscription.status.value} → {status.value}")
        subscription.status = status
        subscription.updated_at = datetime.now(UTC)
