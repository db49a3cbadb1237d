"""Liveness and readiness probes."""

from __future__ import annotations

from flask import current_app
from marshmallow import Schema, fields
from sqlalchemy import text

from core.api import Blueprint
from core.extensions import db, limiter
from core.migrations import migration_status

blp = Blueprint(
    "health", __name__, description="Liveness and readiness probes", authenticated=False
)
limiter.exempt(blp)


class HealthSchema(Schema):
    status = fields.String(metadata={"example": "ok"})
    checks = fields.Dict(keys=fields.String(), values=fields.String())


@blp.get("/healthz")
@blp.doc(security=[])
@blp.response(200, HealthSchema)
def healthz():
    """The process is up."""
    return {"status": "ok", "checks": {}}


@blp.get("/readyz")
@blp.doc(security=[])
@blp.response(200, HealthSchema)
@blp.alt_response(503, schema=HealthSchema, description="Something the platform needs is down")
def readyz():
    """PostgreSQL and Redis reachable, every schema migrated to head."""
    checks = {
        "postgres": _check(lambda: db.session.execute(text("SELECT 1"))),
        "redis": _check(lambda: current_app.extensions["lango.redis"].ping()),
        "migrations": _migrations(),
    }
    db.session.rollback()
    ready = all(value == "ok" for value in checks.values())
    return {"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503


def _check(probe) -> str:
    try:
        probe()
    except Exception as exc:
        return f"down: {type(exc).__name__}"
    return "ok"


def _migrations() -> str:
    try:
        status = migration_status(db.engine)
    except Exception as exc:
        return f"unknown: {type(exc).__name__}"
    if status.public_revision != status.public_head:
        return f"behind: public at {status.public_revision}, head {status.public_head}"
    if status.tenants_behind:
        return f"behind: {status.tenants_behind} of {status.tenants} tenant schemas"
    return "ok"
