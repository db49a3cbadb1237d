"""The pages' shared machinery: error pages, staff sign-in pages, CSRF, the mode switch."""

from __future__ import annotations

from tests.accounts import STAFF_PASSWORD
from tests.frontend.conftest import ALL_ROLES, HTML, csrf_token, post_form, staff_sign_in


def test_unknown_page_is_a_404_page_for_browsers_and_json_for_clients(client):
    page = client.get("/no-such-page", headers=HTML)
    assert page.status_code == 404
    assert "text/html" in page.content_type
    assert "Page not found" in page.get_data(as_text=True)
    api = client.get("/no-such-page")
    assert api.status_code == 404
    assert api.get_json()["error"]["code"] == "resource_missing"
    assert client.get("/v1/nope", headers=HTML).get_json()["error"]["code"] == "resource_missing"


def test_pages_refuse_a_form_without_csrf_token(client, staff_factory):
    account = staff_factory("admin")
    response = client.post(
        "/staff/login", data={"email": account.email, "password": STAFF_PASSWORD}, headers=HTML
    )
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)


def test_staff_sign_in_needs_both_steps(app, staff_factory, clock):
    client = app.test_client()
    account = staff_factory("admin")
    staff_sign_in(client, account, clock, second_factor=False)
    assert client.get("/admin/tenants", headers=HTML).status_code == 302
    response = post_form(client, "/staff/login/totp", {"code": "000000"})
    assert response.status_code == 401
    response = post_form(client, "/staff/login/totp", {"code": clock.code(account.secret)})
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/tenants"
    assert client.get("/admin/tenants", headers=HTML).status_code == 200


def test_staff_wrong_password_shows_the_form_again(client, staff_factory):
    account = staff_factory("compliance")
    response = post_form(client, "/staff/login", {"email": account.email, "password": "nope"})
    assert response.status_code == 401
    assert "Staff sign-in" in response.get_data(as_text=True)


def test_second_step_without_the_first_goes_back_to_the_password(client):
    response = client.get("/staff/login/totp", headers=HTML)
    assert response.status_code == 302
    assert response.headers["Location"] == "/staff/login"


def test_staff_sign_out_ends_the_session(app, staff_factory, clock):
    client = app.test_client()
    staff_sign_in(client, staff_factory("compliance"), clock)
    assert client.get("/compliance/audit", headers=HTML).status_code == 200
    post_form(client, "/staff/logout")
    assert client.get("/compliance/audit", headers=HTML).status_code == 302


def test_the_mode_switch_keeps_the_choice_in_the_session(sign_in):
    signed = sign_in("owner")
    client = signed.client
    assert "Test mode" in client.get("/dashboard", headers=HTML).get_data(as_text=True)
    response = post_form(client, "/dashboard/mode", {"livemode": "on", "next": "/dashboard"})
    assert response.status_code == 302
    page = client.get("/dashboard", headers=HTML).get_data(as_text=True)
    assert "Live mode" in page
    assert "not enabled" in page


def test_next_never_leaves_the_site(sign_in):
    client = sign_in("owner").client
    response = post_form(client, "/dashboard/mode", {"livemode": "on", "next": "//evil.example/"})
    assert response.headers["Location"] == "/dashboard"
    assert csrf_token(client)


ACCESS = [
    ("/staff/login", {role: 200 for role in ALL_ROLES}),
    # Staff home: to the console of the staff member's role, else to the sign-in page.
    ("/staff", {role: 302 for role in ALL_ROLES}),
    # The second step without a first: back to the password page.
    ("/staff/login/totp", {**{role: 302 for role in ALL_ROLES}, "staff_password_only": 200}),
]


def test_access(check_access):
    check_access(ACCESS)
