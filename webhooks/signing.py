"""Standard Webhooks 1.0 signing: secrets, the `webhook-signature` header, delivery headers.

Signatures are computed by the `standardwebhooks` package itself (`Webhook.sign`), the same
code tenants run to verify them, so the two cannot drift apart. During secret rotation every
current secret signs and the signatures are sent space-separated; a receiver holding either
secret verifies.
"""

from __future__ import annotations

import base64
import secrets as random_secrets
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook

from core import crypto
from webhooks.models import WebhookEndpoint

SECRET_PREFIX = "whsec_"  # noqa: S105 -- the format prefix, not a secret
# Standard Webhooks allows 24-64 bytes; 32 matches an HMAC-SHA256 key's natural size.
SECRET_BYTES = 32


def new_secret() -> str:
    """A fresh signing secret: "whsec_" and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(random_secrets.token_bytes(SECRET_BYTES)).decode()


def signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The endpoint's `whsec_…` secrets to sign with now: the current one, plus the previous
    one while its rotation grace period lasts (receivers verify either)."""
    secrets = [crypto.decrypt(endpoint.secret_encrypted)]
    previous_valid = (
        endpoint.previous_secret_encrypted is not None
        and endpoint.previous_secret_expires_at is not None
        and endpoint.previous_secret_expires_at > now
    )
    if previous_valid:
        secrets.append(crypto.decrypt(endpoint.previous_secret_encrypted))
    return secrets


def signature_header(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: "v1,<base64 HMAC-SHA256>" per secret, space-separated.

    Raises ValueError if no secret is given or the body is not UTF-8 (the standard signs the
    body as text; our JSON bodies always are).
    """
    if not secrets:
        raise ValueError("at least one signing secret is needed")
    # Webhook.sign takes the body as str and encodes it back to UTF-8, so decoding here is
    # lossless for the bytes we send.
    text = body.decode("utf-8")
    signed_at = datetime.fromtimestamp(timestamp, tz=UTC)
    return " ".join(
        Webhook(secret).sign(msg_id=msg_id, timestamp=signed_at, data=text) for secret in secrets
    )


def headers(secrets: list[str], msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one delivery attempt of `body` (the event's JSON) for event `msg_id`."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, msg_id, timestamp, body),
        "content-type": "application/json",
    }
