"""The dispatcher: hands each recorded event to its subscribers, exactly once each.

Woken on commit: when a transaction that recorded events commits, one `dispatch_events` job
per tenant goes on the `events` queue (core.events keeps the ids on the session). The job
takes each due handling of those events in its own transaction:

    lock the handling row (SKIP LOCKED: another dispatcher has it) → run the subscriber →
    mark it handled → commit

so the subscriber's work and "handled" commit together, or neither does. A subscriber that
raises is rolled back alone, its handling pushed back with exponential backoff, and the
others go on. The queue is only a nudge: `sweep_outbox` (periodic) re-enqueues every tenant
whose handlings are due and were not taken, so a Redis flush, a lost job or a worker killed
mid-batch delays an event, never loses or repeats it.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
from flask import Flask, current_app
from rq import Queue
from sqlalchemy import event as orm_event
from sqlalchemy import func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from core.events import RECORDED_KEY, Event, EventHandling, subscribers
from core.extensions import db
from core.jobs import app_job, register_periodic
from core.tenancy import registered_tenant_ids, tenant_scope
from core.unit_of_work import tenant_unit_of_work, unit_of_work

logger = logging.getLogger("lango.outbox")

QUEUE_NAME = "events"
DISPATCH_JOB = "core.outbox.dispatch_events"
# A handling this far past due was not woken (its job lost): the sweeper enqueues it again.
SWEEP_GRACE_SECONDS = 5
SWEEP_INTERVAL_SECONDS = 15
# Retries of a failing subscriber: 2, 4, 8 … seconds, at most an hour apart, for ever (the
# lag shows in `lango queues`; a fixed subscriber catches up on its own).
MAX_BACKOFF_SECONDS = 3600
BATCH = 200


def init_app(app: Flask) -> None:
    register_periodic(
        app, sweep_outbox, queue=QUEUE_NAME, interval=SWEEP_INTERVAL_SECONDS, timeout=300
    )


# --- waking on commit ---------------------------------------------------------------------


@orm_event.listens_for(Session, "after_commit")
def _wake_on_commit(session: Session) -> None:
    recorded = session.info.pop(RECORDED_KEY, None)
    if not recorded:
        return
    by_tenant: dict[str, list[str]] = defaultdict(list)
    for tenant_id, event_id in recorded:
        by_tenant[tenant_id].append(event_id)
    for tenant_id, event_ids in by_tenant.items():
        enqueue_dispatch(tenant_id, event_ids)


@orm_event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(RECORDED_KEY, None)


def enqueue_dispatch(
    tenant_id: str, event_ids: list[str] | None = None, *, delay: float | None = None
) -> bool:
    """Nudge the dispatcher for a tenant (these events, or all that are due). Never raises
    for Redis: the handlings are the record, and the sweeper re-drives them."""
    queue = Queue(QUEUE_NAME, connection=current_app.extensions["lango.redis"])
    options = {"job_timeout": 300, "result_ttl": 0, "failure_ttl": 7 * 24 * 3600}
    try:
        if delay:
            queue.enqueue_in(
                timedelta(seconds=delay), DISPATCH_JOB, tenant_id, event_ids, **options
            )
        else:
            queue.enqueue(DISPATCH_JOB, tenant_id, event_ids, **options)
    except redis.RedisError as error:
        logger.warning(
            "could not wake the dispatcher; the sweeper will",
            extra={"tenant_id": tenant_id, "error": str(error)},
        )
        return False
    return True


# --- dispatching ----------------------------------------------------------------------------


@app_job
def dispatch_events(tenant_id: str, event_ids: list[str] | None = None) -> int:
    """Hand these events (or every due one) of the tenant to their subscribers; returns how
    many handlings this run completed."""
    return dispatch(tenant_id, event_ids)


def dispatch(tenant_id: str, event_ids: list[str] | None = None, now=None) -> int:
    """Each due handling in its own transaction; a failing subscriber never stops the rest."""
    with tenant_unit_of_work(tenant_id):
        due = db.session.execute(_due(event_ids, now or datetime.now(UTC)).limit(BATCH)).all()
    handled = 0
    for event_id, name in due:
        handled += _handle(tenant_id, event_id, name)
    if len(due) == BATCH:
        enqueue_dispatch(tenant_id)
    return handled


def _due(event_ids: list[str] | None, now: datetime):
    statement = (
        select(EventHandling.event_id, EventHandling.subscriber)
        .where(EventHandling.handled_at.is_(None), EventHandling.next_attempt_at <= now)
        .order_by(EventHandling.next_attempt_at, EventHandling.event_id)
    )
    if event_ids is not None:
        statement = statement.where(EventHandling.event_id.in_(event_ids))
    return statement


def _handle(tenant_id: str, event_id: str, name: str) -> int:
    subscriber = subscribers().get(name)
    with tenant_scope(tenant_id):
        try:
            with unit_of_work():
                handling = db.session.scalars(
                    select(EventHandling)
                    .where(
                        EventHandling.event_id == event_id,
                        EventHandling.subscriber == name,
                        EventHandling.handled_at.is_(None),
                    )
                    .with_for_update(skip_locked=True)
                ).one_or_none()
                if handling is None:  # handled meanwhile, or another dispatcher holds it
                    return 0
                if subscriber is None:
                    raise LookupError(f"no subscriber {name!r} is registered")
                subscriber.handler(db.session.get(Event, event_id))
                handling.attempts += 1
                handling.handled_at = datetime.now(UTC)
                handling.last_error = None
            return 1
        except Exception as error:
            logger.warning(
                "subscriber failed; will retry",
                exc_info=True,
                extra={"tenant_id": tenant_id, "event_id": event_id, "subscriber": name},
            )
            delay = _postpone(event_id, name, error)
    if delay is not None:
        enqueue_dispatch(tenant_id, [event_id], delay=delay)
    return 0


def _postpone(event_id: str, name: str, error: Exception) -> float | None:
    """Record the failure (the subscriber's own work was rolled back) and when to retry."""
    with unit_of_work():
        return _postpone_locked(event_id, name, error)


def _postpone_locked(event_id: str, name: str, error: Exception) -> float | None:
    handling = db.session.scalars(
        select(EventHandling)
        .where(
            EventHandling.event_id == event_id,
            EventHandling.subscriber == name,
            EventHandling.handled_at.is_(None),
        )
        .with_for_update(skip_locked=True)
    ).one_or_none()
    if handling is None:
        return None
    handling.attempts += 1
    delay = min(2.0**handling.attempts, MAX_BACKOFF_SECONDS) * random.uniform(0.8, 1.2)
    handling.next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay)
    handling.last_error = f"{type(error).__name__}: {error}"[:500]
    return delay


# --- the safety net -----------------------------------------------------------------------


@app_job
def sweep_outbox(now: datetime | None = None) -> int:
    """Every tenant with handlings more than SWEEP_GRACE_SECONDS past due gets a dispatch
    job (its wake-up was lost). One tenant's failure (a schema not yet migrated) doesn't stop
    the rest. Returns how many tenants were woken."""
    cutoff = (now or datetime.now(UTC)) - timedelta(seconds=SWEEP_GRACE_SECONDS)
    woken = 0
    for tenant_id in registered_tenant_ids():
        try:
            with tenant_unit_of_work(tenant_id):
                overdue = db.session.scalar(
                    select(EventHandling.event_id)
                    .where(
                        EventHandling.handled_at.is_(None),
                        EventHandling.next_attempt_at < cutoff,
                    )
                    .limit(1)
                )
        except DBAPIError:
            logger.exception("sweeping the outbox failed", extra={"tenant_id": tenant_id})
            continue
        if overdue is not None:
            woken += enqueue_dispatch(tenant_id)
    return woken


# --- lag, for `lango queues` and the admin console -----------------------------------------


@dataclass(frozen=True)
class SubscriberLag:
    subscriber: str
    pending: int
    # Pending handlings that failed at least once.
    retrying: int
    # Age of the oldest event still owed to the subscriber (None: nothing owed).
    oldest_seconds: float | None


def subscriber_lag(now: datetime | None = None) -> list[SubscriberLag]:
    """Per registered subscriber, across every tenant: what it still owes and how late."""
    now = now or datetime.now(UTC)
    pending: dict[str, int] = defaultdict(int)
    retrying: dict[str, int] = defaultdict(int)
    oldest: dict[str, datetime] = {}
    for tenant_id in registered_tenant_ids():
        try:
            with tenant_unit_of_work(tenant_id):
                rows = db.session.execute(
                    select(
                        EventHandling.subscriber,
                        func.count(),
                        func.count().filter(EventHandling.attempts > 0),
                        func.min(Event.created_at),
                    )
                    .join(Event, Event.id == EventHandling.event_id)
                    .where(EventHandling.handled_at.is_(None))
                    .group_by(EventHandling.subscriber)
                ).all()
        except DBAPIError:
            continue
        for name, count, failed, created in rows:
            pending[name] += count
            retrying[name] += failed
            oldest[name] = min(created, oldest.get(name, created))
    names = sorted(set(subscribers()) | set(pending))
    return [
        SubscriberLag(
            name,
            pending[name],
            retrying[name],
            (now - oldest[name]).total_seconds() if name in oldest else None,
        )
        for name in names
    ]
