"""The sweeper: the delivery rows are the record, so a lost job (Redis flushed, worker
killed) is re-enqueued and nothing is lost; duplicate jobs send once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rq import Queue

from core.extensions import db
from tests.webhooks import test_delivery
from tests.webhooks.test_delivery import (
    all_settled,
    deliveries,
    make_endpoint,
    record,
    webhook_settings,
    work_until,
)
from webhooks import service
from webhooks.jobs import sweep_due_deliveries

# The receivers and fast settings of the delivery tests.
fast_webhooks = test_delivery.fast_webhooks
receivers = test_delivery.receivers

LATER = timedelta(seconds=service.SWEEP_GRACE_SECONDS + 1)


def queued(app) -> int:
    return Queue("webhooks", connection=app.extensions["lango.redis"]).count


def test_redis_flush_before_delivery_loses_nothing(
    app, app_context, tenant_factory, fast_webhooks, receivers
):
    first, second = tenant_factory("Flush A"), tenant_factory("Flush B")
    receiver, other = receivers(), receivers()
    make_endpoint(first.id, receiver.url)
    make_endpoint(first.id, other.url)
    make_endpoint(second.id, receiver.url)
    events = record(first.id, n=3) + record(second.id, n=2)
    assert queued(app) == 8

    app.extensions["lango.redis"].flushdb()
    assert sweep_due_deliveries() == 0  # not overdue yet: their jobs may still be coming
    assert sweep_due_deliveries(now=datetime.now(UTC) + LATER) == 8

    work_until(app, lambda: all_settled(first.id)() and all_settled(second.id)())
    assert sorted(r.headers["Webhook-Id"] for r in receiver.requests) == sorted(events)
    assert len(other.requests) == 3
    assert all(d.status == "delivered" for d in deliveries(first.id) + deliveries(second.id))


def test_duplicate_jobs_send_once(app, app_context, tenant, fast_webhooks, receivers):
    receiver = receivers()
    make_endpoint(tenant.id, receiver.url)
    record(tenant.id)
    (delivery,) = deliveries(tenant.id)
    service.enqueue([(tenant.id, delivery.id)] * 3)

    work_until(app, all_settled(tenant.id))
    assert len(receiver.requests) == 1
    assert sweep_due_deliveries(now=datetime.now(UTC) + LATER) == 0  # delivered: left alone


def test_sweeper_skips_retries_not_yet_due(app, app_context, tenant, fast_webhooks, receivers):
    receiver = receivers(respond=lambda n: 500)
    make_endpoint(tenant.id, receiver.url)
    with_long_schedule = {"WEBHOOK_RETRY_SCHEDULE": (3600,)}
    with webhook_settings(app, **with_long_schedule):
        record(tenant.id)
        work_until(app, lambda: len(receiver.requests) == 1)
    db.session.remove()
    (delivery,) = deliveries(tenant.id)
    assert delivery.status == "pending" and delivery.next_attempt_at > datetime.now(UTC)
    assert sweep_due_deliveries(now=datetime.now(UTC) + LATER) == 0
    assert sweep_due_deliveries(now=datetime.now(UTC) + timedelta(hours=2)) == 1
