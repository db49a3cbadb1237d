"""A suspended tenant's dashboard is read-only, as its API keys are refused: every
state-changing dashboard route answers the 403 page saying why, except the ones a member
still needs (the mode switch, their own password and two-step sign-in, and paying an
invoice while the suspension is for an unpaid one). The table below names every POST route
of the dashboard, so a new one has to be decided here."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, update

from core.extensions import db
from tests.frontend.conftest import HTML, post_form

REFUSED, ALLOWED = "refused", "allowed"
# Endpoint → what a suspended tenant gets, by suspension reason ("admin": by staff or
# compliance; "billing": an unpaid invoice).
EXPECTED = {
    "dashboard.switch_mode": {"admin": ALLOWED, "billing": ALLOWED},
    "dashboard.account_password": {"admin": ALLOWED, "billing": ALLOWED},
    "dashboard.account_totp": {"admin": ALLOWED, "billing": ALLOWED},
    "dashboard.account_totp_disable": {"admin": ALLOWED, "billing": ALLOWED},
    "dashboard.billing_invoice_pay": {"admin": REFUSED, "billing": ALLOWED},
    "dashboard.billing_plan": {"admin": REFUSED, "billing": REFUSED},
    "dashboard.send_test_push": {"admin": REFUSED, "billing": REFUSED},
    "dashboard.create_key": {"admin": REFUSED, "billing": REFUSED},
    "dashboard.roll_key": {"admin": REFUSED, "billing": REFUSED},
    "dashboard.revoke_key": {"admin": REFUSED, "billing": REFUSED},
    "dashboard.settings_credentials": {"admin": REFUSED, "billing": REFUSED},
    "dashboard.settings_kyc": {"admin": REFUSED, "billing": REFUSED},
    "dashboard.settings_kyc_document": {"admin": REFUSED, "billing": REFUSED},
    "dashboard.team_invite": {"admin": REFUSED, "billing": REFUSED},
    "dashboard.team_revoke_invite": {"admin": REFUSED, "billing": REFUSED},
    "dashboard.team_change_role": {"admin": REFUSED, "billing": REFUSED},
    "dashboard.team_remove_member": {"admin": REFUSED, "billing": REFUSED},
    "dashboard.webhooks_create": {"admin": REFUSED, "billing": REFUSED},
    "dashboard.webhooks_endpoint_update": {"admin": REFUSED, "billing": REFUSED},
    "dashboard.webhooks_endpoint_enabled": {"admin": REFUSED, "billing": REFUSED},
    "dashboard.webhooks_endpoint_rotate": {"admin": REFUSED, "billing": REFUSED},
    "dashboard.webhooks_endpoint_test": {"admin": REFUSED, "billing": REFUSED},
    "dashboard.webhooks_endpoint_delete": {"admin": REFUSED, "billing": REFUSED},
    "dashboard.webhooks_event_redeliver": {"admin": REFUSED, "billing": REFUSED},
}


def state_changing_routes(app) -> dict[str, str]:
    """Every dashboard endpoint taking a method other than GET, with a path to call it on
    (ids filled with an id no tenant has)."""
    routes = {}
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("dashboard."):
            continue
        if not rule.methods - {"GET", "HEAD", "OPTIONS"}:
            continue
        routes[rule.endpoint] = rule.build({name: "x_none" for name in rule.arguments})[1]
    return routes


def suspend(app, tenant_id: str, reason: str | None) -> None:
    from tenants.models import Tenant, TenantStatus

    status = TenantStatus.SUSPENDED if reason else TenantStatus.ACTIVE
    with app.app_context():
        db.session.execute(
            update(Tenant)
            .where(Tenant.id == tenant_id)
            .values(status=status, suspended_reason=reason)
        )
        db.session.commit()
        db.session.remove()


def key_count(app, tenant_id: str) -> int:
    from tenants.models import ApiKey

    with app.app_context():
        count = db.session.scalar(
            select(func.count()).select_from(ApiKey).where(ApiKey.tenant_id == tenant_id)
        )
        db.session.remove()
    return count


def test_the_table_names_every_state_changing_dashboard_route(app):
    assert set(state_changing_routes(app)) == set(EXPECTED)


@pytest.mark.parametrize("reason", ["admin", "billing"])
def test_every_state_changing_form_is_refused_while_suspended(app, sign_in, reason):
    owner = sign_in("owner")
    suspend(app, owner.tenant.id, reason)

    wrong = []
    for endpoint, path in sorted(state_changing_routes(app).items()):
        response = post_form(owner.client, path)
        refused = response.status_code == 403 and "This account is suspended" in (
            response.get_data(as_text=True)
        )
        if refused != (EXPECTED[endpoint][reason] == REFUSED):
            wrong.append(f"{endpoint} ({path}): {response.status_code}")
    assert not wrong, "\n".join(wrong)


def test_a_suspended_tenant_cannot_mint_a_key_that_works_after_reinstatement(app, sign_in):
    owner = sign_in("owner")
    before = key_count(app, owner.tenant.id)
    suspend(app, owner.tenant.id, "admin")

    refused = post_form(owner.client, "/dashboard/keys", {"name": "While suspended"})

    assert refused.status_code == 403
    page = refused.get_data(as_text=True)
    assert "the dashboard is read-only until Lango reinstates it" in page
    assert key_count(app, owner.tenant.id) == before
    suspend(app, owner.tenant.id, None)
    created = post_form(owner.client, "/dashboard/keys", {"name": "After reinstatement"})
    assert created.status_code == 201
    assert key_count(app, owner.tenant.id) == before + 1


def test_every_page_says_the_dashboard_is_read_only_and_still_opens(app, sign_in):
    viewer = sign_in("viewer")
    suspend(app, viewer.tenant.id, "billing")

    for path in ("/dashboard", "/dashboard/payments", "/dashboard/billing", "/dashboard/team"):
        response = viewer.client.get(path, headers=HTML)
        assert response.status_code == 200, path
        page = response.get_data(as_text=True)
        assert "This account is suspended for an unpaid invoice" in page, path
        assert "The dashboard is read-only meanwhile" in page, path
