"""Invoices: reading them, and paying one by M-Pesa through Lango's own payments.

Paying dogfoods the platform: the push is an ordinary STK push of the billing tenant
(settings.BILLING_TENANT_ID, a normal Lango tenant holding the platform's shortcode), sent
through the collector payments provides (billing.collection), with the invoice id in its
metadata. When that push succeeds, payments records `payment.succeeded` in the billing
tenant's outbox; `settle_mpesa_payment`, billing's subscriber to it, marks the invoice paid
and reinstates a tenant suspended for billing, in its own transaction, exactly once per
event. A paid upgrade invoice switches the tenant to the plan it paid for in that same
transaction (billing.periods.start_paid_upgrade).
"""

from __future__ import annotations

import contextlib
import logging
from datetime import UTC, datetime

from flask import current_app
from redis.exceptions import LockError
from sqlalchemy import select

from billing import collection
from billing.collection import InvoicePaymentUnavailable
from billing.dunning import collected_by_stripe, reinstate_after_payment
from billing.models import Invoice, InvoiceKind, InvoiceStatus, Subscription
from billing.periods import start_paid_upgrade
from billing.ports import InvoiceCollectionRefused
from billing.quota import PlanExcludesLivemode, QuotaExceeded
from core.api import paginate
from core.errors import Conflict, NotFound, ValidationFailed
from core.events import Event
from core.extensions import db
from core.tenancy import require_tenant
from tenants.models import Tenant

logger = logging.getLogger("lango.billing.invoices")

# One pay attempt per invoice at a time: the window from "no push in progress" to "push
# committed" is guarded by this Redis lock; after it, the committed pending push guards.
PAY_LOCK_SECONDS = 60


class InvoiceNotOpen(Conflict):
    code = "invoice_not_open"
    message = "This invoice is not open: it has been paid or voided."


class InvoicePaymentInProgress(Conflict):
    code = "invoice_payment_in_progress"
    message = (
        "An M-Pesa payment for this invoice is already waiting for the customer; "
        "wait for it to finish before trying again."
    )


class InvoiceCollectedByStripe(Conflict):
    code = "invoice_collected_by_stripe"
    message = "This invoice is collected by card through Stripe; it cannot be paid by M-Pesa."


def list_invoices(tenant_id: str, *, limit: int, **cursor) -> dict:
    """The tenant's invoices, newest first (cursor pagination)."""
    statement = select(Invoice).where(Invoice.tenant_id == tenant_id)
    return paginate(statement, Invoice.id, limit=limit, **cursor)


def get_invoice(tenant_id: str, invoice_id: str, *, fresh: bool = False) -> Invoice:
    """Raises NotFound for an unknown id or another tenant's invoice (indistinguishable).
    `fresh` reads the row again even if this session has it already."""
    invoice = db.session.get(Invoice, invoice_id, populate_existing=fresh)
    if invoice is None or invoice.tenant_id != tenant_id:
        raise NotFound("No such invoice.", param="id")
    return invoice


def pay_invoice(tenant_id: str, invoice_id: str, phone_number: str) -> Invoice:
    """Send an STK push for the invoice's total from the platform's own shortcode, and record
    the push on the invoice (in the caller's transaction). The invoice becomes paid when the
    push succeeds (asynchronously). The push itself is committed in the billing tenant
    before this returns, so the caller's transaction is ended on the way (TENANT_SWITCH).

    Raises NotFound; InvoiceNotOpen (409); ValidationFailed when the total is above M-Pesa's
    per-payment limit; InvoicePaymentInProgress (409) while an earlier push is pending;
    InvoicePaymentUnavailable (503) without a billing tenant; payments' DarajaUnavailable.
    """
    _payable_invoice(tenant_id, invoice_id)  # refuse at once what can never be paid
    billing = collection.billing_account()
    lock = current_app.extensions["lango.redis"].lock(
        f"lango:invoice-pay:{invoice_id}", timeout=PAY_LOCK_SECONDS, blocking=False
    )
    if not lock.acquire():
        raise InvoicePaymentInProgress()
    try:
        # Read again under the lock: a payment that just finished or started is seen.
        total = _payable_invoice(tenant_id, invoice_id, fresh=True).total
        earlier_push_id = collection.pending_push_paying(billing, invoice_id)
        if earlier_push_id:
            raise InvoicePaymentInProgress(stk_push_id=earlier_push_id)
        push_id = _send_push(billing, invoice_id, tenant_id, total, phone_number)
    finally:
        # From here on the committed pending push holds off a second payment.
        with contextlib.suppress(LockError):  # expired meanwhile: nothing left to release
            lock.release()
    invoice = db.session.scalars(
        select(Invoice)
        .where(Invoice.id == invoice_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    invoice.mpesa_stk_push_id = push_id
    logger.info(
        "billing.invoice_payment_started",
        extra={"tenant_id": tenant_id, "invoice_id": invoice_id, "stk_push_id": push_id},
    )
    return invoice


def _payable_invoice(tenant_id: str, invoice_id: str, *, fresh: bool = False) -> Invoice:
    invoice = get_invoice(tenant_id, invoice_id, fresh=fresh)
    if invoice.status is not InvoiceStatus.OPEN:
        raise InvoiceNotOpen(invoice_status=invoice.status.value)
    if db.session.scalar(select(collected_by_stripe()).where(Invoice.id == invoice.id)):
        raise InvoiceCollectedByStripe()
    limit = collection.collector().max_amount
    if invoice.total > limit:
        raise ValidationFailed(
            f"This invoice's total ({invoice.total:,} KES) is above M-Pesa's limit of "
            f"{limit:,} KES per payment, and an invoice is paid in one payment; "
            "contact support to pay it another way.",
            code="invoice_total_above_mpesa_limit",
        )
    return invoice


def _send_push(
    billing: collection.BillingAccount,
    invoice_id: str,
    tenant_id: str,
    total: int,
    phone_number: str,
) -> str:
    try:
        return collection.send_push(billing, invoice_id, tenant_id, total, phone_number)
    except (QuotaExceeded, PlanExcludesLivemode, InvoiceCollectionRefused) as error:
        # The platform's own account is misconfigured; not the paying tenant's doing.
        logger.error("billing tenant cannot send pushes", extra={"error": str(error)})
        raise InvoicePaymentUnavailable() from None


# --- settling ----------------------------------------------------------------------------


def settle_mpesa_payment(event: Event) -> None:
    """Subscriber to `payment.succeeded` (billing.init_app): a succeeded push of the billing
    tenant that carries `lango_invoice_id` pays that invoice. Runs in the event's tenant scope
    and its own transaction, once per event (core.outbox); pushes of any other tenant never
    pay an invoice, whatever their metadata says."""
    settings = current_app.extensions["lango.settings"]
    if not settings.BILLING_TENANT_ID or require_tenant().tenant_id != settings.BILLING_TENANT_ID:
        return
    push = event.data["object"]
    invoice_id = (push.get("metadata") or {}).get("lango_invoice_id")
    if not invoice_id or push["status"] != "succeeded":
        return
    mark_invoice_paid(
        invoice_id, amount=push["amount"], livemode=push["livemode"], stk_push_id=push["id"]
    )


def mark_invoice_paid(
    invoice_id: str,
    *,
    amount: int,
    livemode: bool,
    stk_push_id: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Mark an open invoice paid by a payment of `amount` and reinstate its tenant if it was
    suspended for billing, in the caller's transaction; an upgrade invoice also switches the
    tenant to the plan it paid for. A payment that does not match (wrong amount, a test-mode
    payment while the platform takes live ones) or arrives for an invoice no longer open is
    logged for a person to look at, never applied.
    Returns True if this call paid the invoice."""
    # The subscription's row lock first, then the invoice's: the order plan changes take, so
    # a plan change (which may void an upgrade invoice) and this payment run one after the
    # other without deadlocking.
    subscription = db.session.scalars(
        select(Subscription)
        .join(Invoice, Invoice.tenant_id == Subscription.tenant_id)
        .where(Invoice.id == invoice_id)
        .with_for_update(of=Subscription)
        .execution_options(populate_existing=True)
    ).one_or_none()
    invoice = db.session.scalars(
        select(Invoice)
        .where(Invoice.id == invoice_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one_or_none()
    billing_is_live = db.session.scalar(
        select(Tenant.live_enabled).where(
            Tenant.id == current_app.extensions["lango.settings"].BILLING_TENANT_ID
        )
    )
    problem = None
    if invoice is None:
        problem = "no such invoice"
    elif invoice.status is not InvoiceStatus.OPEN:
        problem = f"invoice already {invoice.status.value}; a refund may be due"
    elif amount != invoice.total:
        problem = f"amount {amount} differs from the invoice total {invoice.total}"
    elif billing_is_live and not livemode:
        problem = "a test-mode payment cannot pay an invoice"
    if problem:
        logger.warning(
            "billing.invoice_payment_not_applied",
            extra={"invoice_id": invoice_id, "stk_push_id": stk_push_id, "reason": problem},
        )
        return False
    now = now or datetime.now(UTC)
    invoice.status = InvoiceStatus.PAID
    invoice.paid_at = now
    if stk_push_id:
        invoice.mpesa_stk_push_id = stk_push_id
    db.session.flush()  # reinstating looks at the tenant's open invoices, this one included
    logger.info(
        "billing.invoice_paid",
        extra={
            "tenant_id": invoice.tenant_id,
            "invoice_id": invoice.id,
            "stk_push_id": stk_push_id,
        },
    )
    if invoice.kind is InvoiceKind.UPGRADE and subscription is not None:
        start_paid_upgrade(subscription, invoice, now)
    reinstate_after_payment(invoice.tenant_id, now=now)
    return True
