"""RQ jobs for payments. Each takes ids, enters the tenant scope itself, and calls the service."""

from __future__ import annotations

import logging

from sqlalchemy import select

from core.extensions import db
from core.jobs import app_job
from core.tenancy import tenant_scope
from payments import service
from tenants.models import Tenant

logger = logging.getLogger("lango.payments.jobs")


@app_job
def reconcile_pending_pushes() -> dict:
    """Every tenant (suspended ones too: their customers may have paid): query Daraja about
    its overdue pending pushes, expire those past the deadline, and ask again about those
    Lango expired after Daraja had acknowledged them."""
    tenants = db.session.execute(select(Tenant.id, Tenant.live_enabled)).all()
    db.session.rollback()
    totals = service.ReconcileReport()
    for tenant_id, live_enabled in tenants:
        with tenant_scope(tenant_id):
            report = service.reconcile_pending(tenant_id, live_enabled)
        for field in ("queried", "resolved", "expired", "errors"):
            setattr(totals, field, getattr(totals, field) + getattr(report, field))
    if totals.queried or totals.expired:
        logger.info("reconciled pending pushes", extra=vars(totals))
    return vars(totals)
