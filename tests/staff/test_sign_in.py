"""Staff sign-in in one unit of work per request: a failed attempt is counted and audited
although its request fails (the API rolls back, the page commits), and a TOTP code accepted
by one edge is refused by the other."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from compliance.audit import AuditEntry
from core.extensions import db
from staff import service
from staff.models import StaffUser
from tests.accounts import STAFF_PASSWORD, Clock, StaffAccount
from tests.frontend.conftest import HTML, post_form

HOME = "127.0.0.1"


@pytest.fixture
def staff(staff_factory) -> StaffAccount:
    return staff_factory("admin")


def failures_audited(app, staff: StaffAccount) -> list[str]:
    with app.app_context():
        reasons = [
            entry.diff["after"]["reason"]
            for entry in db.session.scalars(
                select(AuditEntry)
                .where(AuditEntry.action == "staff.login_failed", AuditEntry.target_id == staff.id)
                .order_by(AuditEntry.seq)
            )
        ]
        db.session.remove()
    return reasons


def failures_counted(app, staff: StaffAccount) -> int:
    with app.app_context():
        pressure = service.sign_in_pressure(db.session.get(StaffUser, staff.id))
        db.session.remove()
    return pressure.failures


def test_the_apis_failed_attempts_are_audited_and_counted_although_the_request_fails(
    app, client, staff, clock
):
    wrong = client.post("/v1/admin/login", json={"email": staff.email, "password": "not it!"})
    assert wrong.status_code == 401
    assert (
        client.post(
            "/v1/admin/login", json={"email": staff.email, "password": STAFF_PASSWORD}
        ).status_code
        == 200
    )
    assert client.post("/v1/admin/login/totp", json={"code": "000000"}).status_code == 401

    assert failures_audited(app, staff) == ["password", "totp_invalid"]
    assert failures_counted(app, staff) == 2


def test_the_pages_failed_attempts_are_audited_and_counted_too(app, client, staff, clock):
    wrong = post_form(client, "/staff/login", {"email": staff.email, "password": "not it!"})
    assert wrong.status_code == 401
    assert "Wrong email or password." in wrong.get_data(as_text=True)
    right = post_form(client, "/staff/login", {"email": staff.email, "password": STAFF_PASSWORD})
    assert right.status_code == 302
    assert post_form(client, "/staff/login/totp", {"code": "000000"}).status_code == 401

    assert failures_audited(app, staff) == ["password", "totp_invalid"]
    assert failures_counted(app, staff) == 2


def test_a_code_the_api_accepted_is_refused_by_the_pages(app, staff, clock: Clock):
    clock.advance(30)
    code = clock.code(staff.secret)
    api = app.test_client()
    api.post("/v1/admin/login", json={"email": staff.email, "password": STAFF_PASSWORD})
    assert api.post("/v1/admin/login/totp", json={"code": code}).status_code == 200

    pages = app.test_client()
    post_form(pages, "/staff/login", {"email": staff.email, "password": STAFF_PASSWORD})
    replayed = post_form(pages, "/staff/login/totp", {"code": code})

    assert replayed.status_code == 401
    assert "already used" in replayed.get_data(as_text=True)
    assert pages.get("/admin/tenants", headers=HTML).status_code == 302  # not signed in
    assert failures_audited(app, staff) == ["totp_reused"]
