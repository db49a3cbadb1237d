"""RQ jobs for payments. Each takes ids, enters the tenant scope itself, and calls the service."""

from __future__ import annotations

import logging
from dataclasses import fields
from datetime import UTC, datetime

from core.jobs import app_job
from core.tenancy import registered_tenant_ids
from core.unit_of_work import tenant_unit_of_work
from payments import service

logger = logging.getLogger("lango.payments.jobs")


@app_job
def reconcile_pending_pushes() -> dict:
    """Every tenant (suspended ones too: their customers may have paid): query Daraja about
    its overdue pending pushes, expire those past the deadline, and ask again about those
    Lango expired after Daraja had acknowledged them."""
    totals = service.ReconcileReport()
    for tenant_id in registered_tenant_ids():
        report = reconcile_tenant(tenant_id)
        for field in fields(totals):
            setattr(totals, field.name, getattr(totals, field.name) + getattr(report, field.name))
    if totals.queried or totals.expired:
        logger.info("reconciled pending pushes", extra=vars(totals))
    return vars(totals)


def reconcile_tenant(tenant_id: str, now: datetime | None = None) -> service.ReconcileReport:
    """Reconcile one tenant's pushes as of `now` (service.pushes_to_reconcile), each push in
    a unit of work of its own: its row lock is not held while Daraja is asked about the next
    one, and an answer applied (money found) stays applied when a later push fails."""
    now = now or datetime.now(UTC)
    with tenant_unit_of_work(tenant_id):
        push_ids = service.pushes_to_reconcile(now)
    report = service.ReconcileReport()
    for push_id in push_ids:
        with tenant_unit_of_work(tenant_id):
            service.reconcile_push(push_id, now, report)
    return report
