"""Tenant-schema models: webhook endpoints, one delivery per (event, endpoint), and every
attempt made. The event itself is `core.events.Event`, written in the state change's own
transaction; deliveries are created in that same transaction, so none can be lost."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, DateTime, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.extensions import TenantBase
from core.sqltypes import text_enum


class WebhookEndpoint(TenantBase):
    __tablename__ = "webhook_endpoints"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    livemode: Mapped[bool] = mapped_column(Boolean)
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str | None] = mapped_column(String(255))
    # Event types to send; ["*"] means all.
    enabled_events: Mapped[list] = mapped_column(JSONB)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # Why it is disabled: "gone" (410), "failing" (5 days of failures), "manual".
    disabled_reason: Mapped[str | None] = mapped_column(String(40))
    # Fernet tokens (core.crypto) of `whsec_…` secrets; the previous one keeps signing
    # alongside the new one until previous_secret_expires_at.
    secret_encrypted: Mapped[str] = mapped_column(Text)
    previous_secret_encrypted: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Start of the current run of consecutive failures; None while healthy.
    failing_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for its next attempt
    DELIVERED = "delivered"
    FAILED = "failed"  # the schedule is exhausted (or the endpoint is gone); replay by hand


class WebhookDelivery(TenantBase):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "endpoint_id", name="uq_webhook_deliveries_event_id"),
        # The sweeper's question: which pending deliveries are due?
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where="status = 'pending'",
        ),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(40), index=True)
    endpoint_id: Mapped[str] = mapped_column(String(40), index=True)
    status: Mapped[DeliveryStatus] = mapped_column(text_enum(DeliveryStatus, "delivery_status"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class WebhookAttempt(TenantBase):
    __tablename__ = "webhook_attempts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(40), index=True)
    attempted_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status_code: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int] = mapped_column(Integer)
    # The first bytes of the receiver's answer, for the tenant's debugging.
    response_excerpt: Mapped[str | None] = mapped_column(String(500))
    error: Mapped[str | None] = mapped_column(String(255))
