"""The compliance console's API under /v1/admin: compliance staff search and export every
tenant's audit log, edit fraud rules and work the review queue, with a full staff session
holding the compliance role. Parse, call compliance.console, serialise. (Here, not in
compliance: compliance sits below staff and may not import its sessions.)"""

from __future__ import annotations

from flask import Response, stream_with_context
from flask_login import current_user

from compliance import console
from compliance.schemas import (
    AdminAuditEntryListSchema,
    AdminAuditExportQuerySchema,
    AdminAuditQuerySchema,
    AssignFraudCaseSchema,
    FraudCaseListSchema,
    FraudCaseQuerySchema,
    FraudCaseSchema,
    FraudRuleCreateSchema,
    FraudRuleListSchema,
    FraudRuleSchema,
    FraudRuleUpdateSchema,
    ResolveFraudCaseSchema,
    RevealedPhoneSchema,
)
from core.api import Blueprint, errors
from staff.api import STAFF_SECURITY, require_staff
from staff.models import StaffRole

admin_audit_log = Blueprint(
    "admin_audit_log",
    __name__,
    description="Search and export every tenant's audit log (compliance staff)",
    authenticated=False,
)
admin_fraud = Blueprint(
    "admin_fraud",
    __name__,
    description="Fraud rules and the review queue (compliance staff)",
    authenticated=False,
)
require_staff(admin_audit_log, StaffRole.COMPLIANCE)
require_staff(admin_fraud, StaffRole.COMPLIANCE)


@admin_audit_log.get("/v1/admin/audit-log")
@admin_audit_log.doc(security=STAFF_SECURITY)
@admin_audit_log.arguments(AdminAuditQuerySchema, location="query")
@admin_audit_log.response(200, AdminAuditEntryListSchema)
@errors(admin_audit_log, 400, 401, 403)
def search_audit_log(query):
    """Entries across all tenants, newest first: filter by tenant_id, actor_type, actor_id,
    action and time (occurred_gte / occurred_lte); page with starting_after / ending_before."""
    return console.search_audit_log(**query)


@admin_audit_log.get("/v1/admin/audit-log/export")
@admin_audit_log.doc(security=STAFF_SECURITY)
@admin_audit_log.arguments(AdminAuditExportQuerySchema, location="query")
@admin_audit_log.response(
    200,
    description="The matching entries as CSV, in chain order",
    content_type="text/csv",
)
@errors(admin_audit_log, 400, 401, 403)
def export_audit_log(query):
    """The same filters as the search, streamed as CSV (every column, including the hash)."""
    return Response(
        stream_with_context(console.export_audit_log(**query)),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="lango-audit-log.csv"'},
    )


@admin_fraud.get("/v1/admin/fraud-rules")
@admin_fraud.doc(security=STAFF_SECURITY)
@admin_fraud.response(200, FraudRuleListSchema)
@errors(admin_fraud, 401, 403)
def list_fraud_rules():
    """Every rule (enabled or not) in match order: the first enabled match decides."""
    return {"data": console.list_rules()}


@admin_fraud.post("/v1/admin/fraud-rules")
@admin_fraud.doc(security=STAFF_SECURITY)
@admin_fraud.arguments(FraudRuleCreateSchema)
@admin_fraud.response(201, FraudRuleSchema)
@errors(admin_fraud, 400, 401, 403)
def create_fraud_rule(body):
    """Add a rule; it applies to the next push screened. A bad expression is a 400 on
    `expression`."""
    return console.create_rule(current_user, **body)


@admin_fraud.patch("/v1/admin/fraud-rules/<rule_id>")
@admin_fraud.doc(security=STAFF_SECURITY)
@admin_fraud.arguments(FraudRuleUpdateSchema)
@admin_fraud.response(200, FraudRuleSchema)
@errors(admin_fraud, 400, 401, 403, 404)
def update_fraud_rule(body, rule_id: str):
    """Edit a rule's expression, outcome, description, position or enabled flag; it applies
    to the next push screened."""
    return console.update_rule(current_user, rule_id, body)


@admin_fraud.get("/v1/admin/fraud-cases")
@admin_fraud.doc(security=STAFF_SECURITY)
@admin_fraud.arguments(FraudCaseQuerySchema, location="query")
@admin_fraud.response(200, FraudCaseListSchema)
@errors(admin_fraud, 400, 401, 403)
def list_fraud_cases(query):
    """Review cases, newest first; filter by status (open, legitimate, fraudulent)."""
    return console.list_cases(**query)


@admin_fraud.post("/v1/admin/fraud-cases/<case_id>/resolve")
@admin_fraud.doc(security=STAFF_SECURITY)
@admin_fraud.arguments(ResolveFraudCaseSchema)
@admin_fraud.response(200, FraudCaseSchema)
@errors(admin_fraud, 400, 401, 403, 404, 409)
def resolve_fraud_case(body, case_id: str):
    """Resolve an open case as legitimate or fraudulent; fraudulent with block_phone adds the
    push's phone to that tenant's blocklist."""
    return console.resolve_case(current_user, case_id, **body)


@admin_fraud.post("/v1/admin/fraud-cases/<case_id>/assign")
@admin_fraud.doc(security=STAFF_SECURITY)
@admin_fraud.arguments(AssignFraudCaseSchema, required=False)  # no body: yourself
@admin_fraud.response(200, FraudCaseSchema)
@errors(admin_fraud, 400, 401, 403, 404)
def assign_fraud_case(body, case_id: str):
    """Assign a case to a staff user (yourself when staff_id is left out); recorded in the
    case's notes and the audit log."""
    return console.assign_case(current_user, case_id, body.get("staff_id"))


@admin_fraud.post("/v1/admin/fraud-cases/<case_id>/reveal-phone")
@admin_fraud.doc(security=STAFF_SECURITY)
@admin_fraud.response(200, RevealedPhoneSchema)
@errors(admin_fraud, 401, 403, 404, 409)
def reveal_fraud_case_phone(case_id: str):
    """The case's full phone number (staff views show it masked); every reveal is audited."""
    return console.reveal_phone(current_user, case_id)
