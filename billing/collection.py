"""Collecting invoices by M-Pesa: the billing tenant and its pushes, through the collector
payments provides (billing.ports).

The billing tenant (settings.BILLING_TENANT_ID) is a normal Lango tenant holding the
platform's shortcode; an invoice is paid by an ordinary STK push of that tenant. Its pushes
live in its own schema, so a request of the paying tenant reads or sends them in the billing
tenant's scope, which may begin only between transactions: the caller's transaction ends at
the named checkpoint TENANT_SWITCH first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import current_app

from billing.ports import InvoiceCollector, InvoicePush, invoice_collector
from core.errors import ServiceUnavailable
from core.extensions import db
from core.tenancy import tenant_scope
from core.unit_of_work import Checkpoint, checkpoint
from tenants.models import Tenant

logger = logging.getLogger("lango.billing.invoices")


class InvoicePaymentUnavailable(ServiceUnavailable):
    code = "invoice_payment_unavailable"
    message = "Paying invoices by M-Pesa is not available on this deployment right now."


@dataclass(frozen=True)
class BillingAccount:
    """The platform's own tenant, as plain data (it outlives the query that read it), and
    the collector sending its pushes."""

    tenant_id: str
    live_enabled: bool
    collector: InvoiceCollector


def billing_account() -> BillingAccount:
    """Raises InvoicePaymentUnavailable (503) when there is no billing tenant, or nothing
    collects invoices on this deployment."""
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
    return BillingAccount(tenant.id, tenant.live_enabled, collector())


def collector() -> InvoiceCollector:
    """The registered collector; raises InvoicePaymentUnavailable (503) when there is none."""
    registered = invoice_collector()
    if registered is None:
        logger.error("no invoice collector is registered")
        raise InvoicePaymentUnavailable()
    return registered


def pending_push_paying(billing: BillingAccount, invoice_id: str) -> str | None:
    """The billing tenant's pending push for this invoice, found by the invoice id it
    carries rather than by the one saved on the invoice: a process that died between sending
    a push and saving its id must not let a retry prompt the customer a second time. Ends
    the caller's transaction (TENANT_SWITCH)."""
    checkpoint(Checkpoint.TENANT_SWITCH)
    with tenant_scope(billing.tenant_id):  # its end rolls back the read
        return billing.collector.pending_push(invoice_id)


def send_push(
    billing: BillingAccount, invoice_id: str, tenant_id: str, total: int, phone_number: str
) -> str:
    """Send the STK push collecting the invoice's total and return its id; the push (with
    what Daraja answered) is committed before this returns. Must be called with no
    transaction open. Raises what the collector raises."""
    push = InvoicePush(
        phone_number=phone_number,
        amount=total,
        # Daraja allows 12 and 13 characters here.
        account_reference=invoice_id.removeprefix("inv_")[-12:].upper(),
        description="Lango invoice",
        metadata={"lango_invoice_id": invoice_id, "lango_tenant_id": tenant_id},
        # Live when the platform takes live payments; otherwise test mode, the Daraja
        # sandbox (development and test setups).
        livemode=billing.live_enabled,
    )
    with tenant_scope(billing.tenant_id):
        push_id = billing.collector.start_push(push)
        checkpoint(Checkpoint.TENANT_SWITCH)
    return push_id


def mpesa_payment_status(invoice_id: str, stk_push_id: str | None) -> str | None:
    """The status (pending, succeeded, failed, cancelled, timeout …) of the M-Pesa push
    paying an invoice, read from the billing tenant's own pushes; None when no push was
    sent, or there is no billing tenant or collector. Read-only; ends the caller's
    transaction first (TENANT_SWITCH)."""
    billing_tenant_id = current_app.extensions["lango.settings"].BILLING_TENANT_ID
    registered = invoice_collector()
    if not stk_push_id or not billing_tenant_id or registered is None:
        return None
    checkpoint(Checkpoint.TENANT_SWITCH)
    with tenant_scope(billing_tenant_id):  # its end rolls back the read
        return registered.push_status(invoice_id, stk_push_id)
