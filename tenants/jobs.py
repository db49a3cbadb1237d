"""RQ jobs that sweep every tenant. Each tenant is its own unit of work, so one tenant's
failure (a schema not yet migrated) neither undoes nor stops the others."""

from __future__ import annotations

import logging

from sqlalchemy.exc import DBAPIError

from core.idempotency import purge_expired_keys
from core.jobs import app_job
from core.tenancy import registered_tenant_ids
from core.unit_of_work import tenant_unit_of_work

logger = logging.getLogger("lango.tenants.jobs")


@app_job
def purge_idempotency_keys() -> int:
    """Drop Idempotency-Keys past their retention (24 h) in every tenant schema."""
    purged = 0
    for tenant_id in registered_tenant_ids():
        try:
            with tenant_unit_of_work(tenant_id):
                purged += purge_expired_keys()
        except DBAPIError:
            logger.exception("purging idempotency keys failed", extra={"tenant_id": tenant_id})
    if purged:
        logger.info("purged idempotency keys", extra={"purged": purged})
    return purged
