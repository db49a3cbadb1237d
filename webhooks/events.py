"""Reading the event outbox for the Events API: events of one mode, each with its deliveries
and every attempt made; and redelivering by hand."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import func, select

from core.errors import NotFound
from core.events import Event
from core.extensions import db
from webhooks import service
from webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery


@dataclass(frozen=True)
class DeliveryDetail:
    """A delivery with its attempts, oldest first: serialises like the delivery plus
    `attempts_log`."""

    delivery: WebhookDelivery
    attempts_log: list[WebhookAttempt]

    def __getattr__(self, name: str):
        return getattr(self.delivery, name)


@dataclass(frozen=True)
class EventDetail:
    """An event with its deliveries: serialises like the event plus `deliveries`."""

    event: Event
    deliveries: list[DeliveryDetail]

    def __getattr__(self, name: str):
        return getattr(self.event, name)


def list_events_statement(
    *, livemode: bool, type: str | None = None, delivery_status: str | None = None
):
    """Events of this mode; `delivery_status` keeps those with at least one delivery in it."""
    statement = select(Event).where(Event.livemode == livemode)
    if type is not None:
        statement = statement.where(Event.type == type)
    if delivery_status is not None:
        statement = statement.where(
            select(WebhookDelivery.id)
            .where(
                WebhookDelivery.event_id == Event.id,
                WebhookDelivery.status == DeliveryStatus(delivery_status),
            )
            .exists()
        )
    return statement


def delivery_counts(event_ids) -> dict[str, dict[str, int]]:
    """How many deliveries of each event are in each status: {event_id: {status: n}}.
    Read-only: the dashboard's event list summarises deliveries with it."""
    ids = list(set(event_ids))
    if not ids:
        return {}
    rows = db.session.execute(
        select(WebhookDelivery.event_id, WebhookDelivery.status, func.count())
        .where(WebhookDelivery.event_id.in_(ids))
        .group_by(WebhookDelivery.event_id, WebhookDelivery.status)
    )
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    for event_id, status, count in rows:
        counts[event_id][DeliveryStatus(status).value] = count
    return dict(counts)


def get_event(event_id: str, *, livemode: bool) -> EventDetail:
    """The event of this mode with its deliveries and attempts, or NotFound."""
    event = db.session.scalars(
        select(Event).where(Event.id == event_id, Event.livemode == livemode)
    ).one_or_none()
    if event is None:
        raise NotFound(f"No such event: {event_id!r}.", param="id")
    deliveries = db.session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.event_id == event.id)
        .order_by(WebhookDelivery.id)
    ).all()
    return EventDetail(event, with_attempts(deliveries))


def with_attempts(deliveries: list[WebhookDelivery]) -> list[DeliveryDetail]:
    attempts: dict[str, list[WebhookAttempt]] = defaultdict(list)
    if deliveries:
        rows = db.session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_([d.id for d in deliveries]))
            .order_by(WebhookAttempt.attempted_at, WebhookAttempt.id)
        )
        for attempt in rows:
            attempts[attempt.delivery_id].append(attempt)
    return [DeliveryDetail(delivery, attempts[delivery.id]) for delivery in deliveries]


def redeliver_event(
    event_id: str, *, livemode: bool, endpoint_id: str | None = None
) -> list[DeliveryDetail]:
    """Send the event again, to every endpoint it was for or to one (which must be of the
    same mode): the deliveries restart as pending, their jobs enqueued once the caller
    commits. Raises NotFound."""
    get_event(event_id, livemode=livemode)
    # The service refuses an endpoint of another mode than the event's (NotFound).
    return with_attempts(service.redeliver(event_id, endpoint_id))
