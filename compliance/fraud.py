"""Fraud screening: rules as data, a per-tenant phone blocklist, review cases.

`screen` runs before a push is created (so a blocked push reserves no quota and never
reaches Daraja): the tenant's blocklist first, then the enabled rules in position order,
first match wins (like Stripe Radar); no match allows. Rules are `rule-engine` expressions
over the attributes in ATTRIBUTE_TYPES, compiled once per expression text and re-read from
public.fraud_rules at most every RULES_CACHE_SECONDS, so an edited rule applies to pushes
screened after that (or as soon as the edit commits: `invalidate_rules_once_committed()`).
Screening takes no lock: no push waits for another tenant's.
"""

from __future__ import annotations

import enum
import functools
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import rule_engine
from flask import current_app
from sqlalchemy import Boolean, DateTime, Integer, String, Text, event, exists, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from compliance import velocity
from core.errors import PermissionDenied
from core.events import Event
from core.extensions import db
from core.ids import new_id
from tenants.models import Tenant

logger = logging.getLogger("lango.compliance.fraud")
RULES_CACHE_SECONDS = 2.0


class Outcome(enum.StrEnum):
    ALLOW = "allow"
    REVIEW = "review"
    BLOCK = "block"


class ReviewStatus(enum.StrEnum):
    OPEN = "open"
    LEGITIMATE = "legitimate"
    FRAUDULENT = "fraudulent"


class FraudRule(db.Model):
    __tablename__ = "fraud_rules"
    __table_args__ = {"schema": "public"}

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    expression: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(10))
    description: Mapped[str] = mapped_column(String(255), default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class FraudReviewCase(db.Model):
    __tablename__ = "fraud_review_cases"
    __table_args__ = {"schema": "public"}

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(40))
    stk_push_id: Mapped[str] = mapped_column(String(40), unique=True)
    rule_id: Mapped[str] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(20), default=ReviewStatus.OPEN.value)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    notes: Mapped[str] = mapped_column(Text, default="")


class BlockedPhone(db.Model):
    __tablename__ = "phone_blocklist"
    __table_args__ = {"schema": "public"}

    tenant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    phone: Mapped[str] = mapped_column(String(12), primary_key=True)
    reason: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class FraudBlocked(PermissionDenied):
    code = "fraud_blocked"
    message = "This push was blocked by fraud screening; nothing was charged."


# What a rule may name. Velocity counters include the push being screened.
ATTRIBUTE_TYPES = {
    "amount": rule_engine.DataType.FLOAT,  # KES
    "phone": rule_engine.DataType.STRING,  # 2547XXXXXXXX
    "tenant_age_days": rule_engine.DataType.FLOAT,  # fractional days since signup
    "plan": rule_engine.DataType.STRING,  # current plan code
    "livemode": rule_engine.DataType.BOOLEAN,
    "hour_eat": rule_engine.DataType.FLOAT,  # 0..23, Africa/Nairobi
    "phone_pushes_10m": rule_engine.DataType.FLOAT,
    "phone_pushes_1h": rule_engine.DataType.FLOAT,
    "phone_tenants_24h": rule_engine.DataType.FLOAT,  # distinct tenants, rolling 24 h
    "phone_cancellations_1h": rule_engine.DataType.FLOAT,  # customer-cancelled pushes
    "tenant_volume_today": rule_engine.DataType.FLOAT,  # KES requested today (EAT)
    "tenant_avg_daily_7d": rule_engine.DataType.FLOAT,  # mean of the 7 days before today
}
_CONTEXT = rule_engine.Context(type_resolver=rule_engine.type_resolver_from_dict(ATTRIBUTE_TYPES))


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    rule_id: str | None = None  # the matching rule; None when allowed by default
    blocklisted: bool = False


@dataclass(frozen=True)
class ScreenedPush:
    phone: str
    amount: int
    livemode: bool


@dataclass(frozen=True)
class CompiledRule:
    id: str
    outcome: Outcome
    rule: rule_engine.Rule


@functools.lru_cache(maxsize=512)
def compile_expression(expression: str) -> rule_engine.Rule:
    """Raises rule_engine.EngineError for a bad expression or an unknown attribute."""
    return rule_engine.Rule(expression, context=_CONTEXT)


_cached_rules: tuple[float, tuple[CompiledRule, ...]] | None = None
# Set on the session by an edit of the rules: the cache is dropped once the edit commits.
_RULES_CHANGED = "lango.fraud_rules_changed"


def invalidate_rules() -> None:
    """Make the next screening re-read the rules."""
    global _cached_rules
    _cached_rules = None


def invalidate_rules_once_committed() -> None:
    """Make screenings re-read the rules once the current transaction commits (before, they
    would read the old rules and cache them again)."""
    db.session.info[_RULES_CHANGED] = True


@event.listens_for(Session, "after_commit")
def _rules_committed(session: Session) -> None:
    if session.info.pop(_RULES_CHANGED, False):
        invalidate_rules()


@event.listens_for(Session, "after_rollback")
def _rules_rolled_back(session: Session) -> None:
    session.info.pop(_RULES_CHANGED, None)


def active_rules() -> tuple[CompiledRule, ...]:
    """Enabled rules in match order, at most RULES_CACHE_SECONDS old. A rule whose expression
    does not compile is skipped and logged (by id), never allowed to stop every push. No
    lock: screenings that find the cache stale at the same moment each re-read it (a few
    identical reads), rather than one tenant's push waiting for another's."""
    global _cached_rules
    cached = _cached_rules
    if cached is not None and time.monotonic() - cached[0] < RULES_CACHE_SECONDS:
        return cached[1]
    rows = db.session.execute(
        select(FraudRule.id, FraudRule.expression, FraudRule.outcome)
        .where(FraudRule.enabled.is_(True))
        .order_by(FraudRule.position, FraudRule.id)
    ).all()
    compiled = []
    for rule_id, expression, outcome in rows:
        try:
            compiled.append(CompiledRule(rule_id, Outcome(outcome), compile_expression(expression)))
        except (rule_engine.EngineError, ValueError):
            logger.error("fraud rule does not compile; skipped", extra={"rule_id": rule_id})
    _cached_rules = (time.monotonic(), tuple(compiled))
    return _cached_rules[1]


def decide(rules: tuple[CompiledRule, ...], attributes: dict) -> Decision:
    """First matching rule wins; none matching allows."""
    for compiled in rules:
        try:
            matched = compiled.rule.matches(attributes)
        except rule_engine.EngineError:
            logger.error("fraud rule failed to evaluate; skipped", extra={"rule_id": compiled.id})
            continue
        if matched:
            return Decision(compiled.outcome, compiled.id)
    return Decision(Outcome.ALLOW)


def screen(tenant_id: str, push: ScreenedPush, now: datetime | None = None) -> Decision:
    """Screen one push attempt for `tenant_id`: blocklisted phone → block; else the first
    matching rule's outcome; else allow. Counts the attempt in the velocity counters (one
    Redis round trip) unless the phone is blocklisted. Never writes to the database."""
    now = now or datetime.now(UTC)
    # tenants.plan is the current plan: billing changes it with the subscription's.
    created_at, plan, blocklisted = db.session.execute(
        select(
            Tenant.created_at,
            Tenant.plan,
            exists().where(BlockedPhone.tenant_id == Tenant.id, BlockedPhone.phone == push.phone),
        ).where(Tenant.id == tenant_id)
    ).one()
    if blocklisted:
        return Decision(Outcome.BLOCK, blocklisted=True)
    counters = velocity.record_attempt(
        current_app.extensions["lango.redis"],
        attempt_id=new_id("att"),
        tenant_id=tenant_id,
        phone=push.phone,
        amount=push.amount,
        livemode=push.livemode,
        now=now,
    )
    attributes = push_attributes(
        push, at=now, tenant_created_at=created_at, plan=plan, counters=counters.__dict__
    )
    return decide(active_rules(), attributes)


def push_attributes(
    push: ScreenedPush, *, at: datetime, tenant_created_at: datetime, plan: str, counters: dict
) -> dict:
    """What a rule sees about one push attempt screened at `at`: ATTRIBUTE_TYPES' names.
    `counters` holds the velocity ones (`velocity.Velocity`'s fields). Used by `screen` and by
    the rule dry run (compliance.dry_run), so both evaluate the same attributes."""
    return {
        "amount": push.amount,
        "phone": push.phone,
        "tenant_age_days": (at - tenant_created_at).total_seconds() / 86400,
        "plan": plan,
        "livemode": push.livemode,
        "hour_eat": at.astimezone(velocity.EAT).hour,
        **counters,
    }


def refuse(decision: Decision) -> FraudBlocked:
    """The error for a blocked push: names the rule (or the blocklist), never its text."""
    if decision.blocklisted:
        return FraudBlocked(
            "This phone number is on your blocklist; nothing was charged.",
            rule_id=None,
            blocked_by="blocklist",
        )
    return FraudBlocked(rule_id=decision.rule_id, blocked_by="rule")


def open_review_case(tenant_id: str, stk_push_id: str, rule_id: str) -> FraudReviewCase:
    """Add an open review case to the caller's transaction (committed with the push)."""
    case = FraudReviewCase(
        id=new_id("frc"),
        tenant_id=tenant_id,
        stk_push_id=stk_push_id,
        rule_id=rule_id,
        status=ReviewStatus.OPEN.value,
        created_at=datetime.now(UTC),
        notes="",
    )
    db.session.add(case)
    return case


@dataclass(frozen=True)
class PushReviewCase:
    """What a tenant may see of the review case a push opened."""

    id: str
    status: str
    rule_id: str
    rule_description: str | None
    created_at: datetime


def review_case_of_push(tenant_id: str, stk_push_id: str) -> PushReviewCase | None:
    """The review case the tenant's push opened (at most one), with its rule's description;
    None when screening let the push through without one. Read in the caller's transaction."""
    row = db.session.execute(
        select(FraudReviewCase, FraudRule.description)
        .outerjoin(FraudRule, FraudRule.id == FraudReviewCase.rule_id)
        .where(FraudReviewCase.stk_push_id == stk_push_id, FraudReviewCase.tenant_id == tenant_id)
    ).one_or_none()
    if row is None:
        return None
    case, description = row
    return PushReviewCase(case.id, case.status, case.rule_id, description, case.created_at)


def count_cancellation(event: Event) -> None:
    """Outbox subscriber of `payment.cancelled`: a push the customer cancelled feeds the
    `phone_cancellations_1h` counter, as of when the event was recorded (idempotent per
    push, so a retried handling counts it once)."""
    push = event.data["object"]
    velocity.record_cancellation(
        current_app.extensions["lango.redis"],
        push_id=push["id"],
        phone=push["phone_number"],
        livemode=push["livemode"],
        now=event.created_at,
    )
