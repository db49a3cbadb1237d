"""Staff login: password, then TOTP (once per step, ±1 step), recovery codes, lockout,
sessions that expire and end, CSRF on state-changing calls, the `lango staff` command."""

from __future__ import annotations

import pytest

from tests.accounts import STAFF_PASSWORD, Clock, StaffAccount


@pytest.fixture
def staff(staff_factory) -> StaffAccount:
    return staff_factory()


def password_step(client, staff: StaffAccount, password: str = STAFF_PASSWORD):
    return client.post("/v1/admin/login", json={"email": staff.email, "password": password})


def full_login(client, staff: StaffAccount, clock: Clock) -> str:
    """Both steps, on a fresh time step; returns the session's CSRF token."""
    clock.advance(30)
    assert password_step(client, staff).status_code == 200
    response = client.post("/v1/admin/login/totp", json={"code": clock.code(staff.secret)})
    assert response.status_code == 200, response.get_json()
    return response.get_json()["csrf_token"]


def wrong_code(staff: StaffAccount, clock: Clock) -> str:
    """A code matching no step within ±10 of now."""
    near = {clock.code(staff.secret, steps) for steps in range(-10, 11)}
    return next(f"{n:06d}" for n in range(0, 1_000_000, 7919) if f"{n:06d}" not in near)


def error_code(response) -> str:
    return response.get_json()["error"]["code"]


def test_password_alone_gives_no_session(client, staff, clock):
    response = password_step(client, staff)

    assert response.status_code == 200
    assert response.get_json() == {"step": "totp"}
    for path in ("/v1/admin/me", "/v1/admin/tenants"):
        refused = client.get(path)
        assert refused.status_code == 401
        assert error_code(refused) == "staff_session_required"
        assert refused.get_json()["error"]["request_id"].startswith("req_")


def test_wrong_password_is_refused_without_a_second_step(client, staff, clock):
    response = password_step(client, staff, "not the password at all")

    assert response.status_code == 401
    assert error_code(response) == "staff_credentials_invalid"
    second = client.post("/v1/admin/login/totp", json={"code": clock.code(staff.secret)})
    assert second.status_code == 401
    assert error_code(second) == "login_step_missing"


def test_valid_totp_completes_the_login(client, staff, clock):
    password_step(client, staff)
    response = client.post("/v1/admin/login/totp", json={"code": clock.code(staff.secret)})

    assert response.status_code == 200
    body = response.get_json()
    assert body["staff"]["email"] == staff.email
    assert body["csrf_token"]
    me = client.get("/v1/admin/me")
    assert me.status_code == 200
    assert set(me.get_json()["roles"]) == {"admin", "compliance"}


def test_session_cookie_is_httponly_and_samesite_lax(client, staff, clock):
    password_step(client, staff)
    response = client.post("/v1/admin/login/totp", json={"code": clock.code(staff.secret)})

    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie


def test_the_same_code_replayed_fails(app, client, staff, clock):
    code = clock.code(staff.secret)
    password_step(client, staff)
    assert client.post("/v1/admin/login/totp", json={"code": code}).status_code == 200

    other = app.test_client()
    password_step(other, staff)
    replayed = other.post("/v1/admin/login/totp", json={"code": code})

    assert replayed.status_code == 401
    assert error_code(replayed) == "totp_reused"
    assert other.get("/v1/admin/me").status_code == 401


def test_an_older_step_after_a_newer_one_is_refused(client, staff, clock):
    password_step(client, staff)
    assert (
        client.post("/v1/admin/login/totp", json={"code": clock.code(staff.secret, 1)}).status_code
        == 200
    )
    password_step(client, staff)
    earlier = client.post("/v1/admin/login/totp", json={"code": clock.code(staff.secret)})

    assert error_code(earlier) == "totp_reused"


@pytest.mark.parametrize("steps", [-1, 1])
def test_one_step_of_drift_is_accepted(client, staff, clock, steps):
    password_step(client, staff)
    response = client.post("/v1/admin/login/totp", json={"code": clock.code(staff.secret, steps)})

    assert response.status_code == 200


@pytest.mark.parametrize("steps", [-5, 2, 10])
def test_a_code_for_a_wrong_clock_gets_a_distinct_error(client, staff, clock, steps):
    password_step(client, staff)
    response = client.post("/v1/admin/login/totp", json={"code": clock.code(staff.secret, steps)})

    assert response.status_code == 401
    assert error_code(response) == "totp_clock_skew"


def test_a_wrong_code_is_invalid(client, staff, clock):
    password_step(client, staff)
    response = client.post("/v1/admin/login/totp", json={"code": wrong_code(staff, clock)})

    assert response.status_code == 401
    assert error_code(response) == "totp_invalid"
    assert client.get("/v1/admin/me").status_code == 401


def test_ten_wrong_codes_lock_the_account_for_a_while(client, staff, clock):
    password_step(client, staff)
    for attempt in range(1, 11):
        response = client.post("/v1/admin/login/totp", json={"code": wrong_code(staff, clock)})
        assert response.status_code == 401, attempt
        if attempt == 5:
            # Locked a minute from the fifth failure: even the right code is refused.
            locked = client.post("/v1/admin/login/totp", json={"code": clock.code(staff.secret)})
            assert locked.status_code == 429
            assert error_code(locked) == "account_locked"
        if 5 <= attempt < 10:
            # Each further failure doubles the lockout; wait it out and start again.
            clock.advance(60 * 2 ** (attempt - 5) + 1)
            password_step(client, staff)

    # The tenth failure locks for 32 minutes: the right code, then the password, refused.
    locked = client.post("/v1/admin/login/totp", json={"code": clock.code(staff.secret)})
    assert locked.status_code == 429
    assert error_code(locked) == "account_locked"
    assert 31 * 60 < int(locked.headers["Retry-After"]) <= 32 * 60 + 1
    clock.advance(20 * 60)
    still = password_step(client, staff)
    assert still.status_code == 429
    assert 0 < int(still.headers["Retry-After"]) <= 12 * 60 + 1

    clock.advance(13 * 60)
    assert password_step(client, staff).status_code == 200
    response = client.post("/v1/admin/login/totp", json={"code": clock.code(staff.secret)})
    assert response.status_code == 200


def test_a_recovery_code_works_once(app, client, staff, clock):
    code = staff.recovery_codes[0]
    password_step(client, staff)
    assert client.post("/v1/admin/login/totp", json={"recovery_code": code}).status_code == 200

    other = app.test_client()
    password_step(other, staff)
    again = other.post("/v1/admin/login/totp", json={"recovery_code": code})
    assert again.status_code == 401
    assert error_code(again) == "recovery_code_invalid"

    fresh = other.post("/v1/admin/login/totp", json={"recovery_code": staff.recovery_codes[1]})
    assert fresh.status_code == 200


def test_recovery_codes_are_stored_hashed(app, staff):
    from core.extensions import db
    from staff.models import StaffUser

    with app.app_context():
        stored = db.session.get(StaffUser, staff.id)
        assert len(stored.recovery_code_hashes) == 10
        for code in staff.recovery_codes:
            assert code not in stored.recovery_code_hashes
        assert staff.secret not in stored.totp_secret
        db.session.remove()


def test_logout_ends_the_session_even_for_a_copied_cookie(app, client, staff, clock):
    csrf = full_login(client, staff, clock)
    copied = client.get_cookie("session").value

    response = client.post("/v1/admin/logout", headers={"X-CSRF-Token": csrf})

    assert response.status_code == 204
    assert client.get("/v1/admin/me").status_code == 401
    thief = app.test_client()
    thief.set_cookie("session", copied)
    assert thief.get("/v1/admin/me").status_code == 401


def test_the_session_expires_after_30_minutes_idle(client, staff, clock):
    full_login(client, staff, clock)
    clock.advance(29 * 60)
    assert client.get("/v1/admin/me").status_code == 200

    clock.advance(30 * 60 + 1)
    response = client.get("/v1/admin/me")

    assert response.status_code == 401
    assert error_code(response) == "staff_session_expired"
    assert client.get("/v1/admin/me").status_code == 401


def test_state_changing_calls_need_the_csrf_token(client, staff, clock, tenant):
    csrf = full_login(client, staff, clock)
    path = f"/v1/admin/tenants/{tenant.id}/suspend"

    for headers in ({}, {"X-CSRF-Token": "forged"}):
        response = client.post(path, json={"reason": "testing csrf"}, headers=headers)
        assert response.status_code == 403
        assert error_code(response) == "csrf_token_invalid"
    ok = client.post(path, json={"reason": "testing csrf"}, headers={"X-CSRF-Token": csrf})
    assert ok.status_code == 200


def test_tenant_routes_need_the_admin_role(client, staff_factory, clock):
    compliance_only = staff_factory("compliance")
    full_login(client, compliance_only, clock)

    response = client.get("/v1/admin/tenants")

    assert response.status_code == 403
    assert error_code(response) == "staff_role_required"
    assert client.get("/v1/admin/me").status_code == 200


def test_login_attempts_are_rate_limited_per_ip(app, client, staff, clock):
    app.config["STAFF_LOGIN_RATELIMIT"] = "3 per minute"
    try:
        statuses = [password_step(client, staff, "wrong password!").status_code for _ in range(4)]
    finally:
        del app.config["STAFF_LOGIN_RATELIMIT"]

    assert statuses == [401, 401, 401, 429]


def test_staff_create_prints_the_uri_and_ten_recovery_codes(app):
    from staff.cli import staff as staff_group

    result = app.test_cli_runner().invoke(
        staff_group,
        [
            "create",
            "Amina@Lango.example",
            "--name",
            "Amina",
            "--role",
            "admin",
            "--role",
            "compliance",
            "--password",
            STAFF_PASSWORD,
        ],
    )

    assert result.exit_code == 0, result.output
    assert "otpauth://totp/Lango:amina%40lango.example?secret=" in result.output
    assert "█" in result.output or "▀" in result.output  # the QR code, drawn with blocks
    recovery_part = result.output.split("Recovery codes", 1)[1]
    codes = [line.strip() for line in recovery_part.splitlines() if line.startswith("  ")]
    assert len(codes) == 10 and len(set(codes)) == 10
    duplicate = app.test_cli_runner().invoke(
        staff_group,
        [
            "create",
            "amina@lango.example",
            "--name",
            "A",
            "--role",
            "admin",
            "--password",
            STAFF_PASSWORD,
        ],
    )
    assert duplicate.exit_code != 0
