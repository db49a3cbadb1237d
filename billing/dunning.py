"""Dunning: an invoice left unpaid past its grace period suspends the tenant (reason
`billing`); paying reinstates it.

Suspension changes only `tenants.status` / `suspended_reason`: the tenant's keys then get 403
`tenant_suspended`, except on the invoices endpoints (tenants.auth), so it can still read and
pay what it owes. Callbacks for its in-flight pushes are still recorded (the callback route
never checks status), so nothing its customers paid is lost.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import and_, exists, func, or_, select, update

from billing.models import Invoice, InvoiceKind, InvoiceStatus, Subscription, SubscriptionStatus
from core.extensions import db
from core.unit_of_work import tenant_unit_of_work, unit_of_work
from tenants.models import Tenant, TenantStatus

logger = logging.getLogger("lango.billing.dunning")

SUSPENSION_REASON = "billing"


def grace_cutoff(now: datetime | None = None) -> datetime:
    """Invoices due before this moment are past their grace period."""
    grace = timedelta(days=current_app.extensions["lango.settings"].INVOICE_GRACE_DAYS)
    return (now or datetime.now(UTC)) - grace


def collected_by_stripe():
    """An invoice Stripe collects: it carries a Stripe invoice, or its tenant has a Stripe
    subscription charging a card. Stripe's payment events dun those
    (billing.stripe_webhooks), and M-Pesa may not pay them (the card would be charged too)."""
    stripe_charges_card = exists().where(
        Subscription.tenant_id == Invoice.tenant_id,
        Subscription.stripe_subscription_id.is_not(None),
        Subscription.status != SubscriptionStatus.CANCELED,
    )
    return or_(Invoice.stripe_invoice_id.is_not(None), stripe_charges_card)


def overdue(cutoff: datetime):
    """A period's invoice Lango collects itself, unpaid and due before `cutoff`. An unpaid
    upgrade invoice is owed nothing: its plan simply never starts."""
    return and_(
        Invoice.kind == InvoiceKind.PERIOD,
        Invoice.status == InvoiceStatus.OPEN,
        Invoice.due_at <= cutoff,
        ~collected_by_stripe(),
    )


def suspend_for_billing(tenant_id: str, *, reason_detail: str | None = None) -> bool:
    """Suspend an active tenant with reason `billing`, in the caller's transaction (the
    caller commits). A tenant already suspended (for any reason) is left as it is.
    Returns True if this call suspended it."""
    suspended = db.session.scalar(
        update(Tenant)
        .where(Tenant.id == tenant_id, Tenant.status == TenantStatus.ACTIVE)
        .values(
            status=TenantStatus.SUSPENDED, suspended_reason=SUSPENSION_REASON, updated_at=func.now()
        )
        .returning(Tenant.id)
        .execution_options(synchronize_session=False)
    )
    if suspended:
        # The audit log arrives with a later issue; until then this line is the record.
        logger.warning(
            "billing.tenant_suspended",
            extra={"tenant_id": tenant_id, "reason": SUSPENSION_REASON, "detail": reason_detail},
        )
    return suspended is not None


def reinstate_after_payment(tenant_id: str, *, now: datetime | None = None) -> bool:
    """Reactivate a tenant suspended for `billing` once it owes Lango nothing past grace, in
    the caller's transaction (the caller commits; mark the invoice paid first, in the same
    transaction). A tenant suspended for another reason stays suspended.
    Returns True if this call reinstated it."""
    still_owes = exists().where(Invoice.tenant_id == tenant_id, overdue(grace_cutoff(now)))
    reinstated = db.session.scalar(
        update(Tenant)
        .where(
            Tenant.id == tenant_id,
            Tenant.status == TenantStatus.SUSPENDED,
            Tenant.suspended_reason == SUSPENSION_REASON,
            ~still_owes,
        )
        .values(status=TenantStatus.ACTIVE, suspended_reason=None, updated_at=func.now())
        .returning(Tenant.id)
        .execution_options(synchronize_session=False)
    )
    if reinstated:
        logger.info(
            "billing.tenant_reinstated", extra={"tenant_id": tenant_id, "reason": "payment"}
        )
    return reinstated is not None


def suspend_overdue_tenants(now: datetime | None = None) -> list[str]:
    """Suspend every active tenant with an invoice Lango collects left unpaid past due_at +
    grace. One short unit of work per tenant; safe to run concurrently and repeatedly.
    Returns the ids of the tenants this call suspended.

    The overdue invoices are locked before the tenant is suspended, and payment locks its
    invoice before reinstating: a payment racing this job either lands first (the invoice is
    then no longer open, and nothing is suspended) or after (and reinstates)."""
    cutoff = grace_cutoff(now)
    with unit_of_work():
        tenant_ids = db.session.scalars(
            select(Invoice.tenant_id)
            .join(Tenant, Tenant.id == Invoice.tenant_id)
            .where(Tenant.status == TenantStatus.ACTIVE, overdue(cutoff))
            .distinct()
            .order_by(Invoice.tenant_id)
        ).all()
    suspended = []
    for tenant_id in tenant_ids:
        with tenant_unit_of_work(tenant_id):
            locked = db.session.scalars(
                select(Invoice.id)
                .where(Invoice.tenant_id == tenant_id, overdue(cutoff))
                .order_by(Invoice.due_at)
                .with_for_update(of=Invoice)
            ).all()
            if locked and suspend_for_billing(
                tenant_id, reason_detail=f"invoice {locked[0]} unpaid past grace"
            ):
                suspended.append(tenant_id)
    return suspended
