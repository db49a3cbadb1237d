"""Collecting Lango's own invoices by M-Pesa: payments' side of billing's InvoiceCollector
port (billing.ports), registered in payments' init_app. Billing may not import payments, so it
asks through the port for STK pushes of the billing tenant.

Every function runs in the billing tenant's scope, which billing enters, and in billing's
transaction (billing commits); only `initiate_push`'s own checkpoints commit here.
"""

from __future__ import annotations

from sqlalchemy import select

from billing.ports import InvoiceCollectionRefused, InvoicePush
from core.extensions import db
from core.tenancy import require_tenant
from payments.models import PushStatus, StkPush
from payments.schemas import MAX_AMOUNT
from payments.service import LivemodeNotEnabled, PushRequest, initiate_push
from tenants.service import Caller

max_amount = MAX_AMOUNT
# The audit trail's name for the key behind the push: billing sends it, no API key does.
BILLING_KEY_ID = "platform-billing"


def start_push(push: InvoicePush) -> str:
    """Send the push as the billing tenant (quota, screening, Daraja, as POST /v1/stk-pushes
    would) and return its id. Raises InvoiceCollectionRefused when live mode is not enabled
    for the billing tenant; QuotaExceeded, PlanExcludesLivemode and DarajaUnavailable pass
    through."""
    caller = Caller(
        tenant_id=require_tenant().tenant_id,
        key_id=BILLING_KEY_ID,
        livemode=push.livemode,
        live_enabled=push.livemode,
    )
    request = PushRequest(
        phone_number=push.phone_number,
        amount=push.amount,
        account_reference=push.account_reference,
        description=push.description,
        metadata=dict(push.metadata),
    )
    try:
        # No Idempotency claim: the paying tenant's request holds it, in that tenant's schema.
        return initiate_push(caller, request).id
    except LivemodeNotEnabled as error:
        raise InvoiceCollectionRefused(str(error)) from None


def pending_push(invoice_id: str) -> str | None:
    """A pending push collecting this invoice, found by the invoice id its metadata carries."""
    return db.session.scalar(
        select(StkPush.id)
        .where(StkPush.status == PushStatus.PENDING, _collects(invoice_id))
        .limit(1)
    )


def push_status(invoice_id: str, stk_push_id: str) -> str | None:
    """The status of push `stk_push_id` if it collects this invoice; None otherwise."""
    status = db.session.scalar(
        select(StkPush.status).where(StkPush.id == stk_push_id, _collects(invoice_id))
    )
    return None if status is None else status.value


def _collects(invoice_id: str):
    return StkPush.metadata_["lango_invoice_id"].astext == invoice_id
