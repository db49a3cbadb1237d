"""The tenant's event outbox (tenant schema): what happened, and who still has to hear of it.

A domain records an event in the same transaction as the state change it describes
(`record_event`), and nothing else runs in that transaction: the event and one handling row
per interested subscriber are inserted, that is all. Subscribers are registered by packages
in their `init_app` (`subscribe`); the dispatcher (core.outbox) hands each event to each of
them later, outside the recording transaction, exactly once as recorded in
`event_handlings`.
The database, not Redis, is the record of what is owed, so a Redis flush or a killed worker
loses nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from flask import Flask, current_app
from sqlalchemy import Boolean, DateTime, ForeignKey, Integer, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.extensions import TenantBase, db
from core.ids import new_id
from core.tenancy import require_tenant


class EventType(StrEnum):
    """Every event Lango records: the catalogue webhook endpoints subscribe to."""

    PAYMENT_SUCCEEDED = "payment.succeeded"
    PAYMENT_FAILED = "payment.failed"
    PAYMENT_CANCELLED = "payment.cancelled"
    PAYMENT_EXPIRED = "payment.expired"
    PAYMENT_FLAGGED = "payment.flagged"
    WEBHOOK_ENDPOINT_DISABLED = "webhook_endpoint.disabled"
    PING = "ping"


class Event(TenantBase):
    __tablename__ = "events"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    type: Mapped[str] = mapped_column(String(60), index=True)
    livemode: Mapped[bool] = mapped_column(Boolean)
    data: Mapped[dict] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class EventHandling(TenantBase):
    """One subscriber's duty towards one event: done when `handled_at` is set, in the same
    transaction as the subscriber's own work."""

    __tablename__ = "event_handlings"

    event_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("events.id", ondelete="CASCADE"), primary_key=True
    )
    subscriber: Mapped[str] = mapped_column(String(60), primary_key=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_error: Mapped[str | None] = mapped_column(Text)
    handled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True)
class Subscriber:
    name: str
    handler: Callable[[Event], None]
    # None: every type.
    types: frozenset[EventType] | None

    def wants(self, type_: str) -> bool:
        return self.types is None or type_ in self.types


_SUBSCRIBERS = "lango.subscribers"
# The events this session's transaction recorded: core.outbox wakes the dispatcher for them
# once it commits.
RECORDED_KEY = "lango.events.recorded"


def subscribe(
    app: Flask,
    name: str,
    handler: Callable[[Event], None],
    *,
    types: Iterable[EventType] | None = None,
) -> None:
    """Register `handler(event)` for events of `types` (all when None), under a stable
    `name` (it is stored with each handling). The handler runs in the event's tenant scope,
    in a savepoint of the dispatcher's transaction that marks it handled (so its work and
    "handled" commit together); it must not commit, and it raises to be retried (its work
    is then rolled back alone). Effects outside the database (Redis, queues) may repeat
    after a crash: make them idempotent."""
    subscribers: dict[str, Subscriber] = app.extensions.setdefault(_SUBSCRIBERS, {})
    if name in subscribers:
        raise ValueError(f"subscriber {name!r} is registered twice")
    subscribers[name] = Subscriber(name, handler, None if types is None else frozenset(types))


def subscribers() -> dict[str, Subscriber]:
    return current_app.extensions.get(_SUBSCRIBERS, {})


def record_event(type_: EventType, data: dict, *, livemode: bool) -> Event:
    """Add an event to the current tenant's outbox, with a handling for each subscriber that
    wants it, in the caller's transaction (not committed here: it commits or rolls back with
    the state change it describes). The dispatcher is woken once that transaction commits."""
    binding = require_tenant()
    now = datetime.now(UTC)
    event = Event(id=new_id("evt"), type=EventType(type_), livemode=livemode, data=data)
    event.created_at = now
    db.session.add(event)
    for subscriber in subscribers().values():
        if subscriber.wants(event.type):
            db.session.add(
                EventHandling(
                    event_id=event.id, subscriber=subscriber.name, attempts=0, next_attempt_at=now
                )
            )
    db.session.info.setdefault(RECORDED_KEY, []).append((binding.tenant_id, event.id))
    return event
