"""Tenant members: dashboard sign-in (password, then an optional TOTP code), sessions, the
team (invite links, roles, removal) and a member's own password and second factor.
Plain functions; no HTTP here.

Every change is audited: `core.changes.member_changed` is sent inside the change's
transaction with `action` (an audit action value such as "member.invited"), `target_type`,
`tenant_id`, `actor_id`, `actor_label` and `diff` (compliance records it; tenants may not
import compliance), so the entry commits or rolls back with it.
Nothing here commits: the caller's unit of work (request, command) does, and rolls back what
a function wrote when it raises. Each function checks before it writes, so one that raises
has written nothing.
Team changes are scoped by `tenant_id`: another tenant's member or invite id is NotFound.
A tenant always keeps at least one owner; the check runs with the team's rows locked, so two
owners demoting each other at once cannot both succeed.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyotp
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from core import signin_throttle, totp
from core.changes import member_changed
from core.crypto import decrypt, encrypt
from core.errors import (
    AuthenticationFailed,
    Conflict,
    NotFound,
    PermissionDenied,
    TenantSuspended,
    ValidationFailed,
)
from core.extensions import db
from core.ids import new_id
from core.passwords import hash_password, spend_a_password_check
from tenants.models import Member, MemberInvite, MemberRole, Tenant
from tenants.schemas import _COMMON_PASSWORDS
from tenants.service import EmailTaken, normalize_email, verify_password

logger = logging.getLogger("lango.members")

INVITE_LIFETIME = timedelta(days=7)
MIN_PASSWORD_LENGTH = 10  # as the API's sign-up (tenants.schemas)
MAX_PASSWORD_LENGTH = 128
ISSUER = "Lango"
_TOTP_SECRET = re.compile(r"[A-Z2-7]{32}")


def clock() -> float:
    """Seconds since the epoch; tests replace it to move through TOTP steps."""
    return time.time()


class MemberAuthFailed(AuthenticationFailed):
    code = "member_credentials_invalid"
    message = "Wrong email or password."


class TotpInvalid(AuthenticationFailed):
    code = "totp_invalid"
    message = "Wrong code."


class WrongPassword(ValidationFailed):
    code = "password_incorrect"
    message = "That is not your current password."


class InviteInvalid(NotFound):
    code = "invite_invalid"
    message = (
        "This invite link is invalid, has expired or was already used. "
        "Ask an owner of the team for a new one."
    )


class LastOwner(Conflict):
    code = "last_owner"
    message = "A team needs at least one owner: make someone else an owner first."


@dataclass(frozen=True)
class TotpEnrollment:
    """A new TOTP secret, shown to the member until they confirm it with a code."""

    secret: str
    uri: str


# --- signing in ---------------------------------------------------------------------------


def authenticate_member(email: str, password: str, *, client_address: str) -> Member:
    """The member this email and password belong to, or MemberAuthFailed (the same answer,
    taking the same time, for an unknown email and a wrong password). Failures are
    throttled per account and client address (core.signin_throttle): SignInThrottled,
    checked before the password, so a waiting address cannot probe it. A right password
    completes the sign-in (clearing the address's failures) only for a member without
    TOTP; otherwise `verify_member_totp` does. Attempts on one member are serialised by a
    row lock, so parallel guesses are counted one by one."""
    email = normalize_email(email)
    account = _throttle_key(email)
    member = db.session.scalar(select(Member).where(Member.email == email).with_for_update())
    _refuse_if_throttled(account, client_address)
    if member is None:
        spend_a_password_check(password)
        _fail(account, client_address, None, "unknown_email")
        raise MemberAuthFailed()
    if not verify_password(member, password):
        _fail(account, client_address, member.id, "password")
        raise MemberAuthFailed()
    if not member.totp_secret:
        signin_throttle.record_success(account, client_address)
    return member


def has_totp(member: Member) -> bool:
    return bool(member.totp_secret)


def start_session(member: Member) -> Member:
    """Sign `member` in. Signed-in devices share the member's session nonce, so a
    sign-in on the phone leaves the laptop signed in; signing out, a password change or
    removal clears it, which ends every session, and the next sign-in draws a new one."""
    if not member.session_nonce:
        member.session_nonce = secrets.token_urlsafe(24)
    db.session.flush()
    logger.info("member.login_succeeded", extra={"member_id": member.id})
    return member


def end_session(member_id: str) -> None:
    """Sign-out: clear the nonce, so the session cookie (even a copy) no longer signs in."""
    member = db.session.get(Member, member_id)
    if member is not None:
        member.session_nonce = None
        db.session.flush()


def verify_member_totp(member_id: str, code: str, *, client_address: str) -> Member:
    """The second sign-in step: a code of the member's authenticator (±1 step of drift), each
    step accepted once. Attempts for one member are serialised by a row lock, so a code
    cannot be accepted twice by racing requests. A wrong code counts like a wrong password
    (TotpInvalid; SignInThrottled before any check once the address must wait); a right
    one clears the address's failures."""
    member = _locked_member(member_id)
    if member is None or not member.totp_secret:
        raise MemberAuthFailed("Sign in again.", code="member_login_required")
    account = _throttle_key(member.email)
    _refuse_if_throttled(account, client_address)
    try:
        step = _accepted_step(decrypt(member.totp_secret), code, member.last_totp_step)
    except TotpInvalid as error:
        _fail(account, client_address, member_id, error.code)
        raise
    member.last_totp_step = step
    db.session.flush()
    signin_throttle.record_success(account, client_address)
    return member


# --- a member's own account ---------------------------------------------------------------


def begin_totp_enrollment(member_id: str) -> TotpEnrollment:
    """A fresh secret and its otpauth URI; nothing is stored until `confirm_totp`."""
    member = _get(member_id)
    if member.totp_secret:
        raise Conflict("Two-step sign-in is already on.", code="totp_enabled")
    secret = pyotp.random_base32()
    return TotpEnrollment(secret, totp_uri(secret, member.email))


def totp_uri(secret: str, email: str) -> str:
    return totp.provisioning_uri(secret, email, ISSUER)


def is_totp_secret(secret: str | None) -> bool:
    """Whether `secret` looks like one `begin_totp_enrollment` makes (32 base32 letters)."""
    return bool(secret) and _TOTP_SECRET.fullmatch(secret) is not None


def confirm_totp(member_id: str, secret: str, code: str) -> Member:
    """Turn two-step sign-in on with `secret`, proven by a current `code` (whose step then
    counts as used). Raises ValidationFailed for a malformed secret, TotpInvalid, Conflict
    when it is already on."""
    if not is_totp_secret(secret):
        raise ValidationFailed("Start the set-up again.", code="totp_secret_invalid")
    member = _locked_member(member_id)
    if member is None:
        raise NotFound("No such member.")
    if member.totp_secret:
        raise Conflict("Two-step sign-in is already on.", code="totp_enabled")
    step = _accepted_step(secret, code, None)
    member.totp_secret = encrypt(secret)
    member.last_totp_step = step
    _audit(member, "member.totp_enabled", member.tenant_id, member)
    db.session.flush()
    return member


def disable_totp(member_id: str, password: str, *, client_address: str) -> Member:
    """Turn two-step sign-in off; needs the member's password (WrongPassword otherwise). A
    wrong password counts like a failed sign-in, so a stolen session cannot guess it."""
    member = _locked_member(member_id)
    if member is None:
        raise NotFound("No such member.")
    _check_password_again(member, password, client_address, param="password")
    if member.totp_secret:
        member.totp_secret = None
        member.last_totp_step = None
        _audit(member, "member.totp_disabled", member.tenant_id, member)
        db.session.flush()
    return member


def change_password(
    member_id: str, current_password: str, new_password: str, *, client_address: str
) -> Member:
    """Set a new password (checked like sign-up's) after the current one; rotates the
    session nonce, so every other session of the member ends. The caller signs the current
    session in again with the returned member. A wrong current password counts like a
    failed sign-in (SignInThrottled once the address must wait)."""
    member = _locked_member(member_id)
    if member is None:
        raise NotFound("No such member.")
    _check_password_again(member, current_password, client_address, param="current_password")
    check_new_password(new_password, member.email, param="new_password")
    member.password_hash = hash_password(new_password)
    member.session_nonce = secrets.token_urlsafe(24)
    _audit(member, "member.password_changed", member.tenant_id, member)
    db.session.flush()
    return member


def check_new_password(password: str, email: str, *, param: str = "password") -> None:
    """The API sign-up's password rules (tenants.schemas); raises ValidationFailed."""
    problem = None
    lowered = (password or "").lower()
    if len(password or "") < MIN_PASSWORD_LENGTH:
        problem = f"Use at least {MIN_PASSWORD_LENGTH} characters."
    elif len(password) > MAX_PASSWORD_LENGTH:
        problem = f"Use at most {MAX_PASSWORD_LENGTH} characters."
    elif lowered in _COMMON_PASSWORDS or len(set(password)) < 4:
        problem = "This password is too easy to guess."
    elif lowered in (email.lower(), email.lower().split("@")[0]):
        problem = "The password must not be your email address."
    if problem:
        raise ValidationFailed(problem, code="password_invalid", param=param)


# --- the team -----------------------------------------------------------------------------


def list_members(tenant_id: str) -> list[Member]:
    statement = select(Member).where(Member.tenant_id == tenant_id)
    return list(db.session.scalars(statement.order_by(Member.created_at, Member.id)))


def get_member(tenant_id: str, member_id: str) -> Member:
    member = db.session.scalar(
        select(Member).where(Member.id == member_id, Member.tenant_id == tenant_id)
    )
    if member is None:
        raise NotFound("No such team member.", param="member_id")
    return member


def invite_member(
    tenant_id: str, email: str, role: MemberRole | str, invited_by: Member
) -> tuple[MemberInvite, str]:
    """An invite link's token (returned only here; stored as its SHA-256) to join the team
    with `role`, valid for 7 days and once. Inviting an email again replaces its earlier
    pending invite. Raises EmailTaken when the email already has a Lango account (an email
    signs in to one tenant), PermissionDenied unless `invited_by` is an owner of the team."""
    role = _role(role)
    email = normalize_email(email)
    if "@" not in email:
        raise ValidationFailed("Enter an email address.", param="email")
    _lock_team(tenant_id, invited_by)
    if db.session.scalar(select(Member.id).where(Member.email == email)):
        raise EmailTaken("Someone with this email already has a Lango account.", param="email")
    now = datetime.now(UTC)
    for earlier in db.session.scalars(
        _pending_invites(tenant_id, now).where(MemberInvite.email == email)
    ):
        earlier.revoked_at = now
    token = secrets.token_urlsafe(32)
    invite = MemberInvite(
        id=new_id("inv"),
        tenant_id=tenant_id,
        email=email,
        role=role,
        token_hash=_token_hash(token),
        invited_by=invited_by.id,
        created_at=now,
        expires_at=now + INVITE_LIFETIME,
    )
    db.session.add(invite)
    db.session.flush()
    _audit(
        invite,
        "member.invited",
        tenant_id,
        invited_by,
        {"after": {"email": email, "role": role.value}},
        target_type="member_invite",
    )
    db.session.flush()
    return invite, token


def list_invites(tenant_id: str) -> list[MemberInvite]:
    """Invites not yet accepted, revoked or expired, newest first."""
    statement = _pending_invites(tenant_id, datetime.now(UTC))
    return list(db.session.scalars(statement.order_by(MemberInvite.created_at.desc())))


def revoke_invite(tenant_id: str, invite_id: str, by: Member) -> MemberInvite:
    """The invite's link stops working. NotFound unless it is a pending invite of the team."""
    _lock_team(tenant_id, by)
    invite = db.session.scalar(
        _pending_invites(tenant_id, datetime.now(UTC)).where(MemberInvite.id == invite_id)
    )
    if invite is None:
        raise NotFound("No such pending invite.", param="invite_id")
    invite.revoked_at = datetime.now(UTC)
    _audit(
        invite,
        "member.invite_revoked",
        tenant_id,
        by,
        {"before": {"email": invite.email, "role": invite.role.value}},
        target_type="member_invite",
    )
    db.session.flush()
    return invite


def get_invite_by_token(token: str) -> MemberInvite:
    """The pending invite behind a link; InviteInvalid when unknown, expired, revoked or used."""
    invite = db.session.scalar(
        select(MemberInvite).where(MemberInvite.token_hash == _token_hash(token or ""))
    )
    if invite is None or not _usable(invite):
        raise InviteInvalid()
    return invite


def accept_invite(token: str, password: str) -> Member:
    """Join the team: a member with the invite's email and role and this password. The
    invite is locked and used once (a second, even concurrent, accept gets InviteInvalid).
    Raises ValidationFailed for a weak password, EmailTaken if the email got an account
    meanwhile, TenantSuspended while the team's account is suspended (a suspended tenant
    changes nothing, its team included; the link works again once it is reinstated)."""
    invite = db.session.scalar(
        select(MemberInvite)
        .where(MemberInvite.token_hash == _token_hash(token or ""))
        .with_for_update()
    )
    if invite is None or not _usable(invite):
        raise InviteInvalid()
    if not db.session.get(Tenant, invite.tenant_id).is_active:
        raise TenantSuspended(
            "This team's Lango account is suspended; the invite works again once it is reinstated."
        )
    check_new_password(password, invite.email)
    if db.session.scalar(select(Member.id).where(Member.email == invite.email)):
        raise EmailTaken(param="email")
    member = Member(
        id=new_id("mem"),
        tenant_id=invite.tenant_id,
        email=invite.email,
        password_hash=hash_password(password),
        role=invite.role,
    )
    try:
        # A savepoint: an email taken meanwhile (another tenant's sign-up) undoes the insert
        # alone and leaves the caller's transaction usable.
        with db.session.begin_nested():
            db.session.add(member)
            db.session.flush()
    except IntegrityError as exc:
        if "uq_members_email" in str(exc.orig):
            raise EmailTaken(param="email") from None
        raise
    invite.accepted_at = datetime.now(UTC)
    _audit(
        member,
        "member.joined",
        invite.tenant_id,
        member,
        {"after": {"email": member.email, "role": member.role.value, "invite_id": invite.id}},
    )
    db.session.flush()
    return member


def change_role(tenant_id: str, member_id: str, role: MemberRole | str, by: Member) -> Member:
    """Give a team member another role. Raises NotFound (not a member of this team),
    LastOwner (it would leave the team without an owner), PermissionDenied (`by` is not an
    owner of the team)."""
    role = _role(role)
    team = _lock_team(tenant_id, by)
    member = team.get(member_id)
    if member is None:
        raise NotFound("No such team member.", param="member_id")
    before = member.role
    if before is role:
        return member
    if before is MemberRole.OWNER and _owner_count(team) == 1:
        raise LastOwner()
    member.role = role
    _audit(
        member,
        "member.role_changed",
        tenant_id,
        by,
        {"before": {"role": before.value}, "after": {"role": role.value}, "email": member.email},
    )
    db.session.flush()
    return member


def remove_member(tenant_id: str, member_id: str, by: Member) -> None:
    """Remove a member from the team; their sessions end at once (the account is gone).
    Raises NotFound, LastOwner or PermissionDenied as `change_role` does."""
    team = _lock_team(tenant_id, by)
    member = team.get(member_id)
    if member is None:
        raise NotFound("No such team member.", param="member_id")
    if member.role is MemberRole.OWNER and _owner_count(team) == 1:
        raise LastOwner("A team needs at least one owner: the last owner cannot be removed.")
    _audit(
        member,
        "member.removed",
        tenant_id,
        by,
        {"before": {"email": member.email, "role": member.role.value}},
    )
    db.session.delete(member)
    db.session.flush()


# --- internals ----------------------------------------------------------------------------


def _get(member_id: str) -> Member:
    member = db.session.get(Member, member_id)
    if member is None:
        raise NotFound("No such member.")
    return member


def _throttle_key(email: str) -> str:
    return signin_throttle.account_key("member", email)


def _refuse_if_throttled(account: str, client_address: str) -> None:
    signin_throttle.refuse_if_throttled(account, client_address, clock())


def _check_password_again(member: Member, password: str, client_address: str, *, param: str):
    """A signed-in member's password, asked again before a sensitive change: throttled like
    sign-in, or a stolen session could guess it (WrongPassword, SignInThrottled)."""
    account = _throttle_key(member.email)
    _refuse_if_throttled(account, client_address)
    if not verify_password(member, password):
        _fail(account, client_address, member.id, param)
        raise WrongPassword(param=param)


def _fail(account: str, client_address: str, member_id: str | None, reason: str) -> None:
    """Count a failed password or code (in Redis: it stands although the caller raises next
    and its unit of work rolls back, which releases the member's row lock)."""
    at_address, on_account = signin_throttle.record_failure(account, client_address, clock())
    logger.info(
        "member.login_failed",
        extra={
            "member_id": member_id,
            "reason": reason,
            "failures": at_address,
            "account_failures": on_account,
        },
    )


def _locked_member(member_id: str) -> Member | None:
    return db.session.scalar(select(Member).where(Member.id == member_id).with_for_update())


def _lock_team(tenant_id: str, by: Member) -> dict[str, Member]:
    """Lock every member row of the team (in id order, so concurrent changes queue instead
    of deadlocking) and check that `by` is, right now, one of its owners."""
    statement = (
        select(Member)
        .where(Member.tenant_id == tenant_id)
        .order_by(Member.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    team = {member.id: member for member in db.session.scalars(statement)}
    actor = team.get(by.id)
    if actor is None or actor.role is not MemberRole.OWNER:
        raise PermissionDenied("Only an owner of the team can change it.", code="owner_required")
    return team


def _owner_count(team: dict[str, Member]) -> int:
    return sum(1 for member in team.values() if member.role is MemberRole.OWNER)


def _role(role: MemberRole | str) -> MemberRole:
    try:
        return MemberRole(role)
    except ValueError:
        raise ValidationFailed(
            "Choose owner, developer or viewer.", code="role_invalid", param="role"
        ) from None


def _pending_invites(tenant_id: str, now: datetime):
    return select(MemberInvite).where(
        MemberInvite.tenant_id == tenant_id,
        MemberInvite.accepted_at.is_(None),
        MemberInvite.revoked_at.is_(None),
        MemberInvite.expires_at > now,
    )


def _usable(invite: MemberInvite) -> bool:
    return (
        invite.accepted_at is None
        and invite.revoked_at is None
        and invite.expires_at > datetime.now(UTC)
    )


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _accepted_step(secret: str, code: str, last_step: int | None) -> int:
    """The TOTP step `code` belongs to (now ±1 step), if later than `last_step`."""
    code = totp.normalised(code)
    if code is None:
        raise TotpInvalid("That is not a 6-digit code.")
    step = totp.matching_step(secret, code, clock())
    if step is None:
        raise TotpInvalid()
    if last_step is not None and step <= last_step:
        raise TotpInvalid("That code was already used; wait for the next one.", code="totp_reused")
    return step


def _audit(
    target,
    action: str,
    tenant_id: str,
    actor: Member,
    diff: dict | None = None,
    *,
    target_type: str = "member",
) -> None:
    member_changed.send(
        target,
        action=action,
        target_type=target_type,
        tenant_id=tenant_id,
        actor_id=actor.id,
        actor_label=actor.email,
        diff=diff,
    )
