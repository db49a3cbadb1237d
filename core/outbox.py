"""The dispatcher: hands each recorded event to its subscribers, exactly once each.

Woken on commit: when a transaction that recorded events commits, the tenant gets a
`dispatch_events` job on the `events` queue — at most one waiting at a time (a Redis flag
coalesces the wake-ups of a busy tenant: one job then takes everything due). The job takes
the tenant's due events one at a time, each in one transaction:

    lock the event's due handlings (SKIP LOCKED: another dispatcher has them) →
    run each subscriber in a savepoint → mark it handled, or note its failure → commit

so a subscriber's work and "handled" commit together, or neither does. A subscriber that
raises is rolled back to its savepoint alone, its handling pushed back with exponential
backoff, and the others go on. The queue is only a nudge: `sweep_outbox` (periodic)
re-enqueues every tenant whose handlings are due and were not taken, so a Redis flush, a lost
job or a worker killed mid-batch delays an event, never loses or repeats it.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from contextlib import suppress
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
# Events one job dispatches before it hands the rest to a fresh job (others' turn).
BATCH = 500
# Set while a tenant has a dispatch job waiting; it expires in case that job is lost.
_WAKE_FLAG = "lango:outbox:wake:{}"
_WAKE_FLAG_SECONDS = 60


def init_app(app: Flask) -> None:
    register_periodic(
        app, sweep_outbox, queue=QUEUE_NAME, interval=SWEEP_INTERVAL_SECONDS, timeout=300
    )


# --- waking on commit ---------------------------------------------------------------------


@orm_event.listens_for(Session, "after_commit")
def _wake_on_commit(session: Session) -> None:
    recorded = session.info.pop(RECORDED_KEY, None)
    for tenant_id in dict.fromkeys(tenant_id for tenant_id, _ in recorded or ()):
        enqueue_dispatch(tenant_id, coalesce=True)


@orm_event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(RECORDED_KEY, None)


def enqueue_dispatch(tenant_id: str, *, delay: float | None = None, coalesce: bool = False) -> bool:
    """Nudge the dispatcher for a tenant. `coalesce`: not when a job is already waiting for
    it (that job will see this tenant's new events too). Never raises for Redis: the
    handlings are the record, and the sweeper re-drives them."""
    connection = current_app.extensions["lango.redis"]
    flag = _WAKE_FLAG.format(tenant_id)
    try:
        if coalesce and not connection.set(flag, 1, nx=True, ex=_WAKE_FLAG_SECONDS):
            return False
        queue = Queue(QUEUE_NAME, connection=connection)
        options = {"job_timeout": 300, "result_ttl": 0, "failure_ttl": 7 * 24 * 3600}
        if delay:
            queue.enqueue_in(timedelta(seconds=delay), DISPATCH_JOB, tenant_id, **options)
        else:
            queue.enqueue(DISPATCH_JOB, tenant_id, **options)
    except redis.RedisError as error:
        logger.warning(
            "could not wake the dispatcher; the sweeper will",
            extra={"tenant_id": tenant_id, "error": str(error)},
        )
        return False
    return True


# --- dispatching ----------------------------------------------------------------------------


@app_job
def dispatch_events(tenant_id: str) -> int:
    """Hand every due event of the tenant to its subscribers; returns how many handlings
    this run completed."""
    # Taken down first: an event committed from now on wakes a job of its own.
    with suppress(redis.RedisError):  # else the flag lapses on its own
        current_app.extensions["lango.redis"].delete(_WAKE_FLAG.format(tenant_id))
    return dispatch(tenant_id)


def dispatch(tenant_id: str, *, now: datetime | None = None) -> int:
    """The tenant's due events, oldest due first, each in its own transaction; a failing
    subscriber never stops the rest. `now` is for tests."""
    handled = 0
    retry_in: float | None = None
    with tenant_scope(tenant_id):
        for _ in range(BATCH):
            with unit_of_work():
                due = _lock_next_event(now or datetime.now(UTC))
                if not due:
                    break
                event = db.session.get(Event, due[0].event_id)
                for handling in due:
                    delay = _hand_over(event, handling)
                    if delay is None:
                        handled += 1
                    else:
                        retry_in = delay if retry_in is None else min(retry_in, delay)
        else:
            enqueue_dispatch(tenant_id)  # more are due: a fresh job, after the others' turn
    if retry_in is not None:
        enqueue_dispatch(tenant_id, delay=retry_in)
    return handled


def _lock_next_event(now: datetime) -> list[EventHandling]:
    """The due handlings of the event due first that no other dispatcher holds, locked."""
    first = db.session.scalar(
        select(EventHandling.event_id)
        .where(EventHandling.handled_at.is_(None), EventHandling.next_attempt_at <= now)
        .order_by(EventHandling.next_attempt_at, EventHandling.event_id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if first is None:
        return []
    return list(
        db.session.scalars(
            select(EventHandling)
            .where(
                EventHandling.event_id == first,
                EventHandling.handled_at.is_(None),
                EventHandling.next_attempt_at <= now,
            )
            .order_by(EventHandling.subscriber)
            .with_for_update(skip_locked=True)
        )
    )


def _hand_over(event: Event, handling: EventHandling) -> float | None:
    """Run one subscriber in a savepoint and record the outcome on its handling; returns
    None when handled, else the seconds until it is retried."""
    handling.attempts += 1
    try:
        subscriber = subscribers().get(handling.subscriber)
        if subscriber is None:
            raise LookupError(f"no subscriber {handling.subscriber!r} is registered")
        with db.session.begin_nested():
            subscriber.handler(event)
    except Exception as error:
        logger.warning(
            "subscriber failed; will retry",
            exc_info=True,
            extra={"event_id": event.id, "subscriber": handling.subscriber},
        )
        delay = min(2.0**handling.attempts, MAX_BACKOFF_SECONDS) * random.uniform(0.8, 1.2)
        handling.next_attempt_at = datetime.now(UTC) + timedelta(seconds=delay)
        handling.last_error = f"{type(error).__name__}: {error}"[:500]
        return delay
    handling.handled_at = datetime.now(UTC)
    handling.last_error = None
    return None


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
