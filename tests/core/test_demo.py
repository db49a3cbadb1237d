"""The demo sign-ins `lango up` prints: a tenant owner for the dashboard and, in
development, a staff user for both consoles."""

from __future__ import annotations

import re
import time

import pyotp

from core.cli import main
from tests.frontend.conftest import HTML, post_form


def _invoke(app, *args):
    runner = app.test_cli_runner()
    result = runner.invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_tenants_demo_prints_a_key_and_a_dashboard_sign_in_that_works(app, client):
    # Through the sign-in page, as a newcomer following `lango up`'s output would.
    from core.extensions import db
    from tenants.members import authenticate_member

    first = _invoke(app, "tenants", "demo")
    second = _invoke(app, "tenants", "demo")
    old_password = re.search(r"dashboard sign-in: \S+ / (\S+)", first).group(1)
    email, password = re.search(r"dashboard sign-in: (\S+) / (\S+)", second).groups()
    key = re.search(r"test key: (sk_test_\w+)", second).group(1)
    assert client.get("/v1/tenant", headers={"Authorization": f"Bearer {key}"}).status_code == 200
    with app.app_context():
        assert authenticate_member(email, password, client_address="127.0.0.1").email == email
        db.session.remove()
    assert old_password != password
    signed_in = post_form(client, "/login", {"email": email, "password": password})
    assert signed_in.status_code == 302, signed_in.get_data(as_text=True)
    assert client.get("/dashboard", headers=HTML).status_code == 200


def test_staff_demo_is_for_development_only(app, monkeypatch):
    settings = app.extensions["lango.settings"]
    monkeypatch.setattr(type(settings), "is_development", property(lambda self: False))
    runner = app.test_cli_runner()
    result = runner.invoke(main, ["staff", "demo"])
    assert result.exit_code != 0
    assert "development" in result.output


def test_staff_demo_prints_a_sign_in_with_totp_that_opens_both_consoles(app, client):
    output = _invoke(app, "staff", "demo")
    email, password = re.search(r"\): (\S+) / (\S+)", output).groups()
    secret = re.search(r"TOTP secret (\w+)", output).group(1)
    code = _invoke(app, "staff", "code", email).strip()
    totp = pyotp.TOTP(secret)
    assert code in {totp.now(), totp.at(time.time() - 30)}  # the step may have just turned
    # Through the staff sign-in pages, as a newcomer following `lango up`'s output would.
    step_one = post_form(client, "/staff/login", {"email": email, "password": password})
    assert step_one.status_code == 302, step_one.get_data(as_text=True)
    step_two = post_form(client, "/staff/login/totp", {"code": code})
    assert step_two.status_code == 302, step_two.get_data(as_text=True)
    assert client.get("/admin/tenants", headers=HTML).status_code == 200
    assert client.get("/compliance/audit", headers=HTML).status_code == 200
