"""Dashboard settings (owners only): write-only M-Pesa credentials, KYC submission and
documents with the review's outcome, and the tenant's own audit trail."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from core.extensions import db
from core.unit_of_work import unit_of_work
from payments.credentials import live_credentials
from tests.frontend.conftest import HTML, member_page, post_form

OWNER_ONLY = member_page(developer=403, viewer=403)
ACCESS = [
    ("/dashboard/settings", OWNER_ONLY),
    ("/dashboard/settings/audit", OWNER_ONLY),
    ("/dashboard/settings/audit?action=mpesa_credentials.changed", OWNER_ONLY),
]

CREDENTIALS = {
    "shortcode": "600987",
    "kind": "paybill",
    "till_number": "",
    "consumer_key": "ck-live-AbCdEfGh1234",
    "consumer_secret": "cs-live-very-secret-5678",
    "passkey": "pk-live-bfb279f9aa9bdbcf",
}
KYC = {
    "legal_name": "Duka Traders Limited",
    "registration_number": "PVT-AAA1234",
    "kra_pin": "p051234567x",  # typed in lower case: stored upper case
    "director_name": "Achieng Otieno",
    "director_id_number": "12345678",
    "contact_email": "compliance@duka.example",
    "contact_phone": "254712345678",
}
PDF = b"%PDF-1.4\n% a small certificate\n"


def test_access(check_access):
    check_access(ACCESS)


@pytest.fixture(autouse=True)
def kyc_storage(app, tmp_path) -> Path:
    original = app.config.get("KYC_STORAGE_DIR")
    app.config["KYC_STORAGE_DIR"] = str(tmp_path / "kyc")
    yield tmp_path / "kyc"
    app.config["KYC_STORAGE_DIR"] = original


def page(client, path, status=200) -> str:
    response = client.get(path, headers=HTML)
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    return response.get_data(as_text=True)


def stored_credentials(app, tenant_id):
    with app.app_context():
        found = live_credentials(tenant_id, "https://daraja.example")
        db.session.remove()
        return found


def upload(client, content=PDF, name="certificate.pdf", content_type="application/pdf"):
    return post_form(
        client,
        "/dashboard/settings/kyc/documents",
        {"file": (io.BytesIO(content), name, content_type)},
        content_type="multipart/form-data",
    )


# --- M-Pesa credentials ------------------------------------------------------------------


def test_the_first_save_needs_every_secret(app, sign_in):
    owner = sign_in("owner")

    response = post_form(
        owner.client,
        "/dashboard/settings/credentials",
        {**CREDENTIALS, "consumer_secret": "", "passkey": ""},
    )

    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert "Consumer secret: Required for the first save." in body
    assert "Passkey: Required for the first save." in body
    assert "No credentials on file yet" in body
    assert CREDENTIALS["consumer_key"] not in body  # not even the one typed
    assert stored_credentials(app, owner.tenant.id) is None


def test_credentials_are_write_only(app, sign_in):
    owner = sign_in("owner")
    client = owner.client

    saved = post_form(client, "/dashboard/settings/credentials", CREDENTIALS)

    assert saved.status_code == 302
    assert saved.headers["Location"] == "/dashboard/settings#mpesa"
    settings = page(client, "/dashboard/settings")
    assert "M-Pesa credentials saved." in settings
    assert "600987" in settings and "••••1234" in settings
    for secret in ("consumer_key", "consumer_secret", "passkey"):
        assert CREDENTIALS[secret] not in settings
        assert CREDENTIALS[secret] not in client.get_cookie("session").value
    stored = stored_credentials(app, owner.tenant.id)
    assert (stored.consumer_key, stored.consumer_secret, stored.passkey) == (
        CREDENTIALS["consumer_key"],
        CREDENTIALS["consumer_secret"],
        CREDENTIALS["passkey"],
    )
    # The audit trail records the change, never a secret.
    trail = page(client, "/dashboard/settings/audit")
    assert "<code>mpesa_credentials.changed</code>" in trail and "consumer_key_last4" in trail
    for secret in ("consumer_key", "consumer_secret", "passkey"):
        assert CREDENTIALS[secret] not in trail


def test_blank_secret_fields_keep_the_stored_secrets(app, sign_in):
    owner = sign_in("owner")
    client = owner.client
    post_form(client, "/dashboard/settings/credentials", CREDENTIALS)

    changed = post_form(
        client,
        "/dashboard/settings/credentials",
        {
            "shortcode": "174379",
            "kind": "till",
            "till_number": "5123456",
            "consumer_key": "",
            "consumer_secret": "",
            "passkey": "pk-live-a-new-passkey",
        },
    )

    assert changed.status_code == 302
    stored = stored_credentials(app, owner.tenant.id)
    assert (stored.shortcode, stored.kind, stored.till_number) == ("174379", "till", "5123456")
    assert stored.consumer_key == CREDENTIALS["consumer_key"]
    assert stored.consumer_secret == CREDENTIALS["consumer_secret"]
    assert stored.passkey == "pk-live-a-new-passkey"
    settings = page(client, "/dashboard/settings")
    assert "Till (Buy Goods)" in settings and "Blank keeps the stored one" in settings
    assert "pk-live-a-new-passkey" not in settings


def test_credential_fields_are_checked(app, sign_in):
    owner = sign_in("owner")

    till = post_form(
        owner.client, "/dashboard/settings/credentials", {**CREDENTIALS, "kind": "till"}
    )
    short = post_form(
        owner.client,
        "/dashboard/settings/credentials",
        {**CREDENTIALS, "shortcode": "12", "passkey": "short"},
    )

    assert till.status_code == short.status_code == 400
    assert "Till number: A till needs its till number." in till.get_data(as_text=True)
    assert "Shortcode: 5 to 7 digits." in short.get_data(as_text=True)
    assert "Passkey: Field must be between 8 and 200 characters long." in short.get_data(
        as_text=True
    )
    assert stored_credentials(app, owner.tenant.id) is None


# --- KYC -----------------------------------------------------------------------------------


def test_kyc_submission_and_documents(app, sign_in, kyc_storage):
    owner = sign_in("owner")
    client = owner.client
    assert "Submit your business details" in page(client, "/dashboard/settings")

    bad = post_form(client, "/dashboard/settings/kyc", {**KYC, "kra_pin": "12345"})
    assert bad.status_code == 400
    assert "KRA PIN: A letter, nine digits and a letter." in bad.get_data(as_text=True)

    submitted = post_form(client, "/dashboard/settings/kyc", KYC)
    assert submitted.headers["Location"] == "/dashboard/settings#kyc"
    settings = page(client, "/dashboard/settings")
    assert 'data-status="submitted"' in settings and "awaiting review" in settings
    assert "KRA PIN P051234567X" in settings
    assert "Submit for review" not in settings and 'enctype="multipart/form-data"' in settings

    uploaded = upload(client)
    assert uploaded.status_code == 302
    settings = page(client, "/dashboard/settings")
    assert "certificate.pdf uploaded." in settings
    assert "certificate.pdf" in settings and "application/pdf" in settings
    (stored,) = [path for path in kyc_storage.rglob("*") if path.is_file()]
    assert stored.read_bytes() == PDF

    wrong_type = upload(client, b"MZ...", "tool.exe", "application/octet-stream")
    assert wrong_type.status_code == 400
    assert "send a PDF, PNG or JPEG" in wrong_type.get_data(as_text=True)
    empty = upload(client, b"", "empty.pdf")
    assert empty.status_code == 400
    no_csrf = client.post(
        "/dashboard/settings/kyc/documents",
        data={"file": (io.BytesIO(PDF), "again.pdf", "application/pdf")},
        content_type="multipart/form-data",
        headers=HTML,
    )
    assert no_csrf.status_code == 400
    again = post_form(client, "/dashboard/settings/kyc", KYC)
    assert again.status_code == 409
    assert "already awaiting review" in again.get_data(as_text=True)


def test_uploading_before_submitting_is_refused(sign_in):
    response = upload(sign_in("owner").client)
    assert response.status_code == 404
    assert "No KYC submission awaits review" in response.get_data(as_text=True)


def test_a_rejection_shows_its_reason_and_allows_a_new_submission(app, sign_in, staff_factory):
    from compliance import kyc

    owner = sign_in("owner")
    client = owner.client
    post_form(client, "/dashboard/settings/kyc", KYC)
    staff = staff_factory("compliance")
    with app.app_context():
        submission = kyc.latest_submission(owner.tenant.id)
        with unit_of_work():
            kyc.reject_submission(
                submission.id,
                reason="The registration number does not match the certificate.",
                staff_id=staff.id,
                staff_label=staff.email,
            )
        db.session.remove()

    settings = page(client, "/dashboard/settings")

    assert 'data-status="rejected"' in settings
    assert "The registration number does not match the certificate." in settings
    assert "Submit again" in settings and 'value="Duka Traders Limited"' in settings
    resubmitted = post_form(
        client, "/dashboard/settings/kyc", {**KYC, "registration_number": "PVT-BBB9876"}
    )
    assert resubmitted.status_code == 302
    assert 'data-status="submitted"' in page(client, "/dashboard/settings")
    trail = page(client, "/dashboard/settings/audit?action=kyc.rejected")
    assert "<code>kyc.rejected</code>" in trail and staff.email in trail


# --- audit trail ---------------------------------------------------------------------------


def test_the_audit_trail_filters_and_stays_within_the_tenant(app, sign_in):
    mine, theirs = sign_in("owner"), sign_in("owner")
    post_form(theirs.client, "/dashboard/settings/credentials", CREDENTIALS)

    trail = page(mine.client, "/dashboard/settings/audit")
    signed_up = page(mine.client, "/dashboard/settings/audit?action=tenant.signed_up")
    none = page(mine.client, "/dashboard/settings/audit?action=mpesa_credentials.changed")

    assert "<code>tenant.signed_up</code>" in trail and theirs.tenant.id not in trail
    assert "<code>mpesa_credentials.changed</code>" not in trail
    assert mine.tenant.id in signed_up
    assert "No entries match" in none
    page(mine.client, "/dashboard/settings/audit?action=nonsense", status=400)
    assert "••••1234" not in page(mine.client, "/dashboard/settings")


def test_developers_and_viewers_change_nothing(app, sign_in):
    owner = sign_in("owner")
    for role in ("developer", "viewer"):
        member = sign_in(role, tenant=owner.tenant)
        for path, data in [
            ("/dashboard/settings/credentials", CREDENTIALS),
            ("/dashboard/settings/kyc", KYC),
        ]:
            assert post_form(member.client, path, data).status_code == 403, (role, path)
        assert upload(member.client).status_code == 403
    assert stored_credentials(app, owner.tenant.id) is None
    assert "Submit your business details" in page(owner.client, "/dashboard/settings")
