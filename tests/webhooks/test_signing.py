"""Signed headers verify with the unchanged `standardwebhooks` package, as tenants use it."""

from __future__ import annotations

import base64
import json
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from webhooks import signing

BODY = json.dumps(
    {
        "id": "evt_01J0000000000000000000000",
        "type": "payment.succeeded",
        "created": "2026-05-09T07:35:25Z",
        "livemode": False,
        "data": {"object": {"id": "txn_1", "amount": 100, "payer": "Wanjiru Kamau ✓"}},
    }
).encode()
MSG_ID = "evt_01J0000000000000000000000"


def test_new_secret_is_whsec_and_32_random_bytes():
    first, second = signing.new_secret(), signing.new_secret()
    assert first.startswith("whsec_")
    assert len(base64.b64decode(first.removeprefix("whsec_"), validate=True)) == 32
    assert first != second


def test_headers_verify_with_standardwebhooks():
    secret = signing.new_secret()
    now = int(time.time())
    sent = signing.headers([secret], MSG_ID, now, BODY)

    assert sent["webhook-id"] == MSG_ID
    assert sent["webhook-timestamp"] == str(now)
    assert sent["content-type"] == "application/json"
    assert sent["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(BODY, sent) == json.loads(BODY)


def test_signature_is_hmac_sha256_of_id_timestamp_body():
    import hashlib
    import hmac

    secret = signing.new_secret()
    key = base64.b64decode(secret.removeprefix("whsec_"))
    expected = hmac.new(key, f"{MSG_ID}.1700000000.".encode() + BODY, hashlib.sha256).digest()
    header = signing.signature_header([secret], MSG_ID, 1_700_000_000, BODY)
    assert header == "v1," + base64.b64encode(expected).decode()


def test_both_secrets_verify_during_rotation():
    old, new = signing.new_secret(), signing.new_secret()
    sent = signing.headers([new, old], MSG_ID, int(time.time()), BODY)

    assert len(sent["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, sent)
    Webhook(new).verify(BODY, sent)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(BODY, sent)


def test_tampered_body_fails_verification():
    secret = signing.new_secret()
    sent = signing.headers([secret], MSG_ID, int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY.replace(b"100", b"900"), sent)


def test_other_event_id_fails_verification():
    secret = signing.new_secret()
    sent = signing.headers([secret], MSG_ID, int(time.time()), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, {**sent, "webhook-id": "evt_other"})


def test_old_timestamp_fails_verification():
    secret = signing.new_secret()
    sent = signing.headers([secret], MSG_ID, int(time.time()) - 600, BODY)
    with pytest.raises(WebhookVerificationError, match="too old"):
        Webhook(secret).verify(BODY, sent)


def test_no_secret_is_refused():
    with pytest.raises(ValueError):
        signing.signature_header([], MSG_ID, int(time.time()), BODY)
