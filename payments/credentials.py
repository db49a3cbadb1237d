"""A tenant's live Daraja credentials (public schema), encrypted at rest.

Consumer key, consumer secret and passkey are stored only as Fernet tokens; the API shows
them masked. Shortcode, kind and till number are not secret.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, ForeignKey, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from compliance.audit import AuditAction, record
from core import crypto
from core.errors import ValidationFailed
from core.extensions import db
from payments.daraja import DarajaCredentials


class MpesaCredentials(db.Model):
    __tablename__ = "mpesa_credentials"
    __table_args__ = {"schema": "public"}

    tenant_id: Mapped[str] = mapped_column(ForeignKey("public.tenants.id"), primary_key=True)
    shortcode: Mapped[str] = mapped_column(String(7))
    kind: Mapped[str] = mapped_column(String(10))  # paybill | till
    till_number: Mapped[str | None] = mapped_column(String(7))
    consumer_key_encrypted: Mapped[str] = mapped_column(Text)
    consumer_secret_encrypted: Mapped[str] = mapped_column(Text)
    passkey_encrypted: Mapped[str] = mapped_column(Text)
    consumer_key_last4: Mapped[str] = mapped_column(String(4))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


def save_credentials(
    tenant_id: str,
    *,
    shortcode: str,
    kind: str,
    till_number: str | None,
    consumer_key: str,
    consumer_secret: str,
    passkey: str,
) -> MpesaCredentials:
    """Create or replace the tenant's live credentials (encrypted), audited; flushed."""
    row = db.session.get(MpesaCredentials, tenant_id)
    before = _audited_state(row) if row is not None else None
    row = row or MpesaCredentials(tenant_id=tenant_id)
    row.shortcode = shortcode
    row.kind = kind
    row.till_number = till_number if kind == "till" else None
    row.consumer_key_encrypted = crypto.encrypt(consumer_key)
    row.consumer_secret_encrypted = crypto.encrypt(consumer_secret)
    row.passkey_encrypted = crypto.encrypt(passkey)
    row.consumer_key_last4 = consumer_key[-4:]
    row.updated_at = datetime.now(UTC)
    db.session.add(row)
    record(
        AuditAction.MPESA_CREDENTIALS_CHANGED,
        target_type="mpesa_credentials",
        target_id=tenant_id,
        tenant_id=tenant_id,
        diff={"before": before, "after": _audited_state(row)},
    )
    db.session.flush()
    return row


SECRET_FIELDS = ("consumer_key", "consumer_secret", "passkey")


def change_credentials(
    tenant_id: str,
    *,
    shortcode: str,
    kind: str,
    till_number: str | None,
    consumer_key: str | None = None,
    consumer_secret: str | None = None,
    passkey: str | None = None,
) -> MpesaCredentials:
    """Like save_credentials, for write-only forms: a secret left out (None or empty) keeps
    the stored one. The first save needs all three; ValidationFailed names the missing ones
    (in `errors`, by field). Audited like save_credentials."""
    given = {"consumer_key": consumer_key, "consumer_secret": consumer_secret, "passkey": passkey}
    missing = [name for name in SECRET_FIELDS if not given[name]]
    row = get_credentials(tenant_id)
    if row is None and missing:
        raise ValidationFailed(
            "The first save needs the consumer key, consumer secret and passkey.",
            param=missing[0],
            errors={name: ["Required for the first save."] for name in missing},
        )
    if row is not None:
        stored = {
            "consumer_key": row.consumer_key_encrypted,
            "consumer_secret": row.consumer_secret_encrypted,
            "passkey": row.passkey_encrypted,
        }
        for name in missing:
            given[name] = crypto.decrypt(stored[name])
    return save_credentials(
        tenant_id, shortcode=shortcode, kind=kind, till_number=till_number, **given
    )


def _audited_state(row: MpesaCredentials) -> dict:
    """What an audit diff shows of the credentials: never a secret, only its last digits."""
    return {
        "shortcode": row.shortcode,
        "kind": row.kind,
        "till_number": row.till_number,
        "consumer_key_last4": row.consumer_key_last4,
    }


def get_credentials(tenant_id: str) -> MpesaCredentials | None:
    return db.session.get(MpesaCredentials, tenant_id)


def live_credentials(tenant_id: str, base_url: str) -> DarajaCredentials | None:
    row = db.session.scalar(select(MpesaCredentials).where(MpesaCredentials.tenant_id == tenant_id))
    if row is None:
        return None
    return DarajaCredentials(
        base_url=base_url,
        consumer_key=crypto.decrypt(row.consumer_key_encrypted),
        consumer_secret=crypto.decrypt(row.consumer_secret_encrypted),
        shortcode=row.shortcode,
        passkey=crypto.decrypt(row.passkey_encrypted),
        kind=row.kind,
        till_number=row.till_number,
    )


def rotate_encryption() -> int:
    """Re-encrypt every stored credential with the newest key; returns rows rotated."""
    rows = db.session.scalars(select(MpesaCredentials)).all()
    for row in rows:
        row.consumer_key_encrypted = crypto.rotate(row.consumer_key_encrypted)
        row.consumer_secret_encrypted = crypto.rotate(row.consumer_secret_encrypted)
        row.passkey_encrypted = crypto.rotate(row.passkey_encrypted)
    return len(rows)
