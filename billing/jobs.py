"""RQ jobs for billing. Each loads ids, enters the tenant scope itself (one unit of work per
tenant), and calls the service."""

from __future__ import annotations

import logging
from dataclasses import asdict

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from billing import dunning, periods, usage
from billing.models import Subscription
from core.extensions import db
from core.jobs import app_job
from core.unit_of_work import tenant_unit_of_work, unit_of_work

logger = logging.getLogger("lango.billing.jobs")


@app_job
def close_billing_periods() -> dict:
    """Close every period that has ended (invoice, period-end plan change, next period),
    then hand pending overage to Stripe. Safe to run twice or concurrently."""
    report = periods.close_due_periods()
    if report.closed or report.stripe_errors:
        logger.info("closed billing periods", extra=asdict(report))
    return asdict(report)


@app_job
def suspend_overdue_tenants() -> dict:
    """Suspend (reason `billing`) every tenant with an invoice unpaid past its grace period."""
    suspended = dunning.suspend_overdue_tenants()
    if suspended:
        logger.info("suspended overdue tenants", extra={"tenant_ids": suspended})
    return {"suspended": suspended}


@app_job
def check_usage_drift() -> dict:
    """Every tenant (suspended ones too): do the current period's counters, live and test,
    equal the sums of its usage ledger? Each drift is logged (an error: money may be
    wrong) and returned; nothing is changed, since which side is right is for a person to
    decide."""
    with unit_of_work():
        periods_by_tenant = db.session.execute(
            select(Subscription.tenant_id, Subscription.current_period_start)
        ).all()
    drifts: list[dict] = []
    failed = 0
    for tenant_id, period_start in periods_by_tenant:
        try:
            with tenant_unit_of_work(tenant_id):
                found = usage.usage_drift(tenant_id, period_start)
        except SQLAlchemyError:
            logger.exception("usage drift check failed", extra={"tenant_id": tenant_id})
            failed += 1
            continue
        for drift in found:
            record = {**asdict(drift), "period_start": drift.period_start.isoformat()}
            logger.error("billing.usage_drift", extra=record)
            drifts.append(record)
    return {"tenants": len(periods_by_tenant), "drifts": drifts, "failed": failed}
