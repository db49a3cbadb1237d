"""The audit chain's HMAC keys: kept in configuration, never in the database.

Each entry's `hash` is an HMAC-SHA256 under one of these keys, and names it by `key_id`, so
a database superuser who edits an entry cannot recompute a hash that verifies. Keys come from
AUDIT_KEYS (newest first: the first signs, the others still verify what they signed) and,
always last, one derived from SECRET_KEY, so a deployment is keyed without new settings and
entries signed before AUDIT_KEYS was set keep verifying.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from flask import current_app

# Domain separation: the same SECRET_KEY also signs session cookies; this label makes the
# audit key a different key.
_DERIVATION_LABEL = b"lango.audit-chain.v1"


@dataclass(frozen=True)
class AuditKey:
    id: str
    secret: bytes = b""

    def sign(self, message: str) -> str:
        return hmac.new(self.secret, message.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class AuditKeyRing:
    signing: AuditKey
    by_id: dict[str, AuditKey]

    def get(self, key_id: str) -> AuditKey | None:
        return self.by_id.get(key_id)


def derive_key(material: str) -> AuditKey:
    secret = hmac.new(material.encode(), _DERIVATION_LABEL, hashlib.sha256).digest()
    # The id names the key without revealing it: a hash of the derived secret, shortened.
    key_id = hashlib.sha256(b"lango.audit-key-id\0" + secret).hexdigest()[:16]
    return AuditKey(key_id, secret)


def key_ring(audit_keys: tuple[str, ...], secret_key: str) -> AuditKeyRing:
    keys = [derive_key(material) for material in (*audit_keys, secret_key)]
    return AuditKeyRing(signing=keys[0], by_id={key.id: key for key in reversed(keys)})


def current_key_ring() -> AuditKeyRing:
    settings = current_app.extensions["lango.settings"]
    return key_ring(settings.AUDIT_KEYS, settings.SECRET_KEY)
