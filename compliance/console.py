"""What compliance staff do in the console: search and export the audit log, edit fraud
rules, work the review queue. Plain functions that flush (the request commits); every state
change is audited with the staff user as the actor, in the change's own transaction."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime

import rule_engine
from sqlalchemy import func, select

from compliance import fraud, ports
from compliance.audit import Actor, ActorType, AuditAction, AuditEntry, record
from core.api import paginate
from core.errors import Conflict, NotFound, ValidationFailed
from core.extensions import db
from core.ids import new_id
from core.phone import mask_phone
from tenants.models import Tenant, TenantStatus

EXPORT_COLUMNS = (
    "seq",
    "id",
    "occurred_at",
    "actor_type",
    "actor_id",
    "actor_label",
    "action",
    "target_type",
    "target_id",
    "tenant_id",
    "source_ip",
    "request_id",
    "diff",
    "hash",
)
RULE_FIELDS = ("expression", "outcome", "description", "position", "enabled")


def staff_actor(staff) -> Actor:
    return Actor(ActorType.STAFF, staff.id, staff.email)


# --- audit log ------------------------------------------------------------------------------


def _audit_query(
    tenant_id: str | None = None,
    actor_type: str | None = None,
    actor_id: str | None = None,
    action: str | None = None,
    occurred_gte: datetime | None = None,
    occurred_lte: datetime | None = None,
):
    statement = select(AuditEntry)
    for column, value in (
        (AuditEntry.tenant_id, tenant_id),
        (AuditEntry.actor_type, actor_type),
        (AuditEntry.actor_id, actor_id),
        (AuditEntry.action, action),
    ):
        if value is not None:
            statement = statement.where(column == value)
    if occurred_gte is not None:
        statement = statement.where(AuditEntry.occurred_at >= occurred_gte)
    if occurred_lte is not None:
        statement = statement.where(AuditEntry.occurred_at <= occurred_lte)
    return statement


def search_audit_log(*, limit: int, starting_after=None, ending_before=None, **filters) -> dict:
    """Entries across every tenant, newest first, filtered by tenant, actor, action and time."""
    return paginate(
        _audit_query(**filters),
        AuditEntry.id,
        limit=limit,
        starting_after=starting_after,
        ending_before=ending_before,
    )


def export_audit_log(**filters) -> Iterator[str]:
    """The matching entries as CSV lines in chain order (a header first), read in batches."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(values) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    yield line(EXPORT_COLUMNS)
    statement = _audit_query(**filters).order_by(AuditEntry.seq).execution_options(yield_per=500)
    for entry in db.session.scalars(statement):
        row = []
        for column in EXPORT_COLUMNS:
            value = getattr(entry, column)
            if column == "occurred_at":
                value = value.isoformat()
            elif column == "diff" and value is not None:
                # JSON, as the API gives it: readable by any tool, not Python's repr.
                value = json.dumps(value, sort_keys=True, ensure_ascii=False)
            row.append("" if value is None else value)
        yield line(row)


# --- fraud rules ----------------------------------------------------------------------------


def list_rules() -> list[fraud.FraudRule]:
    return list(
        db.session.scalars(select(fraud.FraudRule).order_by(fraud.FraudRule.position, "id"))
    )


def _check_expression(expression: str) -> None:
    try:
        fraud.compile_expression(expression)
    except (rule_engine.EngineError, ValueError) as error:
        raise ValidationFailed(
            f"expression: {error.message if hasattr(error, 'message') else error}",
            param="expression",
        ) from None


def _rule_state(rule: fraud.FraudRule) -> dict:
    return {name: getattr(rule, name) for name in RULE_FIELDS}


def create_rule(staff, *, expression: str, outcome: str, description: str = "", position: int):
    """Add a rule (validated; audited); it applies to the next push once committed."""
    _check_expression(expression)
    rule = fraud.FraudRule(
        id=new_id("frule"),
        expression=expression,
        outcome=fraud.Outcome(outcome).value,
        description=description,
        position=position,
        enabled=True,
    )
    db.session.add(rule)
    db.session.flush()
    _audit_rule(staff, rule, before=None)
    fraud.invalidate_rules_once_committed()
    return rule


def update_rule(staff, rule_id: str, changes: dict) -> fraud.FraudRule:
    """Edit a rule (validated; audited); it applies to the next push once committed."""
    rule = db.session.scalar(
        select(fraud.FraudRule).where(fraud.FraudRule.id == rule_id).with_for_update()
    )
    if rule is None:
        raise NotFound(f"No fraud rule {rule_id}.", param="id")
    if "expression" in changes:
        _check_expression(changes["expression"])
    before = _rule_state(rule)
    for name, value in changes.items():
        setattr(rule, name, value)
    db.session.flush()
    _audit_rule(staff, rule, before=before)
    fraud.invalidate_rules_once_committed()
    return rule


def _audit_rule(staff, rule, *, before) -> None:
    record(
        AuditAction.FRAUD_RULE_CHANGED,
        target_type="fraud_rule",
        target_id=rule.id,
        tenant_id=None,
        diff={"before": before, "after": _rule_state(rule)},
        actor=staff_actor(staff),
    )


# --- review queue ---------------------------------------------------------------------------


def list_cases(*, limit: int, status: str | None = None, **cursor) -> dict:
    statement = select(fraud.FraudReviewCase)
    if status is not None:
        statement = statement.where(fraud.FraudReviewCase.status == status)
    page = paginate(statement, fraud.FraudReviewCase.id, limit=limit, **cursor)
    for case in page["data"]:
        _mask(case)
    return page


def _push_phone(case: fraud.FraudReviewCase) -> str | None:
    push = ports.push_facts(case.tenant_id, case.stk_push_id)
    return push.phone_number if push is not None else None


def _mask(case: fraud.FraudReviewCase) -> fraud.FraudReviewCase:
    """Staff views show the push's phone masked (`phone`); revealing it is audited."""
    phone = _push_phone(case)
    case.phone = mask_phone(phone) if phone else None
    return case


def _locked_case(case_id: str) -> fraud.FraudReviewCase:
    case = db.session.scalar(
        select(fraud.FraudReviewCase).where(fraud.FraudReviewCase.id == case_id).with_for_update()
    )
    if case is None:
        raise NotFound(f"No review case {case_id}.", param="id")
    return case


def assign_case(staff, case_id: str, staff_id: str | None = None) -> fraud.FraudReviewCase:
    """Assign a case to a staff user (the caller by default). fraud_review_cases has no
    assignee column yet, so the assignment is kept as a line in the case's notes (the latest
    `assigned to` line wins) and in the audit log."""
    assignee = ports.find_staff(staff_id or staff.id)
    if assignee is None:
        raise ValidationFailed(f"No staff user {staff_id}.", param="staff_id")
    case = _locked_case(case_id)
    case.notes = f"{case.notes}\n{staff.email}: assigned to {assignee.email}".strip()
    record(
        AuditAction.FRAUD_CASE_ASSIGNED,
        target_type="fraud_review_case",
        target_id=case.id,
        tenant_id=case.tenant_id,
        diff={"after": {"assignee_id": assignee.id, "assignee_email": assignee.email}},
        actor=staff_actor(staff),
    )
    return _mask(case)


def reveal_phone(staff, case_id: str) -> dict:
    """The case's full phone number, for a compliance user; the reveal is audited."""
    case = db.session.get(fraud.FraudReviewCase, case_id)
    if case is None:
        raise NotFound(f"No review case {case_id}.", param="id")
    phone = _push_phone(case)
    if phone is None:
        raise Conflict("The case's push no longer exists.", code="push_missing")
    record(
        AuditAction.PHONE_REVEALED,
        target_type="fraud_review_case",
        target_id=case.id,
        tenant_id=case.tenant_id,
        diff={"after": {"stk_push_id": case.stk_push_id, "phone": mask_phone(phone)}},
        actor=staff_actor(staff),
    )
    return {"case_id": case.id, "stk_push_id": case.stk_push_id, "phone": phone}


def resolve_case(
    staff,
    case_id: str,
    *,
    resolution: str,
    note: str = "",
    block_phone: bool = False,
    suspend_tenant: bool = False,
) -> fraud.FraudReviewCase:
    """Close an open case as legitimate or fraudulent (audited). A
    fraudulent case with `block_phone` puts the push's phone on that tenant's blocklist; with
    `suspend_tenant` it suspends the tenant (reason 'compliance', audited).
    Raises NotFound, Conflict (already resolved) or ValidationFailed."""
    case = _locked_case(case_id)
    if case.status != fraud.ReviewStatus.OPEN.value:
        raise Conflict(f"This case is already resolved ({case.status}).", code="case_resolved")
    if block_phone and resolution != fraud.ReviewStatus.FRAUDULENT.value:
        raise ValidationFailed("Only a fraudulent case can block the phone.", param="block_phone")
    if suspend_tenant and resolution != fraud.ReviewStatus.FRAUDULENT.value:
        raise ValidationFailed(
            "Only a fraudulent case can suspend the tenant.", param="suspend_tenant"
        )
    case.status = fraud.ReviewStatus(resolution).value
    if note:
        case.notes = f"{case.notes}\n{staff.email}: {note}".strip()
    blocked = _block_phone(case) if block_phone else None
    record(
        AuditAction.FRAUD_CASE_RESOLVED,
        target_type="fraud_review_case",
        target_id=case.id,
        tenant_id=case.tenant_id,
        diff={
            "before": {"status": fraud.ReviewStatus.OPEN.value},
            "after": {
                "status": case.status,
                "note": note,
                "phone_blocked": blocked is not None,
                "tenant_suspended": suspend_tenant,
            },
        },
        actor=staff_actor(staff),
    )
    if suspend_tenant:
        _suspend_for_fraud(staff, case)
    return _mask(case)


def _suspend_for_fraud(staff, case: fraud.FraudReviewCase) -> None:
    # In the case's transaction: the tenant, its suspension and both audit entries commit
    # together. An already suspended tenant stays as it is (its reason is kept).
    tenant = db.session.scalar(select(Tenant).where(Tenant.id == case.tenant_id).with_for_update())
    if tenant is None or tenant.status is TenantStatus.SUSPENDED:
        return
    tenant.status = TenantStatus.SUSPENDED
    tenant.suspended_reason = "compliance"
    record(
        AuditAction.TENANT_SUSPENDED,
        target_type="tenant",
        target_id=tenant.id,
        tenant_id=tenant.id,
        diff={
            "before": {"status": "active"},
            "after": {"status": "suspended", "reason": "compliance", "case_id": case.id},
        },
        actor=staff_actor(staff),
    )


def _block_phone(case: fraud.FraudReviewCase) -> str:
    phone = _push_phone(case)
    if phone is None:
        raise Conflict("The case's push no longer exists; nothing to block.", code="push_missing")
    if db.session.get(fraud.BlockedPhone, (case.tenant_id, phone)) is None:
        db.session.add(
            fraud.BlockedPhone(
                tenant_id=case.tenant_id, phone=phone, reason=f"fraud review case {case.id}"
            )
        )
    return phone


# --- for the console pages (frontend/compliance/) -------------------------------------------


def get_rule(rule_id: str) -> fraud.FraudRule:
    rule = db.session.get(fraud.FraudRule, rule_id)
    if rule is None:
        raise NotFound(f"No fraud rule {rule_id}.", param="id")
    return rule


def next_rule_position() -> int:
    """A position after every rule's: where a new rule goes unless told otherwise."""
    highest = db.session.scalar(select(func.max(fraud.FraudRule.position)))
    return 10 if highest is None else highest + 10


def move_rule(staff, rule_id: str, direction: str) -> fraud.FraudRule:
    """Move a rule one place up or down in match order. Positions are renumbered 10, 20, 30 …
    in the new order (so they stay unique); every rule whose position changes is audited
    (fraud_rule.changed) in the caller's transaction. Moving the first rule up or the last
    one down changes nothing. Raises NotFound, ValidationFailed (direction)."""
    if direction not in ("up", "down"):
        raise ValidationFailed("direction: up or down.", param="direction")
    rules = list(
        db.session.scalars(
            select(fraud.FraudRule).order_by(fraud.FraudRule.position, "id").with_for_update()
        )
    )
    index = next((i for i, rule in enumerate(rules) if rule.id == rule_id), None)
    if index is None:
        raise NotFound(f"No fraud rule {rule_id}.", param="id")
    other = index - 1 if direction == "up" else index + 1
    if 0 <= other < len(rules):
        rules[index], rules[other] = rules[other], rules[index]
    for place, rule in enumerate(rules, start=1):
        if rule.position != place * 10:
            before = _rule_state(rule)
            rule.position = place * 10
            db.session.flush()
            _audit_rule(staff, rule, before=before)
    fraud.invalidate_rules_once_committed()
    return next(rule for rule in rules if rule.id == rule_id)


def get_case(case_id: str) -> fraud.FraudReviewCase:
    """One review case, its phone masked (`phone`)."""
    case = db.session.get(fraud.FraudReviewCase, case_id)
    if case is None:
        raise NotFound(f"No review case {case_id}.", param="id")
    return _mask(case)


def case_push(case: fraud.FraudReviewCase) -> dict | None:
    """The case's push as staff see it (amount, status, mode, time; no phone), or None when
    the push no longer exists."""
    push = ports.push_facts(case.tenant_id, case.stk_push_id)
    if push is None:
        return None
    return {
        "id": push.id,
        "amount": push.amount,
        "status": push.status,
        "livemode": push.livemode,
        "account_reference": push.account_reference,
        "created_at": push.created_at,
    }


def case_assignees(case_ids: list[str]) -> dict[str, str]:
    """Each case's current assignee (email), from its latest fraud_case.assigned audit
    entry: the audit log is the record of assignments (the table has no assignee column)."""
    if not case_ids:
        return {}
    rows = db.session.execute(
        select(AuditEntry.target_id, AuditEntry.diff)
        .where(
            AuditEntry.action == AuditAction.FRAUD_CASE_ASSIGNED.value,
            AuditEntry.target_type == "fraud_review_case",
            AuditEntry.target_id.in_(case_ids),
        )
        .order_by(AuditEntry.seq)
    )
    assignees = {}
    for case_id, diff in rows:
        assignees[case_id] = ((diff or {}).get("after") or {}).get("assignee_email")
    return assignees


def add_case_note(staff, case_id: str, note: str) -> fraud.FraudReviewCase:
    """Append a note to a case (`<email>: <note>`, one line each, never edited). Notes are
    the reviewers' working record; the decisions they lead to (assign, resolve) are audited.
    Raises NotFound, ValidationFailed (an empty note)."""
    note = " ".join((note or "").split())
    if not note:
        raise ValidationFailed("note: write something.", param="note")
    case = _locked_case(case_id)
    case.notes = f"{case.notes}\n{staff.email}: {note}".strip()
    return _mask(case)


def compliance_staff() -> list[ports.StaffMember]:
    """Staff users holding the compliance role (who a case may be assigned to), by email."""
    return ports.compliance_staff()


def tenant_names(tenant_ids) -> dict[str, str]:
    """Business names by tenant id, for labelling rows on the console's pages."""
    ids = {tenant_id for tenant_id in tenant_ids if tenant_id}
    if not ids:
        return {}
    rows = db.session.execute(select(Tenant.id, Tenant.business_name).where(Tenant.id.in_(ids)))
    return dict(rows.all())
