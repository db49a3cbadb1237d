"""The audit log: who changed what, append-only and hash-chained.

Each entry's `hash` is HMAC-SHA256, under a key that lives in configuration and never in the
database (compliance.audit_keys), over the previous entry's hash plus a canonical JSON of the
entry's own content; `seq` counts 1, 2, 3 … without gaps. Editing, deleting or reordering
any entry breaks the chain from there on, and a superuser cannot recompute the hash without
the key (compliance.audit_chain verifies, and anchors the head in checkpoints outside the
database). Appends take a transaction-level advisory lock, so the chain stays linear under
concurrency, and run in the caller's transaction: the entry commits (or rolls back) with the
change it records. The table itself refuses UPDATE, DELETE and TRUNCATE (trigger).
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import current_app, g, has_request_context
from flask_login import current_user
from sqlalchemy import BigInteger, DateTime, String, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from compliance.audit_keys import AuditKey, current_key_ring
from core.api import paginate
from core.extensions import db
from core.ids import new_id
from tenants.models import Member

GENESIS_HASH = "0" * 64
# One chain for the whole platform: every append serialises on this lock until its
# transaction ends, which keeps `prev_hash` pointing at the entry committed just before and
# `seq` free of gaps (a rolled-back append leaves none: seq is not taken from a sequence).
_APPEND_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('lango.audit_log', 0))"


class AuditAction(enum.StrEnum):
    TENANT_SIGNED_UP = "tenant.signed_up"
    TENANT_SUSPENDED = "tenant.suspended"
    TENANT_REINSTATED = "tenant.reinstated"
    API_KEY_CREATED = "api_key.created"
    API_KEY_REVOKED = "api_key.revoked"
    API_KEY_ROLLED = "api_key.rolled"
    MPESA_CREDENTIALS_CHANGED = "mpesa_credentials.changed"
    SUBSCRIPTION_PLAN_CHANGED = "subscription.plan_changed"
    WEBHOOK_ENDPOINT_CREATED = "webhook_endpoint.created"
    WEBHOOK_ENDPOINT_UPDATED = "webhook_endpoint.updated"
    WEBHOOK_ENDPOINT_DELETED = "webhook_endpoint.deleted"
    STK_PUSH_INITIATED = "stk_push.initiated"
    KYC_APPROVED = "kyc.approved"
    KYC_REJECTED = "kyc.rejected"
    STAFF_LOGIN_SUCCEEDED = "staff.login_succeeded"
    STAFF_LOGIN_FAILED = "staff.login_failed"
    FRAUD_RULE_CHANGED = "fraud_rule.changed"
    FRAUD_CASE_RESOLVED = "fraud_case.resolved"
    PHONE_REVEALED = "phone.revealed"
    FRAUD_CASE_ASSIGNED = "fraud_case.assigned"
    PLAN_CREATED = "plan.created"
    PLAN_UPDATED = "plan.updated"
    PLAN_RETIRED = "plan.retired"
    STAFF_CREATED = "staff.created"
    MEMBER_INVITED = "member.invited"
    MEMBER_INVITE_REVOKED = "member.invite_revoked"
    MEMBER_JOINED = "member.joined"
    MEMBER_ROLE_CHANGED = "member.role_changed"
    MEMBER_REMOVED = "member.removed"
    MEMBER_PASSWORD_CHANGED = "member.password_changed"  # noqa: S105 (an action name)
    MEMBER_TOTP_ENABLED = "member.totp_enabled"
    MEMBER_TOTP_DISABLED = "member.totp_disabled"


class ActorType(enum.StrEnum):
    STAFF = "staff"
    MEMBER = "member"
    API_KEY = "api_key"
    SYSTEM = "system"


@dataclass(frozen=True)
class Actor:
    type: ActorType
    id: str | None = None
    label: str | None = None


SYSTEM = Actor(ActorType.SYSTEM)
# Page users (flask-login's current_user) by class; staff adds StaffUser at start-up.
_SESSION_USER_TYPES: dict[type, ActorType] = {Member: ActorType.MEMBER}


class AuditEntry(db.Model):
    __tablename__ = "audit_log"
    __table_args__ = {"schema": "public"}

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, unique=True)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    actor_type: Mapped[str] = mapped_column(String(20))
    actor_id: Mapped[str | None] = mapped_column(String(64))
    actor_label: Mapped[str | None] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(60))
    target_type: Mapped[str] = mapped_column(String(40))
    target_id: Mapped[str | None] = mapped_column(String(64))
    tenant_id: Mapped[str | None] = mapped_column(String(40))
    source_ip: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(40))
    diff: Mapped[dict | None] = mapped_column(JSONB)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # The audit key whose HMAC `hash` is; NULL: written before keying (unkeyed SHA-256).
    key_id: Mapped[str | None] = mapped_column(String(16))


def record(
    action: AuditAction,
    *,
    target_type: str,
    target_id: str | None,
    tenant_id: str | None,
    diff: dict | None = None,
    actor: Actor | None = None,
) -> AuditEntry:
    """Append one entry in the caller's transaction (the caller commits). Holds the chain's
    advisory lock until that transaction ends. The actor, source IP and request id come from
    the current request when `actor` is not given (an API key's caller, else "system")."""
    actor = actor or current_actor()
    key = current_key_ring().signing
    db.session.execute(text(_APPEND_LOCK))
    head = db.session.execute(
        select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
    ).first()
    entry = AuditEntry(
        id=new_id("aud"),
        seq=head.seq + 1 if head else 1,
        occurred_at=datetime.now(UTC),
        actor_type=ActorType(actor.type).value,
        actor_id=actor.id,
        actor_label=actor.label,
        action=AuditAction(action).value,
        target_type=target_type,
        target_id=target_id,
        tenant_id=tenant_id,
        source_ip=_request_value(_client_ip),
        request_id=_request_value(lambda: g.get("request_id")),
        # Stored as JSONB returns it; hashed in the same normal form.
        diff=None if diff is None else json.loads(json.dumps(diff, default=str)),
        prev_hash=head.hash if head else GENESIS_HASH,
        key_id=key.id,
    )
    entry.hash = entry_hash(entry, entry.prev_hash, key)
    db.session.add(entry)
    db.session.flush()
    return entry


def current_actor() -> Actor:
    """Who acts in the current request: the API key (labelled with its prefix); else the
    user signed in to the pages (a member, or a staff user: labelled with the email); else
    "system" (jobs, commands, Daraja's callbacks)."""
    if not has_request_context():
        return SYSTEM
    caller = g.get("caller")
    if caller is not None:
        from tenants.models import ApiKey

        prefix = db.session.scalar(select(ApiKey.prefix).where(ApiKey.id == caller.key_id))
        return Actor(ActorType.API_KEY, caller.key_id, prefix)
    user = current_user._get_current_object() if hasattr(current_app, "login_manager") else None
    actor_type = _SESSION_USER_TYPES.get(type(user))
    if actor_type is None:
        return SYSTEM
    return Actor(actor_type, user.id, user.email)


def name_session_users(user_class: type, actor_type: ActorType) -> None:
    """Audit `user_class` (a flask-login user of the pages) as `actor_type`: how a package
    above compliance (staff) makes its users actors without compliance importing it."""
    _SESSION_USER_TYPES[user_class] = actor_type


def entry_hash(entry: AuditEntry, prev_hash: str, key: AuditKey | None) -> str:
    """HMAC-SHA256 under `key`; with no key, the unkeyed SHA-256 of entries written before
    keying (verified only where a checkpoint sealed them as such: compliance.audit_chain)."""
    message = prev_hash + canonical_content(entry)
    if key is None:
        return hashlib.sha256(message.encode()).hexdigest()
    return key.sign(message)


def canonical_content(entry: AuditEntry) -> str:
    """Everything an entry says, as canonical JSON (sorted keys, no spaces, UTC times)."""
    content = {
        "seq": entry.seq,
        "id": entry.id,
        "occurred_at": entry.occurred_at.astimezone(UTC).isoformat(),
        "actor_type": entry.actor_type,
        "actor_id": entry.actor_id,
        "actor_label": entry.actor_label,
        "action": entry.action,
        "target_type": entry.target_type,
        "target_id": entry.target_id,
        "tenant_id": entry.tenant_id,
        "source_ip": entry.source_ip,
        "request_id": entry.request_id,
        "diff": entry.diff,
    }
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def list_entries(
    tenant_id: str,
    *,
    limit: int,
    action: str | None = None,
    occurred_gte: datetime | None = None,
    occurred_lte: datetime | None = None,
    **cursor,
) -> dict:
    """A tenant's own entries, newest first (cursor pagination on the entry id)."""
    statement = select(AuditEntry).where(AuditEntry.tenant_id == tenant_id)
    if action is not None:
        statement = statement.where(AuditEntry.action == action)
    if occurred_gte is not None:
        statement = statement.where(AuditEntry.occurred_at >= occurred_gte)
    if occurred_lte is not None:
        statement = statement.where(AuditEntry.occurred_at <= occurred_lte)
    return paginate(statement, AuditEntry.id, limit=limit, **cursor)


def _request_value(read):
    return read() if has_request_context() else None


def _client_ip() -> str:
    from core.ratelimit import client_ip

    return client_ip()


# --- receivers for other domains' signals (connected in core.create_app) ------------------
# tenants, billing and webhooks must not import compliance (dependencies flow the other
# way), so they announce changes with blinker signals, sent inside their transactions.


def on_tenant_created(tenant, **_signal_data) -> None:
    owner = db.session.scalar(select(Member).where(Member.tenant_id == tenant.id).limit(1))
    record(
        AuditAction.TENANT_SIGNED_UP,
        target_type="tenant",
        target_id=tenant.id,
        tenant_id=tenant.id,
        diff={"after": {"business_name": tenant.business_name, "plan": tenant.plan}},
        actor=Actor(ActorType.MEMBER, owner.id, owner.email) if owner else None,
    )


_KEY_ACTIONS = {
    "created": AuditAction.API_KEY_CREATED,
    "revoked": AuditAction.API_KEY_REVOKED,
    "rolled": AuditAction.API_KEY_ROLLED,
}


def on_api_key_changed(key, *, change: str, replacement=None, **_signal_data) -> None:
    diff = {"after": {"name": key.name, "livemode": key.livemode, "prefix": key.prefix}}
    if replacement is not None:
        diff = {"before": {"key_id": key.id}, "after": {"key_id": replacement.id}}
    record(
        _KEY_ACTIONS[change],
        target_type="api_key",
        target_id=key.id,
        tenant_id=key.tenant_id,
        diff=diff,
    )


def on_plan_changed(subscription, *, from_plan, to_plan, **_signal_data) -> None:
    record(
        AuditAction.SUBSCRIPTION_PLAN_CHANGED,
        target_type="subscription",
        target_id=subscription.id,
        tenant_id=subscription.tenant_id,
        diff={"before": {"plan": from_plan.code}, "after": {"plan": to_plan.code}},
    )


_ENDPOINT_ACTIONS = {
    "created": AuditAction.WEBHOOK_ENDPOINT_CREATED,
    "updated": AuditAction.WEBHOOK_ENDPOINT_UPDATED,
    "deleted": AuditAction.WEBHOOK_ENDPOINT_DELETED,
}


def on_endpoint_changed(
    endpoint, *, change: str, tenant_id: str, before=None, after=None, **_signal_data
) -> None:
    record(
        _ENDPOINT_ACTIONS[change],
        target_type="webhook_endpoint",
        target_id=endpoint.id,
        tenant_id=tenant_id,
        diff={"before": before, "after": after},
    )


def on_member_changed(
    target,
    *,
    action: str,
    target_type: str,
    tenant_id: str,
    actor_id: str | None,
    actor_label: str | None,
    diff: dict | None = None,
    **_signal_data,
) -> None:
    """Receiver of tenants.members' `member_changed`: team and sign-in changes by a member."""
    record(
        AuditAction(action),
        target_type=target_type,
        target_id=target.id,
        tenant_id=tenant_id,
        diff=diff,
        actor=Actor(ActorType.MEMBER, actor_id, actor_label),
    )
