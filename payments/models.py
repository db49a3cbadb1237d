"""Tenant-schema models: STK pushes and the raw callbacks Daraja sent about them."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Index, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.extensions import TenantBase
from core.sqltypes import text_enum


class PushStatus(enum.StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self is not PushStatus.PENDING


class StkPush(TenantBase):
    __tablename__ = "stk_pushes"
    __table_args__ = (
        # Reconciliation reads only pending pushes; a partial index keeps that cheap.
        Index("ix_stk_pushes_pending", "created_at", postgresql_where="status = 'pending'"),
        # Lists read one mode, newest id first, whichever mode is the rare one.
        Index("ix_stk_pushes_livemode_id", "livemode", "id"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    livemode: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[PushStatus] = mapped_column(
        text_enum(PushStatus, "push_status"),
        index=True,
    )
    phone_number: Mapped[str] = mapped_column(String(12), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    account_reference: Mapped[str] = mapped_column(String(12))
    description: Mapped[str] = mapped_column(String(13))
    metadata_: Mapped[dict] = mapped_column("metadata", JSONB, default=dict)
    # SHA-256 of the callback URL's secret part: the URL itself is never stored.
    callback_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    merchant_request_id: Mapped[str | None] = mapped_column(String(64))
    checkout_request_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    mpesa_receipt_number: Mapped[str | None] = mapped_column(String(20))
    result_code: Mapped[str | None] = mapped_column(String(20))
    result_description: Mapped[str | None] = mapped_column(String(255))
    transaction_date: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Why a report from M-Pesa was held, not applied: a callback that disagreed with the push
    # (amount, phone), or a success reported after M-Pesa itself said failed or cancelled.
    flagged_reason: Mapped[str | None] = mapped_column(String(255))
    # Set when Lango (not M-Pesa) expired the push, and kept if M-Pesa then reports it paid:
    # a succeeded push with an expired_at succeeded late.
    expired_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_queried_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class CallbackOutcome(enum.StrEnum):
    RECEIVED = "received"  # stored, not yet applied
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # the push was already final
    # Disagreed with the push (amount, phone, a success after M-Pesa's own failure): the
    # push is flagged, the callback not applied.
    MISMATCH = "mismatch"
    UNPARSEABLE = "unparseable"  # not Daraja's shape: reconciliation asks Daraja
    REFUSED = "refused"  # a live callback from outside MPESA_CALLBACK_ALLOWED_IPS


class MpesaCallback(TenantBase):
    """Every callback body exactly as received, stored before it is parsed."""

    __tablename__ = "mpesa_callbacks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    stk_push_id: Mapped[str] = mapped_column(String(40), index=True)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    source_ip: Mapped[str | None] = mapped_column(String(45))
    body: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(20), default=CallbackOutcome.RECEIVED.value)
    detail: Mapped[str | None] = mapped_column(String(255))
