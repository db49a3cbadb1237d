"""Staff accounts and TOTP clocks for any test package (a pytest plugin, loaded by
tests/conftest.py): the staff API tests (tests/compliance), the consoles' pages
(tests/frontend) and members' two-step sign-in (tests/tenants, tests/frontend)."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

import pyotp
import pytest

STAFF_PASSWORD = "correct horse battery staple"


@dataclass
class StaffAccount:
    id: str
    email: str
    secret: str  # the TOTP secret, as an authenticator app holds it
    recovery_codes: list[str] = field(default_factory=list)


class Clock:
    """The time a service's TOTP checks see; tests move it to walk through TOTP steps."""

    def __init__(self):
        # The middle of a 30 s step, so ±1 step is unambiguous.
        self.now = (int(time.time()) // 30) * 30 + 15.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def code(self, secret: str, steps: int = 0) -> str:
        return pyotp.TOTP(secret).at(self.now + steps * 30)


@pytest.fixture
def clock(monkeypatch) -> Clock:
    """The clock staff sign-in (staff.service) sees."""
    clock = Clock()
    monkeypatch.setattr("staff.service.clock", clock)
    return clock


@pytest.fixture
def member_clock(monkeypatch) -> Clock:
    """The clock members' two-step sign-in (tenants.members) sees."""
    clock = Clock()
    monkeypatch.setattr("tenants.members.clock", clock)
    return clock


@pytest.fixture
def staff_factory(app):
    """staff_factory(*roles) → a new staff user (admin and compliance when no role is given)
    with STAFF_PASSWORD, its TOTP secret and recovery codes."""
    counter = iter(range(10_000))

    def make(*roles: str) -> StaffAccount:
        from core.crypto import decrypt
        from core.extensions import db
        from core.unit_of_work import unit_of_work
        from staff.service import create_staff

        with app.app_context():
            with unit_of_work():
                provisioned = create_staff(
                    f"staff{next(counter)}-{secrets.token_hex(3)}@lango.example",
                    "Wanjiku Kamau",
                    STAFF_PASSWORD,
                    list(roles or ("admin", "compliance")),
                )
                account = StaffAccount(
                    provisioned.staff.id,
                    provisioned.staff.email,
                    decrypt(provisioned.staff.totp_secret),
                    provisioned.recovery_codes,
                )
            db.session.remove()
        return account

    return make
