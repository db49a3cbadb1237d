"""The compliance console under /v1/admin: audit search and CSV export across tenants, fraud
rules edited without a deploy, the review queue; staff logins and suspensions audited."""

from __future__ import annotations

import csv
import io
import json
import secrets
from datetime import UTC, datetime

import pytest

from compliance import fraud
from core.extensions import db
from core.tenancy import tenant_scope
from tests.compliance import test_fraud
from tests.compliance import test_staff_auth as staff_auth
from tests.compliance.test_staff_auth import error_code, full_login, password_step, wrong_code

staff = staff_auth.staff
restore_rules = test_fraud.restore_rules

COMPLIANCE_ROUTES = [
    ("GET", "/v1/admin/audit-log"),
    ("GET", "/v1/admin/audit-log/export"),
    ("GET", "/v1/admin/fraud-rules"),
    ("POST", "/v1/admin/fraud-rules"),
    ("PATCH", "/v1/admin/fraud-rules/frule_x"),
    ("GET", "/v1/admin/fraud-cases"),
    ("POST", "/v1/admin/fraud-cases/frc_x/resolve"),
]


def signed_in(app, staff, clock):
    client = app.test_client()
    csrf = full_login(client, staff, clock)
    return client, {"X-CSRF-Token": csrf}


@pytest.fixture
def compliance(app, staff_factory, clock):
    return signed_in(app, staff_factory("compliance"), clock)


def test_compliance_staff_search_a_tenants_entries(compliance, tenant, tenant_factory):
    client, _ = compliance
    other = tenant_factory("Other Duka")

    response = client.get("/v1/admin/audit-log", query_string={"tenant_id": tenant.id})

    assert response.status_code == 200
    entries = response.get_json()["data"]
    assert [entry["action"] for entry in entries] == ["tenant.signed_up"]
    assert entries[0]["tenant_id"] == tenant.id
    assert entries[0]["actor"]["type"] == "member"
    everyone = client.get("/v1/admin/audit-log", query_string={"action": "tenant.signed_up"})
    tenants = {entry["tenant_id"] for entry in everyone.get_json()["data"]}
    assert {tenant.id, other.id} <= tenants
    future = client.get(
        "/v1/admin/audit-log",
        query_string={"tenant_id": tenant.id, "occurred_gte": "2999-01-01T00:00:00Z"},
    )
    assert future.get_json()["data"] == []
    paged = client.get("/v1/admin/audit-log", query_string={"limit": 1})
    assert paged.get_json()["has_more"] is True


def test_compliance_staff_export_the_audit_log_as_csv(compliance, tenant, tenant_factory):
    client, _ = compliance
    tenant_factory("Other Duka")

    response = client.get("/v1/admin/audit-log/export", query_string={"tenant_id": tenant.id})

    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert [(row["tenant_id"], row["action"]) for row in rows] == [(tenant.id, "tenant.signed_up")]
    assert len(rows[0]["hash"]) == 64


def test_the_csv_export_writes_each_diff_as_json(compliance, api, tenant):
    client, _ = compliance
    api.post("/v1/api-keys", json={"name": "server", "mode": "test"})

    response = client.get("/v1/admin/audit-log/export", query_string={"tenant_id": tenant.id})

    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    created = next(row for row in rows if row["action"] == "api_key.created")
    # JSON (false, double quotes), not Python's repr (False, single quotes).
    assert json.loads(created["diff"])["after"]["livemode"] is False
    assert '"livemode": false' in created["diff"]


def test_staff_without_the_compliance_role_are_refused(app, staff_factory, clock, tenant):
    client, csrf = signed_in(app, staff_factory("admin"), clock)

    for method, path in COMPLIANCE_ROUTES:
        response = client.open(path, method=method, json={}, headers=csrf)
        assert response.status_code == 403, (method, path)
        assert error_code(response) == "staff_role_required", (method, path)


def screen(app, tenant_id: str, amount: int) -> fraud.Decision:
    with app.app_context():
        push = fraud.ScreenedPush(phone=test_fraud.random_phone(), amount=amount, livemode=False)
        decision = fraud.screen(tenant_id, push)
        db.session.remove()
        return decision


def test_a_rule_created_by_compliance_blocks_the_next_push(app, compliance, tenant, restore_rules):
    client, csrf = compliance
    assert screen(app, tenant.id, 4321).outcome is fraud.Outcome.ALLOW

    created = client.post(
        "/v1/admin/fraud-rules",
        json={"expression": "amount == 4321", "outcome": "block", "position": 0},
        headers=csrf,
    )

    assert created.status_code == 201, created.get_json()
    rule = created.get_json()
    decision = screen(app, tenant.id, 4321)
    assert decision == fraud.Decision(fraud.Outcome.BLOCK, rule["id"])
    listed = client.get("/v1/admin/fraud-rules").get_json()["data"]
    assert rule["id"] in [listed_rule["id"] for listed_rule in listed]

    edited = client.patch(
        f"/v1/admin/fraud-rules/{rule['id']}", json={"outcome": "review"}, headers=csrf
    )

    assert edited.status_code == 200
    assert screen(app, tenant.id, 4321) == fraud.Decision(fraud.Outcome.REVIEW, rule["id"])
    changes = client.get(
        "/v1/admin/audit-log", query_string={"action": "fraud_rule.changed"}
    ).get_json()["data"]
    assert [change["target"]["id"] for change in changes] == [rule["id"], rule["id"]]
    assert changes[0]["diff"]["before"]["outcome"] == "block"
    assert changes[0]["actor"]["type"] == "staff"


def test_an_invalid_expression_is_a_400_on_expression(compliance, restore_rules):
    client, csrf = compliance

    for expression in ("amount >", "no_such_attribute > 1"):
        response = client.post(
            "/v1/admin/fraud-rules",
            json={"expression": expression, "outcome": "block", "position": 0},
            headers=csrf,
        )
        assert response.status_code == 400, expression
        assert response.get_json()["error"]["param"] == "expression"
    missing = client.patch(
        "/v1/admin/fraud-rules/frule_missing", json={"enabled": False}, headers=csrf
    )
    assert missing.status_code == 404


def open_case(app, tenant_id: str, phone: str) -> str:
    now = datetime.now(UTC)
    with app.app_context():
        with tenant_scope(tenant_id):
            from payments.models import PushStatus, StkPush

            push = StkPush(
                id=f"stk_test{secrets.token_hex(6)}",
                livemode=False,
                status=PushStatus.PENDING,
                phone_number=phone,
                amount=5000,
                account_reference="INV1",
                description="Test",
                metadata_={},
                callback_token_hash=secrets.token_hex(32),
                created_at=now,
                updated_at=now,
            )
            db.session.add(push)
            db.session.commit()
            push_id = push.id
        case = fraud.open_review_case(tenant_id, push_id, "frule_new_tenant_large_amount")
        case_id = case.id
        db.session.commit()
        db.session.remove()
    return case_id


def test_resolving_a_case_as_fraudulent_blocks_the_phone(app, compliance, tenant):
    client, csrf = compliance
    phone = test_fraud.random_phone()
    case_id = open_case(app, tenant.id, phone)
    queue = client.get("/v1/admin/fraud-cases", query_string={"status": "open"})
    assert [case["id"] for case in queue.get_json()["data"]] == [case_id]

    resolved = client.post(
        f"/v1/admin/fraud-cases/{case_id}/resolve",
        json={"resolution": "fraudulent", "note": "SIM swap", "block_phone": True},
        headers=csrf,
    )

    assert resolved.status_code == 200, resolved.get_json()
    assert resolved.get_json()["status"] == "fraudulent"
    with app.app_context():
        decision = fraud.screen(tenant.id, fraud.ScreenedPush(phone, 10, False))
        db.session.remove()
    assert decision.outcome is fraud.Outcome.BLOCK and decision.blocklisted
    again = client.post(
        f"/v1/admin/fraud-cases/{case_id}/resolve",
        json={"resolution": "legitimate"},
        headers=csrf,
    )
    assert again.status_code == 409
    audited = client.get(
        "/v1/admin/audit-log", query_string={"action": "fraud_case.resolved"}
    ).get_json()["data"]
    assert [(entry["target"]["id"], entry["tenant_id"]) for entry in audited] == [
        (case_id, tenant.id)
    ]


def test_a_legitimate_case_cannot_block_the_phone(app, compliance, tenant):
    client, csrf = compliance
    case_id = open_case(app, tenant.id, test_fraud.random_phone())

    response = client.post(
        f"/v1/admin/fraud-cases/{case_id}/resolve",
        json={"resolution": "legitimate", "block_phone": True},
        headers=csrf,
    )

    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "block_phone"


def test_staff_logins_and_suspensions_are_audited(app, api, staff_factory, clock, tenant):
    officer = staff_factory("admin", "compliance")
    failing = app.test_client()
    assert password_step(failing, officer, password="wrong password!").status_code == 401
    assert password_step(failing, officer).status_code == 200
    bad = failing.post("/v1/admin/login/totp", json={"code": wrong_code(officer, clock)})
    assert bad.status_code == 401
    client, csrf = signed_in(app, officer, clock)

    path = f"/v1/admin/tenants/{tenant.id}"
    suspend = client.post(f"{path}/suspend", json={"reason": "Chargebacks"}, headers=csrf)
    assert suspend.status_code == 200
    assert client.post(f"{path}/reinstate", headers=csrf).status_code == 200

    staff_entries = client.get(
        "/v1/admin/audit-log", query_string={"actor_type": "staff", "actor_id": officer.id}
    ).get_json()["data"]
    actions = [entry["action"] for entry in reversed(staff_entries)]
    assert actions == [
        "staff.login_failed",
        "staff.login_failed",
        "staff.login_succeeded",
        "tenant.suspended",
        "tenant.reinstated",
    ]
    failures = [entry["diff"]["after"]["reason"] for entry in reversed(staff_entries[-2:])]
    assert failures == ["password", "totp_invalid"]
    suspended = staff_entries[1]
    assert suspended["tenant_id"] == tenant.id
    assert suspended["diff"]["after"]["reason"] == "Chargebacks"
    # The tenant sees the suspension in its own trail.
    own = api.get("/v1/audit-log", query_string={"action": "tenant.suspended"}).get_json()
    assert [entry["actor"]["type"] for entry in own["data"]] == ["staff"]
