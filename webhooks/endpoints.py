"""Webhook endpoints (tenant schema): create, change, disable, rotate their signing secrets."""

from __future__ import annotations

from datetime import datetime

from core import crypto
from webhooks.models import WebhookEndpoint


def signing_secrets(endpoint: WebhookEndpoint, now: datetime) -> list[str]:
    """The `whsec_…` secrets to sign with now: the current one, plus the previous one while
    its rotation grace period lasts (receivers verify either)."""
    secrets = [crypto.decrypt(endpoint.secret_encrypted)]
    previous_valid = (
        endpoint.previous_secret_encrypted is not None
        and endpoint.previous_secret_expires_at is not None
        and endpoint.previous_secret_expires_at > now
    )
    if previous_valid:
        secrets.append(crypto.decrypt(endpoint.previous_secret_encrypted))
    return secrets
