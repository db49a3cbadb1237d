"""Tenant lifecycle and API keys: sign-up with schema provisioning, key issue, roll, revoke
and authentication. Plain functions; no HTTP here. Nothing here commits: the caller's unit of
work (request, command) does.

Two changes are announced in their own transaction (core.changes), so packages above tenants
react without tenants importing them: `tenant_created`, last in sign-up's savepoint, with the
sign-up's `payment_method` (opaque here) — billing subscribes the tenant to its plan there
(in Stripe too, which may charge a card) and may refuse, undoing the whole sign-up; and
`api_key_changed` with `change` ("created", "revoked", "rolled"; a roll also sends
`replacement`) — compliance audits it, and a receiver that raises undoes the change."""

from __future__ import annotations

import hashlib
import secrets
import string
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError

from core.api import paginate
from core.changes import api_key_changed, tenant_created
from core.errors import AuthenticationFailed, Conflict, NotFound, TenantSuspended
from core.extensions import db
from core.ids import new_id
from core.migrations import provision_schema
from core.passwords import hash_password, password_matches
from core.tenancy import schema_name_for
from tenants.models import ApiKey, Member, MemberRole, Tenant, TenantStatus

DEFAULT_PLAN = "sandbox"
MAX_ROLL_GRACE = timedelta(hours=24)
# Active keys a tenant may hold per mode: ample for one key per service and environment, and
# a bound on credentials to guard (the rate limit is the tenant's, whatever the key count).
MAX_ACTIVE_KEYS_PER_MODE = 20
# How stale `last_used_at` may get: one write per key per minute, not one per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)

_SECRET_ALPHABET = string.ascii_letters + string.digits
_SECRET_LENGTH = 32  # 32 base62 characters ≈ 190 bits


class EmailTaken(Conflict):
    code = "email_taken"
    message = "An account with this email already exists."


class ApiKeyLimitReached(Conflict):
    code = "api_key_limit_reached"
    message = (
        f"This account already has {MAX_ACTIVE_KEYS_PER_MODE} active keys in this mode, the "
        "most it may hold; revoke one (or roll a key without a grace period) first."
    )


@dataclass(frozen=True)
class IssuedKey:
    """A key as created: the only moment its secret exists outside the caller's hands."""

    key: ApiKey
    secret: str

    def __getattr__(self, name: str):
        # Serialises like the key itself, plus `secret`.
        return getattr(self.key, name)


@dataclass(frozen=True)
class SignUp:
    tenant: Tenant
    owner: Member
    issued: IssuedKey


@dataclass(frozen=True)
class Caller:
    """Who an authenticated request is: resolved from the platform tables before any tenant
    transaction starts, and plain data so it outlives that short query."""

    tenant_id: str
    key_id: str
    livemode: bool
    live_enabled: bool


def sign_up(
    business_name: str,
    email: str,
    password: str,
    plan: str | None = None,
    payment_method: str | None = None,
) -> SignUp:
    """Create a tenant, its owner and a first test key, and provision its schema at head —
    all in one savepoint: on any failure nothing of it remains, and the caller's transaction
    goes on (a page that shows the error commits nothing of the sign-up).

    Raises EmailTaken if the email already belongs to a member (also under a race), and
    whatever billing raises from `tenant_created` (unknown plan, card declined, Stripe down).
    """
    tenant_id = new_id("ten")
    tenant = Tenant(
        id=tenant_id,
        business_name=business_name.strip(),
        status=TenantStatus.ACTIVE,
        plan=plan or DEFAULT_PLAN,
        live_enabled=False,
        schema_name=schema_name_for(tenant_id),
        shard="default",
    )
    owner = Member(
        id=new_id("mem"),
        tenant_id=tenant_id,
        email=normalize_email(email),
        password_hash=hash_password(password),
        role=MemberRole.OWNER,
    )
    if db.session.scalar(select(Member.id).where(Member.email == owner.email)):
        raise EmailTaken(param="email")
    try:
        with db.session.begin_nested():
            db.session.add(tenant)
            db.session.flush()  # the tenant row first: members and keys reference it
            db.session.add(owner)
            issued = _new_key(tenant_id, livemode=False, name="Default test key")
            db.session.flush()
            tenant.schema_revision = provision_schema(db.session.connection(), tenant.schema_name)
            tenant.schema_migrated_at = datetime.now(UTC)
            # Last: once billing has charged a card, only the commit itself can still fail.
            tenant_created.send(tenant, payment_method=payment_method)
            db.session.flush()
    except IntegrityError as exc:
        if "uq_members_email" in str(exc.orig):
            raise EmailTaken(param="email") from None
        raise
    return SignUp(tenant=tenant, owner=owner, issued=issued)


def normalize_email(email: str) -> str:
    return email.strip().lower()


def verify_password(member: Member, password: str) -> bool:
    return password_matches(member.password_hash, password)


def get_tenant(tenant_id: str) -> Tenant:
    tenant = db.session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFound("No such tenant.")
    return tenant


def create_api_key(tenant_id: str, *, livemode: bool, name: str) -> IssuedKey:
    """Issue a key. Raises ApiKeyLimitReached (409) when the tenant already holds
    MAX_ACTIVE_KEYS_PER_MODE active keys of that mode (exact under concurrency)."""
    _ensure_room_for_key(tenant_id, livemode)
    issued = _new_key(tenant_id, livemode=livemode, name=name)
    db.session.flush()
    api_key_changed.send(issued.key, change="created")
    db.session.flush()
    return issued


def list_api_keys(tenant_id: str, *, livemode: bool, limit: int, **cursor) -> dict:
    """A key sees only keys of its own mode: a test key can neither list nor mint live keys."""
    statement = select(ApiKey).where(
        ApiKey.tenant_id == tenant_id,
        ApiKey.livemode == livemode,
        ApiKey.revoked_at.is_(None),
        or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > datetime.now(UTC)),
    )
    return paginate(statement, ApiKey.id, limit=limit, **cursor)


def revoke_api_key(tenant_id: str, key_id: str, *, livemode: bool) -> ApiKey:
    key = _own_key(tenant_id, key_id, livemode)
    key.revoked_at = datetime.now(UTC)
    api_key_changed.send(key, change="revoked")
    db.session.flush()
    return key


def roll_api_key(
    tenant_id: str, key_id: str, *, livemode: bool, grace: timedelta = timedelta(0)
) -> IssuedKey:
    """Issue a replacement key; the old one stays valid for `grace` (0..24 h), then fails.
    With a grace period both count as active until it ends, so it needs room under
    MAX_ACTIVE_KEYS_PER_MODE (else ApiKeyLimitReached); without one it always works."""
    if not timedelta(0) <= grace <= MAX_ROLL_GRACE:
        raise ValueError("grace must be between 0 and 24 hours")
    if grace:
        _ensure_room_for_key(tenant_id, livemode)
    old = _own_key(tenant_id, key_id, livemode, for_update=True)
    issued = _new_key(tenant_id, livemode=livemode, name=old.name)
    now = datetime.now(UTC)
    if grace:
        old.expires_at = min(old.expires_at or now + grace, now + grace)
    else:
        old.revoked_at = now
    old.rolled_into_id = issued.key.id
    db.session.flush()
    api_key_changed.send(old, change="rolled", replacement=issued.key)
    db.session.flush()
    return issued


def authenticate(secret: str, *, admit_suspended_for: tuple[str, ...] = ()) -> Caller:
    """Resolve a secret key to its caller, or raise AuthenticationFailed / TenantSuspended.

    A suspended tenant is refused unless its `suspended_reason` is in `admit_suspended_for`
    (the invoices endpoints admit "billing", so a tenant can pay its way back).
    Reads the platform tables (and notes the key's use): the caller ends this transaction
    before it binds the tenant (tenants.auth).
    """
    if not secret.startswith(("sk_test_", "sk_live_")):
        raise AuthenticationFailed("Invalid API key: keys look like sk_test_… or sk_live_….")
    row = db.session.execute(
        select(ApiKey, Tenant)
        .join(Tenant, Tenant.id == ApiKey.tenant_id)
        .where(ApiKey.secret_hash == hash_secret(secret))
    ).one_or_none()
    now = datetime.now(UTC)
    if row is None:
        raise AuthenticationFailed("Invalid API key provided.")
    key, tenant = row
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        raise AuthenticationFailed("This API key has been revoked or has expired.")
    if (
        tenant.status is not TenantStatus.ACTIVE
        and tenant.suspended_reason not in admit_suspended_for
    ):
        if tenant.suspended_reason == "billing":
            raise TenantSuspended(
                "This account is suspended for an unpaid invoice. It can still list its "
                "invoices (GET /v1/invoices) and pay one (POST /v1/invoices/{id}/pay); "
                "paying reinstates it."
            )
        raise TenantSuspended()
    caller = Caller(tenant.id, key.id, key.livemode, tenant.live_enabled)
    if key.last_used_at is None or key.last_used_at < now - LAST_USED_RESOLUTION:
        db.session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
    return caller


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True)
class DemoTenant:
    tenant: Tenant
    issued: IssuedKey
    email: str
    password: str


def ensure_demo_tenant(email: str = "demo@lango.local") -> DemoTenant:
    """The demo tenant `lango up` prints a key and a dashboard sign-in for. Idempotent:
    reuses the tenant, replaces its previous demo key and gives the owner a new password
    (a secret cannot be shown twice), and ends the owner's sessions."""
    password = secrets.token_urlsafe(12)
    member = db.session.scalar(select(Member).where(Member.email == email))
    if member is None:
        signed_up = sign_up("Demo Shop", email, password)
        return DemoTenant(signed_up.tenant, signed_up.issued, email, password)
    tenant = get_tenant(member.tenant_id)
    member.password_hash = hash_password(password)
    member.session_nonce = None
    db.session.execute(
        update(ApiKey)
        .where(ApiKey.tenant_id == tenant.id, ApiKey.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    issued = create_api_key(tenant.id, livemode=False, name="Default test key")
    return DemoTenant(tenant, issued, email, password)


def _new_key(tenant_id: str, *, livemode: bool, name: str) -> IssuedKey:
    secret = ("sk_live_" if livemode else "sk_test_") + "".join(
        secrets.choice(_SECRET_ALPHABET) for _ in range(_SECRET_LENGTH)
    )
    key = ApiKey(
        id=new_id("key"),
        tenant_id=tenant_id,
        name=name,
        livemode=livemode,
        secret_hash=hash_secret(secret),
        prefix=secret[:12],
        last4=secret[-4:],
        created_at=datetime.now(UTC),
    )
    db.session.add(key)
    return IssuedKey(key=key, secret=secret)


def _ensure_room_for_key(tenant_id: str, livemode: bool) -> None:
    # The tenant row's lock (FOR NO KEY UPDATE: inserts referencing it still go ahead) makes
    # concurrent creations count one after the other, so none slips past the cap.
    db.session.execute(
        select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True)
    )
    active = db.session.scalar(
        select(func.count())
        .select_from(ApiKey)
        .where(
            ApiKey.tenant_id == tenant_id,
            ApiKey.livemode == livemode,
            ApiKey.revoked_at.is_(None),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > datetime.now(UTC)),
        )
    )
    if active >= MAX_ACTIVE_KEYS_PER_MODE:
        raise ApiKeyLimitReached(param="mode")


def _own_key(tenant_id: str, key_id: str, livemode: bool, for_update: bool = False) -> ApiKey:
    statement = select(ApiKey).where(
        ApiKey.id == key_id,
        ApiKey.tenant_id == tenant_id,
        ApiKey.livemode == livemode,
        ApiKey.revoked_at.is_(None),
    )
    key = db.session.scalar(statement.with_for_update() if for_update else statement)
    if key is None:
        raise NotFound("No such API key.", param="id")
    return key
