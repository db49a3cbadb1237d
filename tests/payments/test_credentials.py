"""Live Daraja credentials: write-only secrets, encrypted at rest, rotatable."""

from cryptography.fernet import Fernet
from sqlalchemy import text

from core.extensions import db
from core.unit_of_work import unit_of_work
from payments.credentials import live_credentials, rotate_encryption
from tenants.service import get_tenant
from tests.conftest import TEST_ENCRYPTION_KEY

CREDENTIALS = {
    "shortcode": "600984",
    "kind": "till",
    "till_number": "5551234",
    "consumer_key": "ck_live_abcdefgh1234",
    "consumer_secret": "cs_live_supersecret",
    "passkey": "pk_live_passkey_value",
}


def test_credentials_are_stored_encrypted_and_shown_masked(app, api, tenant):
    saved = api.put("/v1/mpesa-credentials", json=CREDENTIALS)

    assert saved.status_code == 200
    body = saved.get_json()
    assert body["consumer_key"] == "****1234"
    assert body["consumer_secret"] == body["passkey"] == "********"
    assert (body["shortcode"], body["kind"], body["till_number"]) == ("600984", "till", "5551234")
    assert api.get("/v1/mpesa-credentials").get_json() == body
    with app.app_context():
        row = db.session.execute(
            text("SELECT row_to_json(c)::text FROM public.mpesa_credentials c")
        ).scalar()
    for secret in ("consumer_key", "consumer_secret", "passkey"):
        assert CREDENTIALS[secret] not in row


def test_till_needs_its_till_number(api):
    response = api.put("/v1/mpesa-credentials", json={**CREDENTIALS, "till_number": None})
    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "till_number"


def test_no_credentials_is_404(api):
    assert api.get("/v1/mpesa-credentials").status_code == 404


def test_once_live_only_a_live_key_may_change_them(app, api, tenant):
    assert api.put("/v1/mpesa-credentials", json=CREDENTIALS).status_code == 200
    with app.app_context():
        get_tenant(tenant.id).live_enabled = True
        db.session.commit()

    response = api.put("/v1/mpesa-credentials", json={**CREDENTIALS, "shortcode": "999999"})

    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "mode_mismatch"


def test_rotation_re_encrypts_with_the_newest_key(app, api, tenant):
    api.put("/v1/mpesa-credentials", json=CREDENTIALS)
    settings = app.extensions["lango.settings"]
    newest = Fernet.generate_key().decode()
    object.__setattr__(settings, "ENCRYPTION_KEYS", (newest, TEST_ENCRYPTION_KEY))
    try:
        with app.app_context():
            with unit_of_work():
                assert rotate_encryption() == 1
            token = db.session.execute(
                text("SELECT passkey_encrypted FROM public.mpesa_credentials")
            ).scalar()
            assert Fernet(newest).decrypt(token.encode()).decode() == CREDENTIALS["passkey"]
            # The old key can now be retired: the newest alone decrypts everything.
            object.__setattr__(settings, "ENCRYPTION_KEYS", (newest,))
            decrypted = live_credentials(tenant.id, "https://api.safaricom.co.ke")
            assert decrypted.consumer_secret == CREDENTIALS["consumer_secret"]
            assert decrypted.till_number == "5551234"
    finally:
        object.__setattr__(settings, "ENCRYPTION_KEYS", (TEST_ENCRYPTION_KEY,))
