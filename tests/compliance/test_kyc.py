"""KYC: a tenant submits its business details; live keys stay refused until a compliance user
approves; a rejection's reason reaches the tenant; only compliance staff decide."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
from sqlalchemy import select

from compliance import kyc
from compliance.audit import AuditEntry
from core.extensions import db
from core.unit_of_work import unit_of_work
from tenants.models import Tenant
from tenants.service import create_api_key
from tests.compliance.test_staff_auth import error_code, full_login
from tests.conftest import ApiClient

KYC = "/v1/compliance/kyc"
STKPUSHES = "/v1/stk-pushes"
DETAILS = {
    "legal_name": "Duka Traders Limited",
    "registration_number": "PVT-AAA1234",
    "kra_pin": "P051234567X",
    "director_name": "Achieng Otieno",
    "director_id_number": "12345678",
    "contact_email": "compliance@duka.example",
    "contact_phone": "254712345678",
}


@pytest.fixture(autouse=True)
def kyc_storage(app, tmp_path) -> Path:
    original = app.config.get("KYC_STORAGE_DIR")
    app.config["KYC_STORAGE_DIR"] = str(tmp_path / "kyc")
    yield tmp_path / "kyc"
    app.config["KYC_STORAGE_DIR"] = original


def staff_client(app, staff, clock):
    client = app.test_client()
    return client, {"X-CSRF-Token": full_login(client, staff, clock)}


@pytest.fixture
def compliance(app, staff_factory, clock):
    return staff_client(app, staff_factory("compliance"), clock)


def live_client(app, client, tenant) -> ApiClient:
    with app.app_context(), unit_of_work():
        secret = create_api_key(tenant.id, livemode=True, name="live").secret
    return ApiClient(client, secret)


def push_body() -> dict:
    return {"phone_number": "254708374149", "amount": 10, "account_reference": "INV-1"}


def live_enabled(app, tenant_id: str) -> bool:
    with app.app_context():
        value = db.session.get(Tenant, tenant_id).live_enabled
        db.session.remove()
    return value


def test_tenant_submits_and_sees_its_submission(api, tenant):
    submitted = api.post(KYC, json=DETAILS)

    assert submitted.status_code == 201, submitted.get_json()
    body = submitted.get_json()
    assert body["id"].startswith("kyc_")
    assert body["status"] == "submitted"
    assert body["rejection_reason"] is None
    latest = api.get(KYC).get_json()
    assert (latest["id"], latest["kra_pin"], latest["tenant_id"]) == (
        body["id"],
        "P051234567X",
        tenant.id,
    )


def test_a_second_submission_waits_for_the_first_review(api):
    assert api.post(KYC, json=DETAILS).status_code == 201

    again = api.post(KYC, json=DETAILS)

    assert again.status_code == 409
    assert error_code(again) == "kyc_pending"


@pytest.mark.parametrize("pin", ["P05123456X", "051234567XX", "p051234567x", "P0512345678"])
def test_a_bad_kra_pin_is_a_400_naming_it(api, pin):
    response = api.post(KYC, json={**DETAILS, "kra_pin": pin})

    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "kra_pin"


def test_missing_fields_are_named(api):
    response = api.post(KYC, json={"legal_name": "Duka"})

    assert response.status_code == 400
    assert {"kra_pin", "director_name", "contact_email"} <= set(
        response.get_json()["error"]["errors"]
    )


def test_no_submission_yet_is_a_404(api):
    assert api.get(KYC).status_code == 404


def test_live_keys_are_refused_until_compliance_approves(app, client, api, tenant, compliance):
    live = live_client(app, client, tenant)
    submission = api.post(KYC, json=DETAILS).get_json()

    refused = live.post(STKPUSHES, json=push_body())
    assert refused.status_code == 403
    assert error_code(refused) == "livemode_not_enabled"
    assert live_enabled(app, tenant.id) is False

    staff, csrf = compliance
    approved = staff.post(f"/v1/admin/kyc/{submission['id']}/approve", headers=csrf)

    assert approved.status_code == 200, approved.get_json()
    assert approved.get_json()["status"] == "approved"
    assert approved.get_json()["reviewed_by"]
    assert live_enabled(app, tenant.id) is True
    assert live.get("/v1/tenant").get_json()["tenant"]["live_enabled"] is True
    assert api.get(KYC).get_json()["status"] == "approved"
    # Approved once: neither decided again nor resubmitted.
    again = staff.post(f"/v1/admin/kyc/{submission['id']}/approve", headers=csrf)
    assert again.status_code == 409
    assert error_code(api.post(KYC, json=DETAILS)) == "kyc_already_approved"


def test_rejection_reason_is_visible_to_the_tenant(app, api, tenant, compliance):
    submission = api.post(KYC, json=DETAILS).get_json()
    staff, csrf = compliance

    rejected = staff.post(
        f"/v1/admin/kyc/{submission['id']}/reject",
        json={"reason": "The director's ID is unreadable."},
        headers=csrf,
    )

    assert rejected.status_code == 200, rejected.get_json()
    latest = api.get(KYC).get_json()
    assert latest["status"] == "rejected"
    assert latest["rejection_reason"] == "The director's ID is unreadable."
    assert live_enabled(app, tenant.id) is False
    # A rejected tenant may try again.
    assert api.post(KYC, json=DETAILS).status_code == 201


def test_rejecting_needs_a_reason(api, compliance):
    submission = api.post(KYC, json=DETAILS).get_json()
    staff, csrf = compliance

    response = staff.post(f"/v1/admin/kyc/{submission['id']}/reject", json={}, headers=csrf)

    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "reason"


def test_every_decision_is_audited(app, api, tenant_factory, client, compliance):
    staff, csrf = compliance
    approved_id = api.post(KYC, json=DETAILS).get_json()["id"]
    other = ApiClient(client, tenant_factory("Other Ltd").secret)
    rejected_id = other.post(KYC, json=DETAILS).get_json()["id"]
    staff.post(f"/v1/admin/kyc/{approved_id}/approve", headers=csrf)
    staff.post(f"/v1/admin/kyc/{rejected_id}/reject", json={"reason": "No"}, headers=csrf)

    with app.app_context():
        entries = db.session.scalars(
            select(AuditEntry).where(AuditEntry.target_type == "kyc_submission")
        ).all()
        decisions = {(e.target_id, e.action, e.actor_type) for e in entries}
        db.session.remove()
    assert decisions == {
        (approved_id, "kyc.approved", "staff"),
        (rejected_id, "kyc.rejected", "staff"),
    }


def test_the_queue_filters_by_status(api, tenant_factory, client, compliance):
    staff, csrf = compliance
    first = api.post(KYC, json=DETAILS).get_json()["id"]
    other = ApiClient(client, tenant_factory("Other Ltd").secret)
    second = other.post(KYC, json=DETAILS).get_json()["id"]
    staff.post(f"/v1/admin/kyc/{first}/approve", headers=csrf)

    pending = staff.get("/v1/admin/kyc?status=submitted").get_json()["data"]
    everything = staff.get("/v1/admin/kyc").get_json()["data"]

    assert [s["id"] for s in pending] == [second]
    assert [s["id"] for s in everything] == [second, first]


def test_admin_only_staff_are_refused_the_kyc_routes(app, api, staff_factory, clock):
    submission = api.post(KYC, json=DETAILS).get_json()
    staff, csrf = staff_client(app, staff_factory("admin"), clock)

    responses = [
        staff.get("/v1/admin/kyc"),
        staff.post(f"/v1/admin/kyc/{submission['id']}/approve", headers=csrf),
        staff.post(f"/v1/admin/kyc/{submission['id']}/reject", json={"reason": "x"}, headers=csrf),
    ]

    assert [r.status_code for r in responses] == [403, 403, 403]
    assert {error_code(r) for r in responses} == {"staff_role_required"}
    assert api.get(KYC).get_json()["status"] == "submitted"


def test_api_keys_never_reach_the_compliance_routes(app, client, api, tenant):
    submission = api.post(KYC, json=DETAILS).get_json()
    live = live_client(app, client, tenant)

    for key in (api, live):
        assert key.get("/v1/admin/kyc").status_code == 401
        assert key.post(f"/v1/admin/kyc/{submission['id']}/approve").status_code == 401
    assert live_enabled(app, tenant.id) is False


def test_documents_are_stored_outside_the_database_with_checksums(api, kyc_storage):
    assert api.post(KYC, json=DETAILS).status_code == 201
    content = b"%PDF-1.4 certificate of incorporation"

    uploaded = api.post(
        f"{KYC}/documents",
        data={"file": (io.BytesIO(content), "certificate.pdf", "application/pdf")},
        content_type="multipart/form-data",
    )

    assert uploaded.status_code == 201, uploaded.get_json()
    document = uploaded.get_json()
    assert document["sha256"] == hashlib.sha256(content).hexdigest()
    assert document["size"] == len(content)
    stored = [p for p in kyc_storage.rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in stored] == [content]
    assert api.get(KYC).get_json()["documents"][0]["id"] == document["id"]


def test_a_document_of_an_unaccepted_type_is_refused(api):
    assert api.post(KYC, json=DETAILS).status_code == 201

    response = api.post(
        f"{KYC}/documents",
        data={"file": (io.BytesIO(b"MZ..."), "setup.exe", "application/x-msdownload")},
        content_type="multipart/form-data",
    )

    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "file"


def test_a_document_whose_transaction_rolls_back_leaves_no_file(app, api, tenant, kyc_storage):
    assert api.post(KYC, json=DETAILS).status_code == 201
    with app.app_context(), pytest.raises(RuntimeError), unit_of_work():
        kyc.add_document(
            tenant.id,
            filename="id.pdf",
            content_type="application/pdf",
            stream=io.BytesIO(b"%PDF-1.4 id"),
        )
        assert [p for p in kyc_storage.rglob("*") if p.is_file()]  # stored, not committed
        raise RuntimeError("the request failed after the upload")
    assert [p for p in kyc_storage.rglob("*") if p.is_file()] == []

    with app.app_context(), unit_of_work():  # a committed one keeps its file
        kyc.add_document(
            tenant.id,
            filename="id.pdf",
            content_type="application/pdf",
            stream=io.BytesIO(b"%PDF-1.4 id"),
        )
    assert len([p for p in kyc_storage.rglob("*") if p.is_file()]) == 1
