"""The demo staff account `lango up` prints, so a newcomer can open both consoles.

Development only (`lango staff demo` refuses elsewhere): it prints a password and the TOTP
secret, which a real staff account never shows twice."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy import select

from core.crypto import decrypt
from core.extensions import db
from core.passwords import hash_password
from staff.models import StaffRole, StaffUser
from staff.service import create_staff, forgive_failed_sign_ins

DEMO_STAFF_EMAIL = "staff@lango.local"


@dataclass(frozen=True)
class DemoStaff:
    email: str
    password: str
    totp_secret: str


def ensure_demo_staff(email: str = DEMO_STAFF_EMAIL) -> DemoStaff:
    """Create the demo staff user (admin and compliance) or give it a new password; either
    way it is unlocked and its sessions end (flushed: the caller's unit of work commits)."""
    password = secrets.token_urlsafe(12)
    staff = db.session.scalar(select(StaffUser).where(StaffUser.email == email))
    if staff is None:
        roles = [StaffRole.ADMIN.value, StaffRole.COMPLIANCE.value]
        staff = create_staff(email, "Demo Staff", password, roles).staff
    else:
        staff.password_hash = hash_password(password)
        staff.session_nonce = None
        db.session.flush()
        forgive_failed_sign_ins(email)
    return DemoStaff(email, password, decrypt(staff.totp_secret))
