"""RQ jobs that sweep every tenant. Each enters the tenant's scope itself."""

from __future__ import annotations

import logging

from sqlalchemy import select

from core.extensions import db
from core.idempotency import purge_expired_keys
from core.jobs import app_job
from core.tenancy import tenant_scope
from tenants.models import Tenant

logger = logging.getLogger("lango.tenants.jobs")


@app_job
def purge_idempotency_keys() -> int:
    """Drop Idempotency-Keys past their retention (24 h) in every tenant schema."""
    tenant_ids = db.session.scalars(select(Tenant.id)).all()
    db.session.rollback()
    purged = 0
    for tenant_id in tenant_ids:
        with tenant_scope(tenant_id):
            purged += purge_expired_keys()
    if purged:
        logger.info("purged idempotency keys", extra={"purged": purged})
    return purged
