"""RQ jobs for webhooks. Each takes ids, enters the tenant scope itself as one unit of work,
and calls the service."""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.exc import DBAPIError

from core.jobs import app_job
from core.tenancy import registered_tenant_ids
from core.unit_of_work import tenant_unit_of_work
from webhooks import service

logger = logging.getLogger("lango.webhooks.jobs")


@app_job
def deliver_webhook(tenant_id: str, delivery_id: str) -> str:
    """One attempt of one delivery (a no-op if it is not due or someone else holds it)."""
    with tenant_unit_of_work(tenant_id):
        return service.deliver(tenant_id, delivery_id)


@app_job
def sweep_due_deliveries(now: datetime | None = None) -> int:
    """Every tenant: re-enqueue pending deliveries whose job was lost (Redis flushed, worker
    killed). One tenant's failure (e.g. a schema not yet migrated) doesn't stop the rest.
    `now` is for tests."""
    total = 0
    for tenant_id in registered_tenant_ids():
        try:
            with tenant_unit_of_work(tenant_id):
                total += service.sweep_due(tenant_id, now)
        except DBAPIError:
            logger.exception("sweeping deliveries failed", extra={"tenant_id": tenant_id})
    return total
