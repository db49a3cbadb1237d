"""Webhook delivery with real RQ workers (in-process SimpleWorkers, or `lango worker`
subprocesses) POSTing to real local HTTP receivers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
import redis
from rq import Queue, SimpleWorker, Worker
from sqlalchemy import select
from standardwebhooks import Webhook
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from core import crypto
from core.events import Event, record_event
from core.extensions import db
from core.ids import new_id
from core.outbox import dispatch
from core.tenancy import tenant_scope
from core.unit_of_work import tenant_unit_of_work
from tests.conftest import ROOT, ApiClient, make_config
from tests.served import wait_for_status
from webhooks import service as delivery_service
from webhooks import signing
from webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint

# --- receivers --------------------------------------------------------------------------------


@dataclass
class Received:
    at: float
    headers: dict
    body: bytes


@dataclass
class Receiver:
    """A real HTTP server on loopback. `respond(n)` gives the status (and headers) of the
    n-th request (0-based); while `hold` is clear, requests wait (up to 30 s) before answering."""

    respond: Callable[[int], int | tuple[int, dict]] = lambda n: 200
    hold: threading.Event | None = None
    requests: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    def __post_init__(self):
        self._lock = threading.Lock()
        self.server = make_server("127.0.0.1", 0, self._wsgi, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def _wsgi(self, environ, start_response):
        request = Request(environ)
        body = request.get_data()
        with self._lock:
            number = len(self.requests)
            self.requests.append(Received(time.monotonic(), dict(request.headers), body))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.hold is not None:
                self.hold.wait(30)
            answer = self.respond(number)
        finally:
            with self._lock:
                self.in_flight -= 1
        status, headers = answer if isinstance(answer, tuple) else (answer, {})
        return Response("ok" if status < 300 else "nope", status, headers)(environ, start_response)

    def stop(self):
        if self.hold is not None:
            self.hold.set()
        self.server.shutdown()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.stop()


# --- settings, endpoints, workers --------------------------------------------------------------


@contextmanager
def webhook_settings(app, **values) -> Iterator[None]:
    """Change the app's frozen settings for a test, restoring them afterwards."""
    settings = app.extensions["lango.settings"]
    saved = {name: getattr(settings, name) for name in values}
    for name, value in values.items():
        object.__setattr__(settings, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            object.__setattr__(settings, name, value)


FAST = {
    "WEBHOOK_ALLOW_PRIVATE_TARGETS": True,
    "WEBHOOK_TIMEOUT_SECONDS": 2,
    "WEBHOOK_RETRY_SCHEDULE": (1, 2, 3),
}


@pytest.fixture
def fast_webhooks(app) -> Iterator[None]:
    with webhook_settings(app, **FAST):
        yield


def make_endpoint(tenant_id: str, url: str, *, livemode=False, events=("*",), **fields) -> tuple:
    """An endpoint row (as the API would store it); returns (id, whsec secret)."""
    secret = signing.new_secret()
    now = datetime.now(UTC)
    with tenant_scope(tenant_id):
        endpoint = WebhookEndpoint(
            id=new_id("we"),
            livemode=livemode,
            url=url,
            enabled_events=list(events),
            enabled=True,
            secret_encrypted=crypto.encrypt(secret),
            created_at=now,
            updated_at=now,
            **fields,
        )
        db.session.add(endpoint)
        db.session.commit()
        return endpoint.id, secret


def record(tenant_id: str, type_="payment.succeeded", *, livemode=False, n=1) -> list[str]:
    """Record events and hand them to their subscribers at once (the dispatcher's work, as
    its woken job would do it), so their deliveries exist when this returns."""
    with tenant_unit_of_work(tenant_id):
        ids = [record_event(type_, {"object": {"n": i}}, livemode=livemode).id for i in range(n)]
    dispatch(tenant_id)
    return ids


def deliveries(tenant_id: str, **where) -> list[WebhookDelivery]:
    with tenant_scope(tenant_id):
        statement = select(WebhookDelivery).order_by(WebhookDelivery.created_at)
        for name, value in where.items():
            statement = statement.where(getattr(WebhookDelivery, name) == value)
        rows = db.session.scalars(statement).all()
        db.session.expunge_all()
        db.session.rollback()
        return rows


def attempts(tenant_id: str, delivery_id: str) -> list[WebhookAttempt]:
    with tenant_scope(tenant_id):
        rows = db.session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id == delivery_id)
            .order_by(WebhookAttempt.attempted_at)
        ).all()
        db.session.expunge_all()
        db.session.rollback()
        return rows


def endpoint_row(tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    with tenant_scope(tenant_id):
        endpoint = db.session.get(WebhookEndpoint, endpoint_id)
        db.session.expunge_all()
        db.session.rollback()
        return endpoint


# The dispatcher's queue first: events recorded by deliveries (an endpoint disabled) fan out
# before the deliveries they make are worked.
QUEUES = ("events", "webhooks")


def work_until(app, done: Callable[[], bool], timeout: float = 20.0, between=None) -> None:
    """Run an in-process RQ SimpleWorker on the dispatcher's and the webhooks' queues in
    burst mode (with its scheduler, which moves due retries onto the queue) over and over
    until `done()`."""
    connection = app.extensions["lango.redis"]
    deadline = time.monotonic() + timeout
    while True:
        # The test client shares this app context's session; the jobs need it clean.
        db.session.remove()
        if between is not None:
            between()
        queues = [Queue(name, connection=connection) for name in QUEUES]
        worker = SimpleWorker(queues, connection=connection)
        worker.work(burst=True, with_scheduler=True, logging_level="WARNING")
        if done():
            return
        if time.monotonic() > deadline:
            raise AssertionError("webhook deliveries not done in time")
        time.sleep(0.1)


def all_settled(tenant_id: str) -> Callable[[], bool]:
    return lambda: not deliveries(tenant_id, status=DeliveryStatus.PENDING)


WORKER_COMMAND = [sys.executable, "-m", "core.cli", "worker", "--queues", ",".join(QUEUES)]


@contextmanager
def worker_process(app, database_url, redis_url, *, processes=1, **env) -> Iterator:
    """`lango worker` as its own process (group), as in production."""
    settings = {
        **make_config(database_url, redis_url),
        "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
        "WEBHOOK_TIMEOUT_SECONDS": "2",
        "WEBHOOK_RETRY_SCHEDULE": "1,2,3",
        **env,
    }
    process = subprocess.Popen(
        [*WORKER_COMMAND, "--processes", str(processes)],
        env={**os.environ, **settings},
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        connection = app.extensions["lango.redis"]
        deadline = time.monotonic() + 30
        while len(Worker.all(connection=connection)) < processes:
            assert process.poll() is None, "lango worker exited"
            assert time.monotonic() < deadline, "lango worker did not start"
            time.sleep(0.2)
        yield process
    finally:
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        with suppress(subprocess.TimeoutExpired):
            process.wait(15)
        # Whatever is left of the group (a killed worker's scheduler child outlives it).
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


# --- tests ------------------------------------------------------------------------------------

PUSH = {"phone_number": "254708374149", "amount": 100, "account_reference": "INV1001"}


def test_sandbox_payment_delivers_one_verified_payment_succeeded(
    platform, app, app_context, client, tenant, fast_webhooks, receivers
):
    receiver = receivers()
    endpoint_id, secret = make_endpoint(tenant.id, receiver.url)
    api = ApiClient(client, tenant.secret)
    created = api.post("/v1/stk-pushes", json=PUSH)
    assert created.status_code == 202, created.get_json()
    assert wait_for_status(api, created.get_json()["id"])["status"] == "succeeded"

    work_until(app, lambda: len(receiver.requests) >= 1 and all_settled(tenant.id)())

    (sent,) = receiver.requests
    (delivery,) = deliveries(tenant.id)
    assert (delivery.status, delivery.endpoint_id, delivery.attempts) == (
        "delivered",
        endpoint_id,
        1,
    )
    payload = Webhook(secret).verify(sent.body, sent.headers)
    assert payload["type"] == "payment.succeeded"
    assert sent.headers["Webhook-Id"] == payload["id"] == delivery.event_id
    assert payload["data"]["object"]["id"] == created.get_json()["id"]
    shown = api.get(f"/v1/events/{payload['id']}").get_json()
    db.session.remove()  # the test client's request shared this context's session
    shown.pop("deliveries", None)
    assert payload == shown
    (attempt,) = attempts(tenant.id, delivery.id)
    assert (attempt.status_code, attempt.response_excerpt, attempt.error) == (200, "ok", None)


def test_receiver_failing_three_times_then_succeeding_gets_four_attempts_on_schedule(
    app, app_context, tenant, receivers
):
    receiver = receivers(respond=lambda n: 500 if n < 3 else 200)
    make_endpoint(tenant.id, receiver.url)
    with webhook_settings(app, **{**FAST, "WEBHOOK_RETRY_SCHEDULE": (1, 2, 3, 60)}):
        (event_id,) = record(tenant.id)
        work_until(app, all_settled(tenant.id), timeout=30)

    (delivery,) = deliveries(tenant.id)
    assert (delivery.status, delivery.attempts) == ("delivered", 4)
    assert [a.status_code for a in attempts(tenant.id, delivery.id)] == [500, 500, 500, 200]
    assert {r.headers["Webhook-Id"] for r in receiver.requests} == {event_id}
    gaps = [b.at - a.at for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)]
    # The shrunk schedule 1 s, 2 s, 3 s with ±10% jitter; RQ's scheduler works in whole
    # seconds, and the burst worker polls every 0.1 s.
    for gap, step in zip(gaps, (1, 2, 3), strict=True):
        assert step * 0.9 - 1.0 <= gap <= step * 1.1 + 1.5, gaps


def test_retry_after_asking_for_later_is_honoured_within_the_next_step(
    app, app_context, tenant, receivers
):
    receiver = receivers(respond=lambda n: (503, {"Retry-After": "3"}) if n == 0 else 200)
    make_endpoint(tenant.id, receiver.url)
    with webhook_settings(app, **{**FAST, "WEBHOOK_RETRY_SCHEDULE": (1, 4)}):
        record(tenant.id)
        work_until(app, all_settled(tenant.id))
    gap = receiver.requests[1].at - receiver.requests[0].at
    assert 2.0 <= gap <= 4.5


def test_a_delivery_goes_ahead_uncounted_when_redis_cannot_count_slots(
    app, app_context, tenant, fast_webhooks, receivers, monkeypatch
):
    receiver = receivers()
    make_endpoint(tenant.id, receiver.url)

    def unavailable(*args, **kwargs):
        raise redis.ConnectionError("Redis is down")

    monkeypatch.setattr(delivery_service, "claim_slot", unavailable)
    record(tenant.id)
    work_until(app, all_settled(tenant.id))

    (delivery,) = deliveries(tenant.id)
    assert (delivery.status, len(receiver.requests)) == ("delivered", 1)


def test_410_disables_the_endpoint_and_tells_the_tenant(
    app, app_context, tenant, fast_webhooks, receivers
):
    gone = receivers(respond=lambda n: 410)
    watcher = receivers()
    gone_id, _ = make_endpoint(tenant.id, gone.url)
    make_endpoint(tenant.id, watcher.url, events=["webhook_endpoint.disabled"])
    record(tenant.id)
    work_until(app, all_settled(tenant.id))

    assert len(gone.requests) == 1
    endpoint = endpoint_row(tenant.id, gone_id)
    assert (endpoint.enabled, endpoint.disabled_reason) == (False, "gone")
    (failed,) = deliveries(tenant.id, endpoint_id=gone_id)
    assert failed.status == "failed"
    (told,) = watcher.requests
    assert json.loads(told.body)["data"]["object"]["id"] == gone_id

    record(tenant.id)  # a disabled endpoint gets nothing more
    work_until(app, all_settled(tenant.id))
    assert len(gone.requests) == 1


def test_endpoint_failing_for_five_days_is_disabled_and_reenabling_redelivers_missed(
    app, app_context, tenant, fast_webhooks, receivers
):
    broken = receivers(respond=lambda n: 500)
    watcher = receivers()
    five_days_ago = datetime.now(UTC) - timedelta(days=5, seconds=1)
    broken_id, _ = make_endpoint(tenant.id, broken.url, failing_since=five_days_ago)
    make_endpoint(tenant.id, watcher.url, events=["webhook_endpoint.disabled"])

    (first,) = record(tenant.id)
    work_until(app, all_settled(tenant.id))
    endpoint = endpoint_row(tenant.id, broken_id)
    assert (endpoint.enabled, endpoint.disabled_reason) == (False, "failing")
    assert [json.loads(r.body)["type"] for r in watcher.requests] == ["webhook_endpoint.disabled"]
    (missed,) = record(tenant.id)  # while disabled: no delivery for it

    broken.respond = lambda n: 200
    from webhooks import service

    with tenant_unit_of_work(tenant.id):
        endpoint = db.session.get(WebhookEndpoint, broken_id)
        endpoint.enabled, endpoint.disabled_reason, endpoint.failing_since = True, None, None
        # Its failed delivery, the event it missed, and the news of its own disabling.
        assert service.redeliver_missed(endpoint) == 3
    work_until(app, all_settled(tenant.id))

    replayed = {json.loads(r.body)["id"]: json.loads(r.body)["type"] for r in broken.requests[1:]}
    assert len(broken.requests) == 4
    assert {first, missed} < set(replayed)
    assert sorted(replayed.values())[-1] == "webhook_endpoint.disabled"
    assert endpoint_row(tenant.id, broken_id).failing_since is None


def test_redeliver_and_ping(app, app_context, tenant, fast_webhooks, receivers):
    from webhooks import service

    receiver = receivers()
    endpoint_id, secret = make_endpoint(tenant.id, receiver.url)
    (event_id,) = record(tenant.id)
    work_until(app, all_settled(tenant.id))
    with tenant_unit_of_work(tenant.id):
        (again,) = service.redeliver(event_id)
        assert again.status == "pending"
        ping = service.send_ping(db.session.get(WebhookEndpoint, endpoint_id))
        ping_id = ping.id
    work_until(app, all_settled(tenant.id))

    ids = [Webhook(secret).verify(r.body, r.headers)["id"] for r in receiver.requests]
    assert ids[0] == ids[1] == event_id and ids[2] == ping_id
    with tenant_scope(tenant.id):
        assert db.session.get(Event, ping_id).type == "ping"


def test_worker_killed_mid_delivery_loses_nothing(
    app, app_context, database_url, redis_url, tenant, fast_webhooks, receivers
):
    from webhooks.jobs import sweep_due_deliveries

    held = threading.Event()
    receiver = receivers(hold=held)
    make_endpoint(tenant.id, receiver.url)
    with worker_process(app, database_url, redis_url) as worker:
        (event_id,) = record(tenant.id)
        wait_for(lambda: len(receiver.requests) == 1)
        os.kill(worker.pid, signal.SIGKILL)  # mid-request
        worker.wait(10)
    held.set()
    (delivery,) = deliveries(tenant.id)
    assert (delivery.status, delivery.attempts) == ("pending", 1)

    # The killed worker's claim lapses after two 2 s timeouts; the sweeper, told it is a
    # minute later, then re-enqueues the delivery (as it would a minute later).
    def sweep():
        sweep_due_deliveries(now=datetime.now(UTC) + timedelta(seconds=60))

    work_until(app, all_settled(tenant.id), timeout=40, between=sweep)
    (delivery,) = deliveries(tenant.id)
    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    assert [r.headers["Webhook-Id"] for r in receiver.requests] == [event_id, event_id]


def test_hanging_receiver_does_not_delay_other_endpoints_or_tenants(
    app, app_context, database_url, redis_url, tenant_factory, fast_webhooks, receivers
):
    hanging = receivers(hold=threading.Event())
    healthy, other_tenants = receivers(), receivers()
    first, second = tenant_factory("Hang Ltd"), tenant_factory("Other Ltd")
    make_endpoint(first.id, hanging.url)
    make_endpoint(first.id, healthy.url)
    make_endpoint(second.id, other_tenants.url)
    with worker_process(app, database_url, redis_url, processes=4, WEBHOOK_TIMEOUT_SECONDS="15"):
        started = time.monotonic()
        record(first.id, n=6)
        record(second.id, n=3)
        wait_for(lambda: len(healthy.requests) == 6 and len(other_tenants.requests) == 3, 10)
        took = time.monotonic() - started
        assert took < 5, took
        # A hanging endpoint holds at most WEBHOOK_ENDPOINT_CONCURRENCY (2) workers.
        assert hanging.max_in_flight <= 2
        assert len(hanging.requests) <= 2
        hanging.hold.set()
