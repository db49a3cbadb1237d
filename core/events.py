"""The tenant's event outbox (tenant schema).

A domain event is written here in the same transaction as the state change it describes, so
the database, not Redis, is the record of what happened; delivery (webhooks) reads from here
and can always be re-driven after a Redis flush or a killed worker.
"""

from __future__ import annotations

from datetime import UTC, datetime

from blinker import Namespace
from sqlalchemy import Boolean, DateTime, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.extensions import TenantBase, db
from core.ids import new_id
from core.tenancy import require_tenant


class Event(TenantBase):
    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(60), index=True)
    livemode: Mapped[bool] = mapped_column(Boolean)
    data: Mapped[dict] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


def record_event(type_: str, data: dict, *, livemode: bool) -> Event:
    """Add an event to the current tenant's outbox in the caller's transaction (not committed
    here: it commits or rolls back with the state change it describes)."""
    require_tenant()
    event = Event(
        id=new_id("evt"), type=type_, livemode=livemode, data=data, created_at=datetime.now(UTC)
    )
    db.session.add(event)
    event_recorded.send(event, tenant_id=require_tenant().tenant_id)
    return event


# Sent inside the recording transaction: webhooks creates the event's deliveries there, so
# an event and the duty to deliver it commit together.
event_recorded = Namespace().signal("event-recorded")
