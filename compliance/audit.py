"""The audit log: who changed what, append-only and hash-chained per tenant.

Entries form one hash chain per tenant (the entries whose subject is that tenant: their
`tenant_id`) and one for the platform (entries with no tenant: staff, plans, fraud rules,
sign-ins). In its chain each entry has `chain_seq` 1, 2, 3 … without gaps, and its `hash` is
HMAC-SHA256, under a key that lives in configuration and never in the database
(compliance.audit_keys), over the previous entry's hash plus a canonical JSON of the entry's
own content. Editing, deleting or reordering an entry breaks its chain from there on, and a
superuser cannot recompute the hash without the key (compliance.audit_chain verifies, and
anchors every chain's head in and outside the database).

An append locks its chain's head row (public.audit_chain_heads) until its transaction ends,
so each chain stays linear under concurrency while chains never wait for one another: one
tenant's audited writes never queue behind another's. Appends run in the caller's
transaction: the entry commits (or rolls back) with the change it records. `seq` numbers
every entry across chains from a sequence (the order the console lists and exports; gaps
where an append rolled back). The table itself refuses UPDATE, DELETE and TRUNCATE (trigger).

Entries written before the per-chain revision (migration 0012) keep their hashes: they are
the first stretch of the platform chain, in the format of their time (`hash_format` 1).
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import current_app, g, has_request_context
from flask_login import current_user
from sqlalchemy import BigInteger, DateTime, SmallInteger, String, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from compliance.audit_keys import AuditKey, current_key_ring
from core.api import paginate
from core.extensions import db
from core.ids import new_id
from core.ratelimit import client_ip
from tenants.models import ApiKey, Member

GENESIS_HASH = "0" * 64
PLATFORM_CHAIN = "platform"  # tenant ids are `ten_…`: never a tenant's chain name
# hash_format: what an entry's hash covers. LEGACY: entries of the single platform-wide
# chain (before migration 0012), whose content names no chain; CHAINED: every entry since.
LEGACY_FORMAT = 1
CHAINED_FORMAT = 2
# Claims the chain's head: the row is locked until the transaction ends (only appends to
# this chain wait for it), and what it returns is the head as committed by the append
# before. A chain's first append creates its row. The entry's `seq` is drawn at once.
_CLAIM_HEAD = text(
    "INSERT INTO public.audit_chain_heads AS head (chain, seq, hash)"
    " VALUES (:chain, 0, :genesis)"
    " ON CONFLICT (chain) DO UPDATE SET seq = head.seq"
    " RETURNING head.seq, head.hash, nextval('public.audit_log_seq') AS entry_seq"
)
_MOVE_HEAD = text(
    "UPDATE public.audit_chain_heads SET seq = :seq, hash = :hash WHERE chain = :chain"
)


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
    # The tenant id, or PLATFORM_CHAIN; legacy entries are all in the platform chain.
    chain: Mapped[str] = mapped_column(String(40))
    chain_seq: Mapped[int] = mapped_column(BigInteger)
    hash_format: Mapped[int] = mapped_column(SmallInteger)
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


class AuditChainHead(db.Model):
    """Each chain's newest entry (seq, hash): the row an append locks. Written in the
    append's transaction, so it always agrees with the chain unless someone tampered."""

    __tablename__ = "audit_chain_heads"
    __table_args__ = {"schema": "public"}

    chain: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


def record(
    action: AuditAction,
    *,
    target_type: str,
    target_id: str | None,
    tenant_id: str | None,
    diff: dict | None = None,
    actor: Actor | None = None,
) -> AuditEntry:
    """Append one entry to its chain (the tenant's, or the platform's when `tenant_id` is
    None) in the caller's transaction (the caller commits). Holds that chain's head lock
    until the transaction ends; other chains are not touched. The actor, source IP and
    request id come from the current request when `actor` is not given (an API key's caller,
    else "system")."""
    actor = actor or current_actor()
    key = current_key_ring().signing
    chain = tenant_id or PLATFORM_CHAIN
    head = db.session.execute(_CLAIM_HEAD, {"chain": chain, "genesis": GENESIS_HASH}).one()
    entry = AuditEntry(
        id=new_id("aud"),
        seq=head.entry_seq,
        chain=chain,
        chain_seq=head.seq + 1,
        hash_format=CHAINED_FORMAT,
        occurred_at=datetime.now(UTC),
        actor_type=ActorType(actor.type).value,
        actor_id=actor.id,
        actor_label=actor.label,
        action=AuditAction(action).value,
        target_type=target_type,
        target_id=target_id,
        tenant_id=tenant_id,
        source_ip=_request_value(client_ip),
        request_id=_request_value(lambda: g.get("request_id")),
        # Stored as JSONB returns it; hashed in the same normal form.
        diff=None if diff is None else json.loads(json.dumps(diff, default=str)),
        prev_hash=head.hash,
        key_id=key.id,
    )
    entry.hash = entry_hash(entry, entry.prev_hash, key)
    db.session.add(entry)
    db.session.flush()
    db.session.execute(_MOVE_HEAD, {"chain": chain, "seq": entry.chain_seq, "hash": entry.hash})
    return entry


def current_actor() -> Actor:
    """Who acts in the current request: the API key (labelled with its prefix); else the
    user signed in to the pages (a member, or a staff user: labelled with the email); else
    "system" (jobs, commands, Daraja's callbacks)."""
    if not has_request_context():
        return SYSTEM
    caller = g.get("caller")
    if caller is not None:
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
    """Everything an entry says, as canonical JSON (sorted keys, no spaces, UTC times); since
    per-tenant chains (CHAINED_FORMAT), its place too: the chain and its seq there."""
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
    if entry.hash_format != LEGACY_FORMAT:
        content.update(chain=entry.chain, chain_seq=entry.chain_seq)
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
