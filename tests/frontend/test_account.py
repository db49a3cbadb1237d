"""Your account: every member changes their own password and turns two-step sign-in (TOTP)
on and off."""

from __future__ import annotations

import re

import pyotp
import pytest

from compliance.audit import AuditEntry
from core.extensions import db
from tests.frontend.conftest import (
    HTML,
    MEMBER_PASSWORD,
    member_page,
    member_sign_in,
    post_form,
)

ACCESS = [
    ("/dashboard/account", member_page()),
    ("/dashboard/account/totp", member_page()),
]
NEW_PASSWORD = "a-New-passw0rd"


def test_access(check_access):
    check_access(ACCESS)


def email_of(app, member_id: str) -> str:
    from tenants.models import Member

    with app.app_context():
        email = db.session.get(Member, member_id).email
        db.session.remove()
    return email


def sign_in_form(app, email: str, password: str):
    client = app.test_client()
    return client, post_form(client, "/login", {"email": email, "password": password})


def setup_secret(client) -> str:
    page = client.get("/dashboard/account/totp", headers=HTML).get_data(as_text=True)
    match = re.search(r'name="secret" type="hidden" value="([A-Z2-7]{32})"', page)
    assert match, page[:3000]
    return match.group(1)


def test_the_account_page_shows_email_role_and_forms(app, sign_in):
    viewer = sign_in("viewer")
    page = viewer.client.get("/dashboard/account", headers=HTML).get_data(as_text=True)
    assert email_of(app, viewer.member_id) in page
    assert '<span class="role">viewer</span>' in page
    assert "Change password" in page and "Set up two-step sign-in" in page


@pytest.mark.parametrize("role", ["viewer", "owner"])
def test_a_member_changes_their_password(app, sign_in, role):
    signed = sign_in(role)
    email = email_of(app, signed.member_id)
    # The same member signed in on another device (the same session id).
    other_device = app.test_client()
    member_sign_in(app, other_device, signed.member_id)
    assert other_device.get("/dashboard", headers=HTML).status_code == 200

    response = post_form(
        signed.client,
        "/dashboard/account/password",
        {
            "current_password": MEMBER_PASSWORD,
            "new_password": NEW_PASSWORD,
            "confirm_password": NEW_PASSWORD,
        },
    )

    assert response.status_code == 302
    page = signed.client.get("/dashboard/account", headers=HTML)
    assert page.status_code == 200  # this session goes on
    assert "Password changed" in page.get_data(as_text=True)
    assert other_device.get("/dashboard", headers=HTML).status_code == 302  # others end
    assert sign_in_form(app, email, NEW_PASSWORD)[1].status_code == 302
    assert sign_in_form(app, email, MEMBER_PASSWORD)[1].status_code == 401
    with app.app_context():
        assert db.session.query(AuditEntry).filter_by(action="member.password_changed").count() == 1
        db.session.remove()


def test_a_wrong_current_password_or_a_weak_new_one_is_refused_on_its_field(sign_in):
    client = sign_in("developer").client
    response = post_form(
        client,
        "/dashboard/account/password",
        {
            "current_password": "wrong",
            "new_password": NEW_PASSWORD,
            "confirm_password": NEW_PASSWORD,
        },
    )
    assert response.status_code == 400
    assert "Current password: That is not your current password." in response.get_data(as_text=True)

    response = post_form(
        client,
        "/dashboard/account/password",
        {
            "current_password": MEMBER_PASSWORD,
            "new_password": "1234567890",
            "confirm_password": "1234567890",
        },
    )
    assert response.status_code == 400
    assert "New password: This password is too easy to guess." in response.get_data(as_text=True)

    response = post_form(
        client,
        "/dashboard/account/password",
        {
            "current_password": MEMBER_PASSWORD,
            "new_password": NEW_PASSWORD,
            "confirm_password": "x",
        },
    )
    assert response.status_code == 400
    assert "The passwords differ." in response.get_data(as_text=True)


def test_turning_two_step_sign_in_on_then_signing_in_with_a_code(app, sign_in, member_clock):
    signed = sign_in("developer")
    client = signed.client
    page = client.get("/dashboard/account/totp", headers=HTML)
    body = page.get_data(as_text=True)
    assert page.headers["Cache-Control"] == "no-store"
    assert "<svg" in body and 'class="qr"' in body
    assert "otpauth://totp/Lango:" in body
    secret = re.search(r'name="secret" type="hidden" value="([A-Z2-7]{32})"', body).group(1)
    assert f"<code data-copy-source>{secret}</code>" in body

    wrong = post_form(client, "/dashboard/account/totp", {"secret": secret, "code": "000000"})
    assert wrong.status_code == 401
    # The same secret stays on the page, so the app's entry still fits.
    assert f'value="{secret}"' in wrong.get_data(as_text=True)

    right = post_form(
        client, "/dashboard/account/totp", {"secret": secret, "code": member_clock.code(secret)}
    )
    assert right.status_code == 302
    account = client.get("/dashboard/account", headers=HTML).get_data(as_text=True)
    assert "Two-step sign-in is on" in account and "Turn two-step sign-in off" in account
    assert client.get("/dashboard/account/totp", headers=HTML).status_code == 302

    team = client.get("/dashboard/team", headers=HTML).get_data(as_text=True)
    assert 'badge-enabled">on' in team

    member_clock.advance(30)
    fresh, response = sign_in_form(app, email_of(app, signed.member_id), MEMBER_PASSWORD)
    assert response.headers["Location"] == "/login/totp"
    response = post_form(fresh, "/login/totp", {"code": pyotp.TOTP(secret).at(member_clock.now)})
    assert response.status_code == 302
    assert fresh.get("/dashboard", headers=HTML).status_code == 200


def test_turning_two_step_sign_in_off_needs_the_password(app, sign_in, member_clock):
    signed = sign_in("viewer")
    client = signed.client
    secret = setup_secret(client)
    post_form(
        client, "/dashboard/account/totp", {"secret": secret, "code": member_clock.code(secret)}
    )

    wrong = post_form(client, "/dashboard/account/totp/disable", {"password": "wrong"})
    assert wrong.status_code == 400
    assert "Your password: That is not your current password." in wrong.get_data(as_text=True)

    right = post_form(client, "/dashboard/account/totp/disable", {"password": MEMBER_PASSWORD})
    assert right.status_code == 302
    assert "Set up two-step sign-in" in client.get("/dashboard/account", headers=HTML).get_data(
        as_text=True
    )
    _fresh, response = sign_in_form(app, email_of(app, signed.member_id), MEMBER_PASSWORD)
    assert response.headers["Location"] == "/dashboard"
    with app.app_context():
        recorded = [
            entry.action
            for entry in db.session.query(AuditEntry).order_by(AuditEntry.seq)
            if entry.action.startswith("member.totp")
        ]
        db.session.remove()
    assert recorded == ["member.totp_enabled", "member.totp_disabled"]


def test_a_tampered_secret_is_refused(sign_in, member_clock):
    client = sign_in("owner").client
    response = post_form(
        client, "/dashboard/account/totp", {"secret": "not-base32", "code": "123456"}
    )
    assert response.status_code == 400
    assert "Start the set-up again." in response.get_data(as_text=True)


def test_failed_sign_ins_make_that_address_wait_with_a_clear_message(app, sign_in):
    signed = sign_in("developer")
    email = email_of(app, signed.member_id)
    client = app.test_client()
    for _ in range(5):
        assert (
            post_form(client, "/login", {"email": email, "password": "a-guess"}).status_code == 401
        )

    page = post_form(client, "/login", {"email": email, "password": MEMBER_PASSWORD})

    assert page.status_code == 429
    # (Flask-Limiter rewrites the header from the wall clock, rounding down.)
    assert 59 <= int(page.headers["Retry-After"]) <= 60
    assert "Too many failed sign-in attempts from your network. Try again in 60 seconds." in (
        page.get_data(as_text=True)
    )
    assert client.get("/dashboard", headers=HTML).status_code == 302
    # Someone elsewhere (the member on another network) signs in at once.
    elsewhere = app.test_client()
    elsewhere.environ_base["REMOTE_ADDR"] = "192.0.2.50"
    response = post_form(elsewhere, "/login", {"email": email, "password": MEMBER_PASSWORD})
    assert response.status_code == 302


def test_a_stolen_session_cannot_guess_the_password_on_the_account_page(sign_in):
    client = sign_in("owner").client
    guesses = [
        post_form(
            client,
            "/dashboard/account/password",
            {
                "current_password": f"guess-{n}",
                "new_password": NEW_PASSWORD,
                "confirm_password": NEW_PASSWORD,
            },
        ).status_code
        for n in range(6)
    ]
    assert guesses == [400] * 5 + [429]

    right = post_form(
        client,
        "/dashboard/account/password",
        {
            "current_password": MEMBER_PASSWORD,
            "new_password": NEW_PASSWORD,
            "confirm_password": NEW_PASSWORD,
        },
    )
    assert right.status_code == 429
    assert "Too many failed sign-in attempts from your network." in right.get_data(as_text=True)
    wrong = post_form(client, "/dashboard/account/totp/disable", {"password": MEMBER_PASSWORD})
    assert wrong.status_code == 429
