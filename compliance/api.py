"""HTTP endpoints for compliance. Parse, call the service, serialise.

Tenants read their own audit trail with an API key (`/v1/audit-log`). Compliance staff's
endpoints under `/v1/admin` live in staff (staff.compliance_api): they need its sessions."""

from __future__ import annotations

from compliance import audit
from compliance.schemas import AuditEntryListSchema, AuditLogQuerySchema
from core.api import Blueprint, errors
from tenants.auth import current_caller

# --- audit log ----------------------------------------------------------------------------

audit_log = Blueprint("audit_log", __name__, description="Your account's audit trail")


@audit_log.get("/v1/audit-log")
@audit_log.arguments(AuditLogQuerySchema, location="query")
@audit_log.response(200, AuditEntryListSchema)
@errors(audit_log, 400, 401, 403)
def list_audit_log(query):
    """Who changed what in your account, newest first (cursor pagination; filter by action
    and by time with occurred_gte / occurred_lte)."""
    return audit.list_entries(current_caller().tenant_id, **query)
