"""Plan catalog management for admins: list every plan (retired ones too), create, edit and
retire. A retired plan (`active = false`) stays on its existing subscriptions, but signup and
plan changes refuse it (`billing.subscriptions.get_plan` only accepts active plans). Every
change is written with its audit entry (the staff user as the actor), in the caller's unit of
work; a refusal is raised before anything is written."""

from __future__ import annotations

import limits
from sqlalchemy import select

from billing.models import Plan
from compliance.audit import Actor, ActorType, AuditAction, record
from core.errors import Conflict, NotFound, ValidationFailed
from core.extensions import db

PLAN_FIELDS = (
    "name",
    "monthly_price",
    "included_pushes",
    "overage_price",
    "rate_limit",
    "max_webhook_endpoints",
    "livemode_allowed",
    "test_allowance",
    "position",
    "active",
)


def _actor(staff) -> Actor:
    return Actor(ActorType.STAFF, staff.id, staff.email)


def _state(plan: Plan) -> dict:
    return {name: getattr(plan, name) for name in PLAN_FIELDS}


def check_rate_limit(value: str) -> None:
    """Refuse a rate limit Flask-Limiter could not parse (it would fail on every request)."""
    try:
        limits.parse(value)
    except ValueError:
        raise ValidationFailed(
            f"rate_limit: {value!r} is not a rate limit like '50 per second'.", param="rate_limit"
        ) from None


def list_all_plans() -> list[Plan]:
    return list(db.session.scalars(select(Plan).order_by(Plan.position, Plan.code)))


def get_any_plan(code: str) -> Plan:
    """One plan, retired or not; NotFound when there is none."""
    plan = db.session.get(Plan, code)
    if plan is None:
        raise NotFound(f"No plan {code!r}.", param="code")
    return plan


def _locked(code: str) -> Plan:
    plan = db.session.scalar(select(Plan).where(Plan.code == code).with_for_update())
    if plan is None:
        raise NotFound(f"No plan {code!r}.", param="code")
    return plan


def _audit(staff, action: AuditAction, plan: Plan, before: dict | None) -> None:
    record(
        action,
        target_type="plan",
        target_id=plan.code,
        tenant_id=None,
        diff={"before": before, "after": _state(plan)},
        actor=_actor(staff),
    )


def create_plan(staff, fields: dict) -> Plan:
    check_rate_limit(fields["rate_limit"])
    if db.session.get(Plan, fields["code"]) is not None:
        raise Conflict(f"A plan {fields['code']!r} already exists.", code="plan_exists")
    plan = Plan(active=True, **fields)
    db.session.add(plan)
    db.session.flush()
    _audit(staff, AuditAction.PLAN_CREATED, plan, before=None)
    return plan


def update_plan(staff, code: str, changes: dict) -> Plan:
    if "rate_limit" in changes:
        check_rate_limit(changes["rate_limit"])
    plan = _locked(code)
    before = _state(plan)
    for name, value in changes.items():
        setattr(plan, name, value)
    db.session.flush()
    _audit(staff, AuditAction.PLAN_UPDATED, plan, before=before)
    return plan


def retire_plan(staff, code: str) -> Plan:
    plan = _locked(code)
    if not plan.active:
        raise Conflict(f"Plan {code!r} is already retired.", code="plan_retired")
    before = _state(plan)
    plan.active = False
    db.session.flush()
    _audit(staff, AuditAction.PLAN_RETIRED, plan, before=before)
    return plan
