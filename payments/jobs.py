"""RQ jobs for payments. Each takes ids, enters the tenant scope itself, and calls the service."""

from __future__ import annotations

import logging

from sqlalchemy import select

from core.extensions import db
from core.jobs import app_job
from core.tenancy import tenant_scope
from payments import service
from payments.models import PushStatus, StkPush
from tenants.models import Tenant

logger = logging.getLogger("lango.payments.jobs")


@app_job
def reconcile_pending_pushes() -> dict:
    """Every tenant (suspended ones too: their customers may have paid) with pending pushes:
    query Daraja for the overdue ones and expire those past the deadline."""
    tenants = db.session.execute(select(Tenant.id, Tenant.live_enabled)).all()
    db.session.rollback()
    totals = service.ReconcileReport()
    for tenant_id, live_enabled in tenants:
        with tenant_scope(tenant_id):
            has_pending = db.session.scalar(
                select(StkPush.id).where(StkPush.status == PushStatus.PENDING).limit(1)
            )
            db.session.rollback()
            if not has_pending:
                continue
            report = service.reconcile_pending(tenant_id, live_enabled)
        for field in ("queried", "resolved", "expired", "errors"):
            setattr(totals, field, getattr(totals, field) + getattr(report, field))
    if totals.queried or totals.expired:
        logger.info("reconciled pending pushes", extra=vars(totals))
    return vars(totals)
