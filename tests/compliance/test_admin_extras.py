"""Admin extras: plan catalog management, assigning review cases, suspending a tenant from a
fraudulent case, masked phones in staff views and the audited reveal."""

from __future__ import annotations

import pytest

from billing.models import Plan
from billing.subscriptions import get_plan
from compliance import fraud
from core.errors import ValidationFailed
from core.extensions import db
from tenants.models import Tenant, TenantStatus
from tests.compliance import test_fraud
from tests.compliance import test_staff_auth as staff_auth
from tests.compliance.test_compliance_console import open_case, signed_in
from tests.compliance.test_staff_auth import error_code

staff = staff_auth.staff

PLAN = {
    "code": "extras_test",
    "name": "Extras test",
    "monthly_price": 1500,
    "included_pushes": 100,
    "overage_price": None,
    "rate_limit": "10 per second",
    "max_webhook_endpoints": 2,
    "livemode_allowed": True,
    "test_allowance": 50,
    "position": 99,
}


@pytest.fixture
def admin(app, staff_factory, clock):
    return signed_in(app, staff_factory("admin"), clock)


@pytest.fixture
def compliance(app, staff_factory, clock):
    return signed_in(app, staff_factory("compliance"), clock)


@pytest.fixture
def cleanup_plan(app):
    yield PLAN["code"]
    with app.app_context():
        db.session.execute(db.delete(Plan).where(Plan.code == PLAN["code"]))
        db.session.commit()
        db.session.remove()


def audit_actions(client, action: str, target_id: str) -> list[dict]:
    entries = client.get("/v1/admin/audit-log", query_string={"action": action}).get_json()
    return [entry for entry in entries["data"] if entry["target"]["id"] == target_id]


def test_admins_create_edit_and_retire_plans(app, admin, compliance, cleanup_plan):
    client, csrf = admin

    bad = client.post(
        "/v1/admin/plans", json={**PLAN, "rate_limit": "lots per moment"}, headers=csrf
    )
    assert bad.status_code == 400
    assert bad.get_json()["error"]["param"] == "rate_limit"

    created = client.post("/v1/admin/plans", json=PLAN, headers=csrf)
    assert created.status_code == 201, created.get_json()
    assert created.get_json()["active"] is True
    again = client.post("/v1/admin/plans", json=PLAN, headers=csrf)
    assert again.status_code == 409

    edited = client.patch(
        f"/v1/admin/plans/{PLAN['code']}",
        json={"monthly_price": 2000, "rate_limit": "20 per second"},
        headers=csrf,
    )
    assert edited.status_code == 200, edited.get_json()
    assert edited.get_json()["monthly_price"] == 2000
    assert client.patch("/v1/admin/plans/nope", json={"name": "x"}, headers=csrf).status_code == 404
    assert (
        client.patch(
            f"/v1/admin/plans/{PLAN['code']}", json={"code": "renamed"}, headers=csrf
        ).status_code
        == 400
    )

    retired = client.post(f"/v1/admin/plans/{PLAN['code']}/retire", headers=csrf)
    assert retired.status_code == 200
    assert retired.get_json()["active"] is False
    assert client.post(f"/v1/admin/plans/{PLAN['code']}/retire", headers=csrf).status_code == 409
    listed = client.get("/v1/admin/plans").get_json()["data"]
    assert {"code": PLAN["code"], "active": False} in [
        {"code": plan["code"], "active": plan["active"]} for plan in listed
    ]
    with app.app_context():
        with pytest.raises(ValidationFailed):
            get_plan(PLAN["code"])
        assert get_plan(PLAN["code"], active_only=False).monthly_price == 2000
        db.session.remove()

    auditor, _ = compliance
    for action in ("plan.created", "plan.updated", "plan.retired"):
        entries = audit_actions(auditor, action, PLAN["code"])
        assert len(entries) == 1, action
        assert entries[0]["actor"]["type"] == "staff"


def test_plan_routes_need_the_admin_role(compliance):
    client, csrf = compliance
    for method, path in (
        ("GET", "/v1/admin/plans"),
        ("POST", "/v1/admin/plans"),
        ("PATCH", "/v1/admin/plans/x"),
        ("POST", "/v1/admin/plans/x/retire"),
    ):
        response = client.open(path, method=method, json={}, headers=csrf)
        assert response.status_code == 403, (method, path)
        assert error_code(response) == "staff_role_required"


def test_cases_show_masked_phones_and_a_reveal_is_audited(app, compliance, tenant):
    client, csrf = compliance
    phone = test_fraud.random_phone()
    case_id = open_case(app, tenant.id, phone)

    listed = client.get("/v1/admin/fraud-cases", query_string={"status": "open"})
    case = next(case for case in listed.get_json()["data"] if case["id"] == case_id)
    assert case["phone"] != phone
    assert case["phone"][:4] == phone[:4] and case["phone"][-2:] == phone[-2:]
    assert "*" in case["phone"]

    revealed = client.post(f"/v1/admin/fraud-cases/{case_id}/reveal-phone", headers=csrf)
    assert revealed.status_code == 200, revealed.get_json()
    assert revealed.get_json()["phone"] == phone
    entries = audit_actions(client, "phone.revealed", case_id)
    assert len(entries) == 1
    assert phone not in str(entries[0]["diff"])
    missing = client.post("/v1/admin/fraud-cases/frc_missing/reveal-phone", headers=csrf)
    assert missing.status_code == 404


def test_assign_defaults_to_self_and_names_another(app, compliance, staff_factory, tenant):
    client, csrf = compliance
    case_id = open_case(app, tenant.id, test_fraud.random_phone())
    me = client.get("/v1/admin/me").get_json()
    colleague = staff_factory("compliance")

    mine = client.post(f"/v1/admin/fraud-cases/{case_id}/assign", json={}, headers=csrf)
    assert mine.status_code == 200, mine.get_json()
    assert f"assigned to {me['email']}" in mine.get_json()["notes"]
    with app.app_context():
        from staff.models import StaffUser

        colleague_id = db.session.scalar(
            db.select(StaffUser.id).where(StaffUser.email == colleague.email)
        )
        db.session.remove()
    theirs = client.post(
        f"/v1/admin/fraud-cases/{case_id}/assign", json={"staff_id": colleague_id}, headers=csrf
    )
    assert theirs.status_code == 200
    assert theirs.get_json()["notes"].endswith(f"assigned to {colleague.email}")
    unknown = client.post(
        f"/v1/admin/fraud-cases/{case_id}/assign", json={"staff_id": "stf_nobody"}, headers=csrf
    )
    assert unknown.status_code == 400
    assert len(audit_actions(client, "fraud_case.assigned", case_id)) == 2


def test_a_fraudulent_case_can_suspend_the_tenant(app, compliance, tenant):
    client, csrf = compliance
    case_id = open_case(app, tenant.id, test_fraud.random_phone())

    refused = client.post(
        f"/v1/admin/fraud-cases/{case_id}/resolve",
        json={"resolution": "legitimate", "suspend_tenant": True},
        headers=csrf,
    )
    assert refused.status_code == 400

    resolved = client.post(
        f"/v1/admin/fraud-cases/{case_id}/resolve",
        json={"resolution": "fraudulent", "suspend_tenant": True},
        headers=csrf,
    )

    assert resolved.status_code == 200, resolved.get_json()
    assert resolved.get_json()["status"] == fraud.ReviewStatus.FRAUDULENT.value
    with app.app_context():
        row = db.session.get(Tenant, tenant.id)
        assert row.status is TenantStatus.SUSPENDED
        assert row.suspended_reason == "compliance"
        db.session.remove()
    entries = audit_actions(client, "tenant.suspended", tenant.id)
    assert len(entries) == 1
    assert entries[0]["diff"]["after"]["case_id"] == case_id
