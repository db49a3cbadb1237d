"""Webhook delivery: fan an event out to its endpoints, send each delivery, retry, replay.

The database is the record: `fan_out`, an outbox subscriber (core.events), creates an
event's delivery rows in the dispatcher's transaction for that event, which also marks the
event handled by webhooks, so each event is fanned out exactly once. An RQ job is only a
nudge, enqueued after the transaction that made its row commits. A job that vanishes (Redis
flushed, worker killed) is replaced by the sweeper (`sweep_due`), and every job re-checks
its row under a lock before sending, so duplicates are harmless: delivery is at least once,
and receivers dedupe on `webhook-id` (the event id).

One send is three short steps, none holding a transaction across the HTTP call:
claim (lock the row, take a slot of the endpoint's concurrency, push `next_attempt_at` past
the request's timeout so nothing re-sends it while in flight; a checkpoint commits it) →
send → record (committed by the job's unit of work).

Nothing here commits otherwise: the caller's unit of work (request, job) does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import redis
import requests
from flask import current_app
from rq import Queue
from sqlalchemy import event as orm_event
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.errors import NotFound
from core.events import Event, EventType, record_event
from core.extensions import db
from core.ids import new_id
from core.slots import Slot, claim_slot
from core.tenancy import require_tenant
from core.unit_of_work import Checkpoint, checkpoint
from webhooks import signing, ssrf
from webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint

logger = logging.getLogger("lango.webhooks")

QUEUE_NAME = "webhooks"
DELIVER_JOB = "webhooks.jobs.deliver_webhook"
# A pending delivery this far past due has lost its job; the sweeper enqueues it again.
SWEEP_GRACE_SECONDS = 30
# How long a claimed delivery counts as in flight (claim → record), in request timeouts:
# connecting and reading each get one, and nothing re-sends it before this has passed.
IN_FLIGHT_TIMEOUTS = 2
# When an endpoint already has its fill of requests in flight, try again this much later.
BUSY_RETRY_SECONDS = 2.0
# A job may run a little before its row's next_attempt_at (clock steps, scheduler polling).
DUE_TOLERANCE_SECONDS = 1.5
RESPONSE_EXCERPT_BYTES = 500
# The name `fan_out` is registered under (core.events.subscribe); stored with each handling.
SUBSCRIBER = "webhooks.fan_out"
# A ping goes to the one endpoint it was sent to (send_ping), never through fan_out.
FANNED_OUT_TYPES = frozenset(t for t in EventType if t is not EventType.PING)
# How far back re-enabling an endpoint replays what it missed.
REPLAY_WINDOW = timedelta(days=30)

_AFTER_COMMIT_KEY = "lango.webhooks.enqueue"


# --- the event as receivers (and GET /v1/events/{id}) see it ---------------------------------


def event_payload(event: Event) -> dict:
    """The event as the API shows it; the webhook body is exactly this."""
    return {
        "id": event.id,
        "object": "event",
        "type": event.type,
        "created": event.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "livemode": event.livemode,
        "data": event.data,
    }


def event_body(event: Event) -> bytes:
    """Serialised once, deterministically: the bytes that are signed are the bytes sent."""
    return json.dumps(
        event_payload(event), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


def endpoint_wants(endpoint: WebhookEndpoint, event_type: str) -> bool:
    return "*" in endpoint.enabled_events or event_type in endpoint.enabled_events


# --- fan-out: deliveries in the dispatcher's transaction, jobs after it commits ---------------


def fan_out(event: Event) -> list[WebhookDelivery]:
    """Outbox subscriber (in the event's tenant scope, in a transaction of its own that the
    dispatcher commits with the event marked handled): one pending delivery per enabled
    endpoint of the event's mode that wants its type. The jobs are enqueued only once that
    transaction commits (none if it rolls back)."""
    if event.type == EventType.PING:  # a ping goes to one endpoint only (send_ping)
        return []
    tenant_id = require_tenant().tenant_id
    endpoints = db.session.scalars(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.enabled.is_(True))
        .where(WebhookEndpoint.livemode.is_(event.livemode))
        .order_by(WebhookEndpoint.id)
    ).all()
    now = datetime.now(UTC)
    return [
        _new_delivery(tenant_id, event.id, endpoint.id, now)
        for endpoint in endpoints
        if endpoint_wants(endpoint, event.type)
    ]


def _new_delivery(
    tenant_id: str, event_id: str, endpoint_id: str, now: datetime
) -> WebhookDelivery:
    delivery = WebhookDelivery(
        id=new_id("whd"),
        event_id=event_id,
        endpoint_id=endpoint_id,
        status=DeliveryStatus.PENDING,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )
    db.session.add(delivery)
    enqueue_after_commit(tenant_id, delivery.id)
    return delivery


def enqueue_after_commit(tenant_id: str, delivery_id: str, *, delay: float | None = None) -> None:
    """Enqueue the delivery's job (in `delay` seconds) once the current transaction commits:
    before that, the job could run and not find the row, or not see its new schedule."""
    db.session.info.setdefault(_AFTER_COMMIT_KEY, []).append((tenant_id, delivery_id, delay))


@orm_event.listens_for(Session, "after_commit")
def _enqueue_committed(session: Session) -> None:
    items = session.info.pop(_AFTER_COMMIT_KEY, None) or []
    now = [(tenant_id, delivery_id) for tenant_id, delivery_id, delay in items if not delay]
    if now:
        enqueue(now)
    for tenant_id, delivery_id, delay in items:
        if delay:
            enqueue([(tenant_id, delivery_id)], delay=delay)


@orm_event.listens_for(Session, "after_rollback")
def _forget_uncommitted(session: Session) -> None:
    session.info.pop(_AFTER_COMMIT_KEY, None)


def enqueue(items: list[tuple[str, str]], *, delay: float | None = None) -> int:
    """Put delivery jobs on the `webhooks` queue (in `delay` seconds: RQ's scheduler).
    Never raises for Redis: the rows are the record, and the sweeper re-drives them."""
    settings = current_app.extensions["lango.settings"]
    queue = Queue(QUEUE_NAME, connection=current_app.extensions["lango.redis"])
    options = {
        "job_timeout": settings.WEBHOOK_TIMEOUT_SECONDS * IN_FLIGHT_TIMEOUTS + 30,
        "result_ttl": 0,
        "failure_ttl": 7 * 24 * 3600,
    }
    enqueued = 0
    for tenant_id, delivery_id in items:
        try:
            if delay:
                queue.enqueue_in(
                    timedelta(seconds=delay), DELIVER_JOB, tenant_id, delivery_id, **options
                )
            else:
                queue.enqueue(DELIVER_JOB, tenant_id, delivery_id, **options)
            enqueued += 1
        except redis.RedisError as error:
            logger.warning(
                "could not enqueue webhook delivery; the sweeper will",
                extra={"tenant_id": tenant_id, "delivery_id": delivery_id, "error": str(error)},
            )
    return enqueued


# --- delivery ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Claim:
    tenant_id: str
    delivery_id: str
    event_id: str
    endpoint_id: str
    attempt: int
    url: str
    livemode: bool
    body: bytes
    headers: dict
    slot: Slot


@dataclass(frozen=True)
class _Response:
    status_code: int | None
    duration_ms: int
    excerpt: str | None
    error: str | None
    retry_after: int | None


def deliver(tenant_id: str, delivery_id: str) -> str:
    """Make the delivery's next attempt, if it is still pending and due and nobody else is
    making it (the caller is in the tenant's scope, and commits the outcome: the claim is
    committed here, before the request is sent). Idempotent: a duplicate or stale job
    returns "skipped". Returns the outcome: delivered, retrying, failed, busy, skipped."""
    claim = _claim(tenant_id, delivery_id)
    if isinstance(claim, str):
        return claim
    try:
        response = _send(claim)
    finally:
        _release_slot(claim.slot)
    return _record(claim, response)


def _claim(tenant_id: str, delivery_id: str) -> _Claim | str:
    settings = current_app.extensions["lango.settings"]
    now = datetime.now(UTC)
    delivery = db.session.scalar(
        select(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id)
        .with_for_update(skip_locked=True)
    )
    due = now + timedelta(seconds=DUE_TOLERANCE_SECONDS)
    if (
        delivery is None
        or delivery.status != DeliveryStatus.PENDING
        or (delivery.next_attempt_at is not None and delivery.next_attempt_at > due)
    ):
        return "skipped"
    endpoint = db.session.get(WebhookEndpoint, delivery.endpoint_id)
    event = db.session.get(Event, delivery.event_id)
    if endpoint is None or not endpoint.enabled or event is None:
        # Kept as failed: re-enabling the endpoint redelivers it (redeliver_missed).
        delivery.status = DeliveryStatus.FAILED
        delivery.next_attempt_at = None
        db.session.flush()
        return "failed"
    in_flight = settings.WEBHOOK_TIMEOUT_SECONDS * IN_FLIGHT_TIMEOUTS
    # An endpoint that is failing (often: hanging until the timeout) gets one slot, so it
    # can hold at most one worker while healthy endpoints keep the rest.
    limit = 1 if endpoint.failing_since is not None else settings.WEBHOOK_ENDPOINT_CONCURRENCY
    slot = _acquire_slot(tenant_id, endpoint.id, in_flight, limit)
    if slot is None:
        # The endpoint is full: come back shortly rather than wait here holding a worker.
        delay = BUSY_RETRY_SECONDS * random.uniform(1.0, 1.5)
        delivery.next_attempt_at = now + timedelta(seconds=delay)
        db.session.flush()
        enqueue_after_commit(tenant_id, delivery_id, delay=delay)
        return "busy"
    try:
        body = event_body(event)
        headers = signing.headers(
            signing.signing_secrets(endpoint, now), event.id, int(now.timestamp()), body
        )
        delivery.attempts += 1
        delivery.last_attempt_at = now
        delivery.next_attempt_at = now + timedelta(seconds=in_flight)
        claim = _Claim(
            tenant_id=tenant_id,
            delivery_id=delivery.id,
            event_id=event.id,
            endpoint_id=endpoint.id,
            attempt=delivery.attempts,
            url=endpoint.url,
            livemode=endpoint.livemode,
            body=body,
            headers=headers,
            slot=slot,
        )
        # Durable before the request goes out, and no transaction (nor row lock) is held
        # while it is in flight: the in-flight `next_attempt_at` keeps others off it.
        checkpoint(Checkpoint.DELIVERY_CLAIM)
    except BaseException:
        _release_slot(slot)
        raise
    return claim


def _send(claim: _Claim) -> _Response:
    settings = current_app.extensions["lango.settings"]
    started = time.monotonic()
    status_code = excerpt = error = retry_after = None
    try:
        response = ssrf.post(
            claim.url,
            body=claim.body,
            headers=claim.headers,
            timeout=settings.WEBHOOK_TIMEOUT_SECONDS,
            allow_private=settings.WEBHOOK_ALLOW_PRIVATE_TARGETS,
            livemode=claim.livemode,
        )
        status_code = response.status_code
        raw = response.content[:RESPONSE_EXCERPT_BYTES]
        excerpt = raw.decode("utf-8", errors="replace").replace("\x00", "")[:500] or None
        retry_after = _retry_after_seconds(response.headers.get("Retry-After"))
    except ssrf.UnsafeTarget as refused:
        error = f"unsafe target: {refused}"
    except requests.Timeout:
        error = f"timeout after {settings.WEBHOOK_TIMEOUT_SECONDS} s"
    except requests.RequestException as failure:
        error = f"connection error: {type(failure).__name__}"
    duration_ms = int((time.monotonic() - started) * 1000)
    return _Response(status_code, duration_ms, excerpt, error and error[:255], retry_after)


def _retry_after_seconds(value: str | None) -> int | None:
    if value and value.strip().isdigit():
        return int(value.strip())
    return None


def _record(claim: _Claim, response: _Response) -> str:
    settings = current_app.extensions["lango.settings"]
    now = datetime.now(UTC)
    delivery = db.session.scalar(
        select(WebhookDelivery).where(WebhookDelivery.id == claim.delivery_id).with_for_update()
    )
    if delivery is None:  # deleted with its endpoint while in flight
        return "skipped"
    endpoint = db.session.scalar(
        select(WebhookEndpoint).where(WebhookEndpoint.id == claim.endpoint_id).with_for_update()
    )
    db.session.add(
        WebhookAttempt(
            id=new_id("wha"),
            delivery_id=claim.delivery_id,
            attempted_at=now - timedelta(milliseconds=response.duration_ms),
            status_code=response.status_code,
            duration_ms=response.duration_ms,
            response_excerpt=response.excerpt,
            error=response.error,
        )
    )
    retry_in = None
    code = response.status_code
    if code is not None and 200 <= code < 300:
        outcome = "delivered"
        delivery.status = DeliveryStatus.DELIVERED
        delivery.delivered_at = now
        delivery.next_attempt_at = None
        if endpoint is not None and endpoint.failing_since is not None:
            endpoint.failing_since = None
    elif code == 410:
        outcome = "failed"
        delivery.status = DeliveryStatus.FAILED
        delivery.next_attempt_at = None
        if endpoint is not None:
            endpoint.failing_since = endpoint.failing_since or now
            _disable_endpoint(endpoint, "gone", now)
    else:
        retry_in = _retry_delay(claim.attempt, response.retry_after, settings)
        failing_for = None
        if endpoint is not None:
            endpoint.failing_since = endpoint.failing_since or now
            failing_for = (now - endpoint.failing_since).total_seconds()
        if failing_for is not None and failing_for >= settings.WEBHOOK_DISABLE_AFTER_SECONDS:
            _disable_endpoint(endpoint, "failing", now)
            retry_in = None
        if retry_in is None:
            outcome = "failed"
            delivery.status = DeliveryStatus.FAILED
            delivery.next_attempt_at = None
        else:
            outcome = "retrying"
            delivery.next_attempt_at = now + timedelta(seconds=retry_in)
            enqueue_after_commit(claim.tenant_id, claim.delivery_id, delay=retry_in)
    db.session.flush()
    logger.info(
        "webhook attempt",
        extra={
            "tenant_id": claim.tenant_id,
            "event_id": claim.event_id,
            "delivery_id": claim.delivery_id,
            "endpoint_id": claim.endpoint_id,
            "attempt": claim.attempt,
            "status_code": code,
            "error": response.error,
            "duration_ms": response.duration_ms,
            "outcome": outcome,
            "retry_in": retry_in,
        },
    )
    return outcome


def _retry_delay(attempt: int, retry_after: int | None, settings) -> float | None:
    """Seconds until the next attempt after failed attempt number `attempt` (1-based), or
    None when the schedule is exhausted. ±10% jitter; a later Retry-After is honoured up to
    the following step's delay."""
    schedule = settings.WEBHOOK_RETRY_SCHEDULE
    if attempt - 1 >= len(schedule):
        return None
    delay = schedule[attempt - 1] * random.uniform(0.9, 1.1)
    if retry_after is not None and retry_after > delay:
        ceiling = schedule[attempt] if attempt < len(schedule) else schedule[attempt - 1]
        delay = max(delay, min(retry_after, ceiling))
    return delay


def _disable_endpoint(endpoint: WebhookEndpoint, reason: str, now: datetime) -> None:
    """Disable it and tell the tenant through an event (fanned out to its other endpoints
    once this transaction commits: this one is disabled by then)."""
    if not endpoint.enabled:
        return
    endpoint.enabled = False
    endpoint.disabled_reason = reason
    endpoint.updated_at = now
    logger.warning(
        "webhook endpoint disabled",
        extra={"endpoint_id": endpoint.id, "reason": reason},
    )
    record_event(
        EventType.WEBHOOK_ENDPOINT_DISABLED,
        {
            "object": {
                "id": endpoint.id,
                "object": "webhook_endpoint",
                "url": endpoint.url,
                "enabled": False,
                "disabled_reason": reason,
                "failing_since": endpoint.failing_since
                and endpoint.failing_since.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        },
        livemode=endpoint.livemode,
    )


# --- per-endpoint concurrency: slots of requests in flight, each lapsing on its own -----------


def _acquire_slot(tenant_id: str, endpoint_id: str, ttl: float, limit: int) -> Slot | None:
    """A slot among `limit` per endpoint (core.slots), or None when all are taken. A slot
    lapses after `ttl` seconds, so a killed worker cannot hold one forever. If Redis is
    unavailable the send goes ahead, on a slot nobody counted: delivering beats throttling."""
    connection = current_app.extensions["lango.redis"]
    key = f"lango:webhooks:inflight:{tenant_id}:{endpoint_id}"
    try:
        return claim_slot(connection, key, limit, ttl)
    except redis.RedisError:
        logger.warning("concurrency slots unavailable", extra={"endpoint_id": endpoint_id})
        return Slot(connection, key, secrets.token_hex(8), ttl)


def _release_slot(slot: Slot) -> None:
    with contextlib.suppress(redis.RedisError):  # otherwise it lapses on its own
        slot.release()


# --- replay, ping, sweeper ---------------------------------------------------------------------


def redeliver(event_id: str, endpoint_id: str | None = None) -> list[WebhookDelivery]:
    """Send the event again: to one endpoint, or to every endpoint it was delivered to plus
    any enabled, matching endpoint that never had it. Resets each delivery to pending now
    with a fresh schedule (its attempts stay on record); the jobs are enqueued once the
    caller commits. Raises NotFound for an unknown event or endpoint."""
    tenant_id = _tenant_id()
    event = db.session.get(Event, event_id)
    if event is None:
        raise NotFound("No such event.", param="id")
    existing = {
        delivery.endpoint_id: delivery
        for delivery in db.session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.event_id == event_id).with_for_update()
        )
    }
    if endpoint_id is not None:
        endpoint = db.session.get(WebhookEndpoint, endpoint_id)
        if endpoint is None or endpoint.livemode != event.livemode:
            raise NotFound("No such webhook endpoint.", param="endpoint_id")
        targets = [endpoint_id]
    else:
        matching = db.session.scalars(
            select(WebhookEndpoint)
            .where(WebhookEndpoint.enabled.is_(True))
            .where(WebhookEndpoint.livemode.is_(event.livemode))
        ).all()
        targets = sorted(
            set(existing)
            | {
                e.id
                for e in matching
                if event.type != EventType.PING and endpoint_wants(e, event.type)
            }
        )
    now = datetime.now(UTC)
    deliveries = [
        _reset_or_create(tenant_id, event_id, target, existing, now) for target in targets
    ]
    db.session.flush()
    return deliveries


def _reset_or_create(tenant_id, event_id, endpoint_id, existing, now) -> WebhookDelivery:
    delivery = existing.get(endpoint_id)
    if delivery is None:
        return _new_delivery(tenant_id, event_id, endpoint_id, now)
    delivery.status = DeliveryStatus.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = now
    delivery.delivered_at = None
    enqueue_after_commit(tenant_id, delivery.id)
    return delivery


def send_ping(endpoint: WebhookEndpoint) -> Event:
    """Record a `ping` event for this endpoint alone and deliver it (enqueued once the caller
    commits; fan_out leaves pings alone). A disabled endpoint's ping delivery is marked
    failed by the job, like any other."""
    event = record_event(
        EventType.PING,
        {"object": {"object": "ping", "webhook_endpoint": endpoint.id}},
        livemode=endpoint.livemode,
    )
    _new_delivery(_tenant_id(), event.id, endpoint.id, event.created_at)
    db.session.flush()
    return event


def redeliver_missed(endpoint: WebhookEndpoint, since: datetime | None = None) -> int:
    """For an endpoint being re-enabled: redeliver what it missed — its failed deliveries,
    and matching events of its mode that got no delivery to it — since `since` (default: its
    last successful delivery, else its creation; at most REPLAY_WINDOW back). Independent of
    failing_since/updated_at, which re-enabling resets. The jobs are enqueued once the
    caller commits. Returns how many deliveries were (re)started."""
    tenant_id = _tenant_id()
    now = datetime.now(UTC)
    if since is None:
        last_success = db.session.scalar(
            select(func.max(WebhookDelivery.delivered_at)).where(
                WebhookDelivery.endpoint_id == endpoint.id
            )
        )
        since = max(last_success or endpoint.created_at, now - REPLAY_WINDOW)
    count = 0
    failed = db.session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint.id)
        .where(WebhookDelivery.status == DeliveryStatus.FAILED)
        .where(WebhookDelivery.created_at >= since)
        .with_for_update()
    ).all()
    for delivery in failed:
        _reset_or_create(tenant_id, delivery.event_id, endpoint.id, {endpoint.id: delivery}, now)
        count += 1
    delivered_to = select(WebhookDelivery.event_id).where(
        WebhookDelivery.endpoint_id == endpoint.id
    )
    missed = db.session.scalars(
        select(Event)
        .where(Event.created_at >= since)
        .where(Event.livemode.is_(endpoint.livemode))
        .where(Event.type != EventType.PING)
        .where(Event.id.not_in(delivered_to))
        .order_by(Event.id)
    ).all()
    for event in missed:
        if endpoint_wants(endpoint, event.type):
            _new_delivery(tenant_id, event.id, endpoint.id, now)
            count += 1
    db.session.flush()
    return count


def sweep_due(tenant_id: str, now: datetime | None = None, limit: int = 1000) -> int:
    """In the tenant's scope: enqueue pending deliveries more than SWEEP_GRACE_SECONDS past
    due (their job was lost). Harmless when the job still exists: it re-checks the row."""
    now = now or datetime.now(UTC)
    ids = db.session.scalars(
        select(WebhookDelivery.id)
        .where(WebhookDelivery.status == DeliveryStatus.PENDING)
        .where(WebhookDelivery.next_attempt_at < now - timedelta(seconds=SWEEP_GRACE_SECONDS))
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(limit)
    ).all()
    if ids:
        logger.info(
            "re-enqueued overdue deliveries", extra={"tenant_id": tenant_id, "count": len(ids)}
        )
    return enqueue([(tenant_id, delivery_id) for delivery_id in ids])


def oldest_due(now: datetime | None = None) -> datetime | None:
    """In the tenant's scope: when its oldest due pending delivery fell due."""
    now = now or datetime.now(UTC)
    return db.session.scalar(
        select(WebhookDelivery.next_attempt_at)
        .where(WebhookDelivery.status == DeliveryStatus.PENDING)
        .where(WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at)
        .limit(1)
    )


def _tenant_id() -> str:
    return require_tenant().tenant_id
