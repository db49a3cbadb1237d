"""Staff accounts and their two-step login: password, then a TOTP code or a recovery code.

The bar is Warehouse's: a TOTP code is accepted once (the last accepted 30 s step is stored
and only a later step passes), ±1 step of drift, a code that matches a step further away
(±10) is reported as a wrong clock, recovery codes are stored hashed and are single-use.
Failed passwords and codes are throttled per account and client address, with a ceiling on
the account that only slows (core.signin_throttle): nobody can lock a staff user out by
failing their password from elsewhere. Plain functions; no HTTP here.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import pyotp
from sqlalchemy import any_, select, update

from compliance import audit
from core import signin_throttle, totp
from core.crypto import decrypt, encrypt
from core.errors import AuthenticationFailed, Conflict, ValidationFailed
from core.extensions import db
from core.ids import new_id
from core.passwords import hash_password, password_matches, spend_a_password_check
from core.signin_throttle import AccountPressure
from core.unit_of_work import Checkpoint, checkpoint
from staff.models import SESSION_ID_PREFIX, StaffRole, StaffUser

logger = logging.getLogger("lango.staff")

# A code matching a step this far off is a wrong clock on the phone, not a guess.
TOTP_SKEW_STEPS = 10
RECOVERY_CODE_COUNT = 10
ISSUER = "Lango"
_SUCCEEDED = audit.AuditAction.STAFF_LOGIN_SUCCEEDED
_AUDITED_EVENTS = {
    "staff.login_succeeded": _SUCCEEDED,
    "staff.login_failed": audit.AuditAction.STAFF_LOGIN_FAILED,
}

_RECOVERY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


def clock() -> float:
    """Seconds since the epoch; tests replace it to move through TOTP steps."""
    return time.time()


class StaffAuthFailed(AuthenticationFailed):
    code = "staff_credentials_invalid"
    message = "Wrong email or password."


class StaffExists(Conflict):
    code = "staff_exists"
    message = "A staff user with this email already exists."


@dataclass(frozen=True)
class ProvisionedStaff:
    """A staff user as created: the only moment the TOTP secret and recovery codes are shown."""

    staff: StaffUser
    provisioning_uri: str
    recovery_codes: list[str]


def create_staff(
    email: str,
    name: str,
    password: str,
    roles: list[str],
    *,
    created_by: StaffUser | None = None,
) -> ProvisionedStaff:
    """Create a staff user with a fresh TOTP secret and recovery codes (flushed). When an
    admin creates it (`created_by`), a `staff.created` audit entry (email, name, roles — no
    secret) is written in the same transaction."""
    roles = sorted({StaffRole(role).value for role in roles})
    if not roles:
        raise ValidationFailed("A staff user needs at least one role.", param="roles")
    if len(password) < 12:
        raise ValidationFailed("Staff passwords have at least 12 characters.", param="password")
    email = email.strip().lower()
    if db.session.scalar(select(StaffUser.id).where(StaffUser.email == email)):
        raise StaffExists()
    secret = pyotp.random_base32()
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODE_COUNT)]
    staff = StaffUser(
        id=new_id("stf"),
        email=email,
        name=name,
        password_hash=hash_password(password),
        roles=roles,
        totp_secret=encrypt(secret),
        recovery_code_hashes=[_hash_code(code) for code in codes],
    )
    db.session.add(staff)
    if created_by is not None:
        db.session.flush()
        audit.record(
            audit.AuditAction.STAFF_CREATED,
            target_type="staff_user",
            target_id=staff.id,
            tenant_id=None,
            diff={"after": {"email": email, "name": name, "roles": roles}},
            actor=audit.Actor(audit.ActorType.STAFF, created_by.id, created_by.email),
        )
    db.session.flush()
    return ProvisionedStaff(staff, totp.provisioning_uri(secret, email, ISSUER), codes)


def list_staff() -> list[StaffUser]:
    """Every staff user, by email."""
    return list(db.session.scalars(select(StaffUser).order_by(StaffUser.email)))


def find_staff(staff_id: str) -> StaffUser | None:
    """One staff user by id, or None."""
    return db.session.get(StaffUser, staff_id)


def list_compliance_staff() -> list[StaffUser]:
    """The staff users holding the compliance role, by email (whom review cases go to)."""
    return list(
        db.session.scalars(
            select(StaffUser)
            .where(StaffRole.COMPLIANCE.value == any_(StaffUser.roles))
            .order_by(StaffUser.email)
        )
    )


def sign_in_pressure(staff: StaffUser) -> AccountPressure:
    """Recent failed sign-ins on the account, and until when they slow unknown addresses."""
    return signin_throttle.account_pressure(_throttle_key(staff.email), clock())


def forgive_failed_sign_ins(email: str) -> None:
    """Forget every failed sign-in on the account (an operator resetting it)."""
    signin_throttle.forget(_throttle_key(email))


def check_password(email: str, password: str, *, client_address: str) -> StaffUser:
    """Step one. Returns the staff user whose password this is; raises StaffAuthFailed or
    SignInThrottled (checked first, so a waiting address cannot probe the password). A wrong
    password counts like a wrong code; a right one clears nothing (the second step does),
    so knowing the password does not reset the count of wrong codes. Unknown emails are
    counted and answered alike. The account's row stays locked until the caller's unit of
    work ends."""
    email = email.strip().lower()
    account = _throttle_key(email)
    staff = db.session.scalar(select(StaffUser).where(StaffUser.email == email).with_for_update())
    signin_throttle.refuse_if_throttled(account, client_address, clock())
    if staff is None:
        spend_a_password_check(password)
        _fail(account, client_address, None, "unknown_email")
        raise StaffAuthFailed()
    if not password_matches(staff.password_hash, password):
        _fail(account, client_address, staff.id, "password")
        raise StaffAuthFailed()
    return staff


def verify_second_factor(
    staff_id: str,
    *,
    code: str | None = None,
    recovery_code: str | None = None,
    client_address: str,
) -> StaffUser:
    """Step two: a TOTP code (once per step, ±1 step) or an unused recovery code (consumed).
    On success clears the failures from `client_address` and rotates the session nonce
    (flushed: the accepted step is stored when the caller's unit of work commits, and the row
    lock held until then makes a racing request with the same code wait and then fail); on
    failure counts it and raises StaffAuthFailed (codes `totp_invalid`, `totp_reused`,
    `totp_clock_skew`, `recovery_code_invalid`), or SignInThrottled before any check.
    Attempts for one user are serialised by a row lock, so a code cannot be accepted twice by
    racing requests."""
    staff = db.session.scalar(select(StaffUser).where(StaffUser.id == staff_id).with_for_update())
    if staff is None:
        raise StaffAuthFailed("Sign in again.", code="staff_login_required")
    account = _throttle_key(staff.email)
    signin_throttle.refuse_if_throttled(account, client_address, clock())
    try:
        if recovery_code is not None:
            _use_recovery_code(staff, recovery_code)
        else:
            _use_totp(staff, code or "")
    except StaffAuthFailed as failure:
        _fail(account, client_address, staff_id, failure.code)
        raise
    staff.session_nonce = secrets.token_urlsafe(24)
    staff.last_login_at = datetime.now(UTC)
    db.session.flush()
    signin_throttle.record_success(account, client_address)
    method = "recovery_code" if recovery_code else "totp"
    _log("staff.login_succeeded", staff.id, method, staff_email=staff.email)
    return staff


def load_session_user(session_id: str) -> StaffUser | None:
    """Flask-Login's loader for `staff:<id>:<nonce>`: the user, if that nonce is current."""
    staff_id, _, nonce = session_id.removeprefix(SESSION_ID_PREFIX).partition(":")
    staff = db.session.get(StaffUser, staff_id)
    if staff is None or not staff.session_nonce or not nonce:
        return None
    return staff if hmac.compare_digest(staff.session_nonce, nonce) else None


def end_session(staff_id: str) -> None:
    """Logout: clear the nonce, so the session cookie (even a copy) no longer signs in."""
    db.session.execute(update(StaffUser).where(StaffUser.id == staff_id).values(session_nonce=None))
    _log("staff.logout", staff_id, None)


def _use_totp(staff: StaffUser, code: str) -> None:
    code = totp.normalised(code)
    if code is None:
        raise StaffAuthFailed("That is not a 6-digit code.", code="totp_invalid")
    secret, now = decrypt(staff.totp_secret), clock()
    step = totp.matching_step(secret, code, now)
    if step is None:
        if totp.matching_step(secret, code, now, window=TOTP_SKEW_STEPS) is not None:
            raise StaffAuthFailed(
                "That code is for another time: set your phone's clock automatically.",
                code="totp_clock_skew",
            )
        raise StaffAuthFailed("Wrong code.", code="totp_invalid")
    if staff.last_totp_step is not None and step <= staff.last_totp_step:
        raise StaffAuthFailed(
            "That code was already used; wait for the next one.", code="totp_reused"
        )
    staff.last_totp_step = step


def _use_recovery_code(staff: StaffUser, recovery_code: str) -> None:
    digest = _hash_code(recovery_code)
    if not any(hmac.compare_digest(digest, stored) for stored in staff.recovery_code_hashes):
        raise StaffAuthFailed("Wrong or used recovery code.", code="recovery_code_invalid")
    staff.recovery_code_hashes = [h for h in staff.recovery_code_hashes if h != digest]
    logger.warning(
        "staff.recovery_code_used",
        extra={"staff_id": staff.id, "remaining": len(staff.recovery_code_hashes)},
    )


def _throttle_key(email: str) -> str:
    return signin_throttle.account_key("staff", email)


def _fail(account: str, client_address: str, staff_id: str | None, reason: str) -> None:
    """Count a failure (in Redis) and audit it; the caller raises next. The attempt wrote
    nothing before it failed, so the checkpoint commits only the audit entry (and releases
    the row lock): the entry stands although the request then fails and rolls back."""
    at_address, on_account = signin_throttle.record_failure(account, client_address, clock())
    _log(
        "staff.login_failed",
        staff_id,
        reason,
        failures=at_address,
        account_failures=on_account,
    )
    checkpoint(Checkpoint.FAILED_SIGN_IN)


def _log(
    event: str, staff_id: str | None, reason: str | None, *, staff_email: str | None = None, **extra
) -> None:
    # Every auth outcome is logged (Warehouse keeps metrics on each); logins that succeed or
    # fail are audited too, in the sign-in's own transaction.
    logger.info(event, extra={"staff_id": staff_id, "reason": reason, **extra})
    action = _AUDITED_EVENTS.get(event)
    if action is not None:
        audit.record(
            action,
            target_type="staff_user",
            target_id=staff_id,
            tenant_id=None,
            diff={"after": {"method" if action is _SUCCEEDED else "reason": reason}},
            # A failed sign-in is labelled by no one: whoever failed is not that staff user.
            actor=audit.Actor(audit.ActorType.STAFF, staff_id, staff_email),
        )


def _new_recovery_code() -> str:
    # 16 characters from 31 ≈ 79 random bits: a fast hash is then safe, as for API keys.
    raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(16))
    return "-".join(raw[i : i + 4] for i in range(0, 16, 4))


def _hash_code(code: str) -> str:
    normalized = code.strip().lower().replace("-", "").replace(" ", "")
    return hashlib.sha256(normalized.encode()).hexdigest()


__all__ = [
    "ProvisionedStaff",
    "StaffAuthFailed",
    "check_password",
    "clock",
    "create_staff",
    "end_session",
    "find_staff",
    "forgive_failed_sign_ins",
    "list_compliance_staff",
    "list_staff",
    "load_session_user",
    "sign_in_pressure",
    "verify_second_factor",
]
