"""Invoices: reading them, and paying one by M-Pesa through Lango's own payments.

Paying dogfoods the platform: the push is an ordinary STK push of the billing tenant
(settings.BILLING_TENANT_ID, a normal Lango tenant holding the platform's shortcode), with
the invoice id in its metadata. When that push succeeds, `settle_invoice_payment` — a
receiver of payments' `push_finished` signal, run inside the transaction that makes the push
final — marks the invoice paid and reinstates a tenant suspended for billing, so the push,
the invoice and the tenant change together or not at all. A paid upgrade invoice switches the
tenant to the plan it paid for in that same transaction (billing.periods.start_paid_upgrade).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import current_app
from redis.exceptions import LockError
from sqlalchemy import select

from billing.dunning import collected_by_stripe, reinstate_after_payment
from billing.models import Invoice, InvoiceKind, InvoiceStatus, Subscription
from billing.periods import start_paid_upgrade
from billing.quota import PlanExcludesLivemode, QuotaExceeded
from core.api import paginate
from core.errors import Conflict, NotFound, ServiceUnavailable, ValidationFailed
from core.extensions import db
from core.tenancy import tenant_scope
from payments import service as payments
from payments.models import PushStatus, StkPush
from payments.schemas import MAX_AMOUNT
from tenants.models import Tenant
from tenants.service import Caller

logger = logging.getLogger("lango.billing.invoices")

# One pay attempt per invoice at a time: the window from "no push in progress" to "push id
# stored" is guarded by this Redis lock; after it, the stored pending push guards.
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


class InvoicePaymentUnavailable(ServiceUnavailable):
    code = "invoice_payment_unavailable"
    message = "Paying invoices by M-Pesa is not available on this deployment right now."


def list_invoices(tenant_id: str, *, limit: int, **cursor) -> dict:
    """The tenant's invoices, newest first (cursor pagination)."""
    statement = select(Invoice).where(Invoice.tenant_id == tenant_id)
    return paginate(statement, Invoice.id, limit=limit, **cursor)


def get_invoice(tenant_id: str, invoice_id: str) -> Invoice:
    """Raises NotFound for an unknown id or another tenant's invoice (indistinguishable)."""
    invoice = db.session.get(Invoice, invoice_id)
    if invoice is None or invoice.tenant_id != tenant_id:
        raise NotFound("No such invoice.", param="id")
    return invoice


def pay_invoice(tenant_id: str, invoice_id: str, phone_number: str) -> Invoice:
    """Send an STK push for the invoice's total from the platform's own shortcode, and record
    the push on the invoice. The invoice becomes paid when the push succeeds (asynchronously).

    Raises NotFound; InvoiceNotOpen (409); ValidationFailed when the total is above M-Pesa's
    per-payment limit; InvoicePaymentInProgress (409) while an earlier push is pending;
    InvoicePaymentUnavailable (503) without a billing tenant; payments' DarajaUnavailable.
    """
    _payable_invoice(tenant_id, invoice_id)  # refuse at once what can never be paid
    billing = _billing_account()
    db.session.rollback()
    lock = current_app.extensions["lango.redis"].lock(
        f"lango:invoice-pay:{invoice_id}", timeout=PAY_LOCK_SECONDS, blocking=False
    )
    if not lock.acquire():
        raise InvoicePaymentInProgress()
    try:
        # Read again under the lock: a payment that just finished or started is seen.
        total = _payable_invoice(tenant_id, invoice_id).total
        db.session.rollback()  # no transaction may be open when the tenant scope changes
        earlier_push_id = _pending_push_paying(billing, invoice_id)
        if earlier_push_id:
            raise InvoicePaymentInProgress(stk_push_id=earlier_push_id)
        push_id = _send_push(billing, invoice_id, tenant_id, total, phone_number)
        invoice = db.session.scalars(
            select(Invoice)
            .where(Invoice.id == invoice_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()
        invoice.mpesa_stk_push_id = push_id
        db.session.commit()
    finally:
        with contextlib.suppress(LockError):  # expired meanwhile: nothing left to release
            lock.release()
    logger.info(
        "billing.invoice_payment_started",
        extra={"tenant_id": tenant_id, "invoice_id": invoice_id, "stk_push_id": push_id},
    )
    return invoice


def mpesa_payment_status(invoice_id: str, stk_push_id: str | None) -> str | None:
    """The status (pending, succeeded, failed, cancelled, timeout …) of the M-Pesa push
    paying an invoice, read from the billing tenant's own pushes; None when no push was
    sent or there is no billing tenant. Read-only; ends the caller's transaction first (the
    push lives in another tenant's schema)."""
    billing_tenant_id = current_app.extensions["lango.settings"].BILLING_TENANT_ID
    if not stk_push_id or not billing_tenant_id:
        return None
    db.session.rollback()
    with tenant_scope(billing_tenant_id):
        status = db.session.scalar(
            select(StkPush.status).where(
                StkPush.id == stk_push_id,
                StkPush.metadata_["lango_invoice_id"].astext == invoice_id,
            )
        )
        db.session.rollback()
    return None if status is None else status.value


@dataclass(frozen=True)
class _BillingAccount:
    """The platform's own tenant, as plain data (it outlives the query that read it)."""

    tenant_id: str
    live_enabled: bool


def _billing_account() -> _BillingAccount:
    billing_tenant_id = current_app.extensions["lango.settings"].BILLING_TENANT_ID
    tenant = db.session.get(Tenant, billing_tenant_id) if billing_tenant_id else None
    if tenant is None:
        if billing_tenant_id:
            logger.error(
                "BILLING_TENANT_ID names no tenant", extra={"tenant_id": billing_tenant_id}
            )
        raise InvoicePaymentUnavailable(
            "Paying invoices by M-Pesa is not configured on this deployment (no billing "
            "tenant); contact support to pay another way."
        )
    return _BillingAccount(tenant.id, tenant.live_enabled)


def _payable_invoice(tenant_id: str, invoice_id: str) -> Invoice:
    invoice = get_invoice(tenant_id, invoice_id)
    if invoice.status is not InvoiceStatus.OPEN:
        raise InvoiceNotOpen(invoice_status=invoice.status.value)
    if db.session.scalar(select(collected_by_stripe()).where(Invoice.id == invoice.id)):
        raise InvoiceCollectedByStripe()
    if invoice.total > MAX_AMOUNT:
        raise ValidationFailed(
            f"This invoice's total ({invoice.total:,} KES) is above M-Pesa's limit of "
            f"{MAX_AMOUNT:,} KES per payment, and an invoice is paid in one payment; "
            "contact support to pay it another way.",
            code="invoice_total_above_mpesa_limit",
        )
    return invoice


def _send_push(
    billing: _BillingAccount, invoice_id: str, tenant_id: str, total: int, phone_number: str
) -> str:
    # Live when the platform takes live payments; otherwise test mode, the Daraja sandbox
    # (development and test setups).
    caller = Caller(
        tenant_id=billing.tenant_id,
        key_id="platform-billing",
        livemode=billing.live_enabled,
        live_enabled=billing.live_enabled,
    )
    request = payments.PushRequest(
        phone_number=phone_number,
        amount=total,
        # Daraja allows 12 and 13 characters here.
        account_reference=invoice_id.removeprefix("inv_")[-12:].upper(),
        description="Lango invoice",
        metadata={"lango_invoice_id": invoice_id, "lango_tenant_id": tenant_id},
    )
    with tenant_scope(billing.tenant_id):
        try:
            push_id = payments.initiate_push(caller, request).id
        except (QuotaExceeded, PlanExcludesLivemode, payments.LivemodeNotEnabled) as error:
            # The platform's own account is misconfigured; not the paying tenant's doing.
            logger.error("billing tenant cannot send pushes", extra={"error": str(error)})
            raise InvoicePaymentUnavailable() from None
        db.session.rollback()
    return push_id


def _pending_push_paying(billing: _BillingAccount, invoice_id: str) -> str | None:
    """The billing tenant's pending push for this invoice, found by the invoice id it
    carries rather than by the one saved on the invoice: a process that died between sending
    a push and saving its id must not let a retry prompt the customer a second time."""
    with tenant_scope(billing.tenant_id):
        push_id = db.session.scalar(
            select(StkPush.id)
            .where(
                StkPush.status == PushStatus.PENDING,
                StkPush.metadata_["lango_invoice_id"].astext == invoice_id,
            )
            .limit(1)
        )
        db.session.rollback()
    return push_id


# --- settling ----------------------------------------------------------------------------


def settle_invoice_payment(push: StkPush, *, tenant_id: str, **_) -> None:
    """Receiver of payments' `push_finished`: a succeeded push of the billing tenant that
    carries `lango_invoice_id` pays that invoice. Runs in the push's own transaction (the
    caller commits), so the invoice is paid exactly when the push is final."""
    settings = current_app.extensions["lango.settings"]
    if not settings.BILLING_TENANT_ID or tenant_id != settings.BILLING_TENANT_ID:
        return
    invoice_id = (push.metadata_ or {}).get("lango_invoice_id")
    if not invoice_id or push.status is not PushStatus.SUCCEEDED:
        return
    mark_invoice_paid(invoice_id, amount=push.amount, livemode=push.livemode, stk_push_id=push.id)


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
