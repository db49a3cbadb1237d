"""/v1/admin: only a full staff session (password + TOTP) with the right role gets in, never
an API key; admins list, view, suspend and reinstate tenants, and suspension bites at once."""

from __future__ import annotations

import re

import pytest

from tests.compliance import test_staff_auth as staff_auth
from tests.compliance.test_staff_auth import error_code, full_login, password_step

# The staff fixtures, shared with the login tests.
staff = staff_auth.staff

LOGIN_STEPS = {"/v1/admin/login", "/v1/admin/login/totp"}
AUTOMATIC_METHODS = {"HEAD", "OPTIONS"}


def admin_routes(app) -> list[tuple[str, str]]:
    """(method, rule) for every route under /v1/admin but the two login steps."""
    return sorted(
        (method, rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/v1/admin") and rule.rule not in LOGIN_STEPS
        for method in rule.methods - AUTOMATIC_METHODS
    )


def call(client, method: str, rule: str, tenant_id: str, headers: dict | None = None):
    path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", tenant_id, rule)
    body = {"reason": "table-driven check"} if method in {"POST", "PUT", "PATCH"} else None
    return client.open(path, method=method, json=body, headers=headers or {})


def test_there_are_admin_routes_to_check(app):
    routes = admin_routes(app)
    assert ("GET", "/v1/admin/tenants") in routes
    assert ("POST", "/v1/admin/tenants/<tenant_id>/suspend") in routes
    assert ("POST", "/v1/admin/logout") in routes


def test_every_admin_route_refuses_anything_but_a_full_session(
    app, client, staff, clock, tenant, monkeypatch
):
    # Three login calls per route from one IP: more than the login rate limit allows.
    from core.extensions import limiter

    monkeypatch.setattr(limiter, "enabled", False)
    for method, rule in admin_routes(app):
        anonymous = call(app.test_client(), method, rule, tenant.id)
        assert anonymous.status_code == 401, (method, rule)
        assert "error" in anonymous.get_json(), (method, rule)

        with_key = call(
            app.test_client(),
            method,
            rule,
            tenant.id,
            headers={"Authorization": f"Bearer {tenant.secret}"},
        )
        assert with_key.status_code == 401, (method, rule)

        half = app.test_client()
        assert password_step(half, staff).status_code == 200
        half_response = call(half, method, rule, tenant.id)
        assert half_response.status_code == 401, (method, rule)
        assert error_code(half_response) == "staff_session_required", (method, rule)

        full = app.test_client()
        csrf = full_login(full, staff, clock)
        full_response = call(full, method, rule, tenant.id, headers={"X-CSRF-Token": csrf})
        assert full_response.status_code != 401, (method, rule, full_response.get_json())

        # Leave the tenant as it was for the next route.
        reinstate = f"/v1/admin/tenants/{tenant.id}/reinstate"
        full.post(reinstate, headers={"X-CSRF-Token": csrf})


def admin_client(app, staff, clock):
    client = app.test_client()
    csrf = full_login(client, staff, clock)
    return client, {"X-CSRF-Token": csrf}


def test_suspension_bites_on_the_next_request_and_reinstatement_restores(
    app, api, tenant, staff, clock
):
    admin, csrf = admin_client(app, staff, clock)
    assert api.get("/v1/tenant").status_code == 200

    suspended = admin.post(
        f"/v1/admin/tenants/{tenant.id}/suspend",
        json={"reason": "Chargebacks reported by the bank"},
        headers=csrf,
    )

    assert suspended.status_code == 200
    body = suspended.get_json()
    assert body["status"] == "suspended"
    assert body["suspended_reason"] == "admin"
    assert body["suspension_note"] == "Chargebacks reported by the bank"
    refused = api.get("/v1/tenant")
    assert refused.status_code == 403
    assert error_code(refused) == "tenant_suspended"
    viewed = admin.get(f"/v1/admin/tenants/{tenant.id}").get_json()
    assert viewed["suspension_note"] == "Chargebacks reported by the bank"
    assert viewed["owner_email"] == tenant.email

    reinstated = admin.post(f"/v1/admin/tenants/{tenant.id}/reinstate", headers=csrf)

    assert reinstated.status_code == 200
    assert reinstated.get_json()["status"] == "active"
    assert reinstated.get_json()["suspension_note"] is None
    assert api.get("/v1/tenant").status_code == 200


def test_suspend_requires_a_reason_and_conflicts_are_named(app, tenant, staff, clock):
    admin, csrf = admin_client(app, staff, clock)
    path = f"/v1/admin/tenants/{tenant.id}"

    missing = admin.post(f"{path}/suspend", json={}, headers=csrf)
    assert missing.status_code == 400
    assert missing.get_json()["error"]["param"] == "reason"
    not_suspended = admin.post(f"{path}/reinstate", headers=csrf)
    assert error_code(not_suspended) == "tenant_not_suspended"
    assert admin.post(f"{path}/suspend", json={"reason": "fraud"}, headers=csrf).status_code == 200
    twice = admin.post(f"{path}/suspend", json={"reason": "fraud"}, headers=csrf)
    assert twice.status_code == 409
    assert error_code(twice) == "tenant_already_suspended"
    unknown = admin.post(
        "/v1/admin/tenants/ten_nope/suspend", json={"reason": "x" * 5}, headers=csrf
    )
    assert unknown.status_code == 404


def test_an_admin_suspension_overrides_a_billing_one(app, api, tenant, staff, clock):
    from billing.dunning import reinstate_after_payment, suspend_for_billing
    from core.extensions import db

    with app.app_context():
        suspend_for_billing(tenant.id)
        db.session.commit()
        db.session.remove()
    admin, csrf = admin_client(app, staff, clock)

    response = admin.post(
        f"/v1/admin/tenants/{tenant.id}/suspend", json={"reason": "fraud ring"}, headers=csrf
    )

    assert response.get_json()["suspended_reason"] == "admin"
    with app.app_context():
        # Paying off invoices lifts only a billing suspension.
        assert reinstate_after_payment(tenant.id) is False
        db.session.rollback()
        db.session.remove()
    assert error_code(api.get("/v1/tenant")) == "tenant_suspended"


@pytest.fixture
def three_tenants(tenant_factory):
    return [tenant_factory(name) for name in ("Alpha Ltd", "Beta Ltd", "Gamma Ltd")]


def test_admins_search_and_page_through_tenants(app, three_tenants, staff, clock):
    alpha, beta, gamma = three_tenants
    admin, csrf = admin_client(app, staff, clock)
    admin.post(f"/v1/admin/tenants/{beta.id}/suspend", json={"reason": "review"}, headers=csrf)

    everyone = admin.get("/v1/admin/tenants").get_json()
    assert [t["id"] for t in everyone["data"]] == [gamma.id, beta.id, alpha.id]
    suspended = admin.get("/v1/admin/tenants?status=suspended").get_json()
    assert [t["id"] for t in suspended["data"]] == [beta.id]
    by_email = admin.get(f"/v1/admin/tenants?email={alpha.email[:12].upper()}").get_json()
    assert [t["id"] for t in by_email["data"]] == [alpha.id]
    assert admin.get("/v1/admin/tenants?email=%25").get_json()["data"] == []
    by_plan = admin.get("/v1/admin/tenants?plan=sandbox").get_json()
    assert len(by_plan["data"]) == 3

    first = admin.get("/v1/admin/tenants?limit=2").get_json()
    assert first["has_more"] is True
    rest = admin.get(f"/v1/admin/tenants?limit=2&starting_after={first['data'][-1]['id']}")
    assert [t["id"] for t in rest.get_json()["data"]] == [alpha.id]
    assert rest.get_json()["has_more"] is False


def test_bad_filters_are_refused_in_the_error_shape(app, staff, clock):
    admin, _ = admin_client(app, staff, clock)

    response = admin.get("/v1/admin/tenants?status=sleeping")

    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "status"


def test_the_tenant_view_shows_pushes_counted_this_period(app, tenant, staff, clock):
    from billing.quota import reserve
    from core.extensions import db
    from core.tenancy import tenant_scope

    with app.app_context(), tenant_scope(tenant.id):
        for number in range(3):
            reserve(tenant.id, False, f"stk_counted{number}")
        db.session.commit()
    admin, _ = admin_client(app, staff, clock)

    viewed = admin.get(f"/v1/admin/tenants/{tenant.id}").get_json()

    assert (viewed["pushes_this_period"], viewed["test_pushes_this_period"]) == (0, 3)
