"""The outbox: each event reaches each subscriber exactly once, as recorded in the database,
whatever fails — a subscriber raising, the dispatcher killed mid-batch, Redis flushed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import suppress
from datetime import UTC, datetime, timedelta

import pytest
from rq import Queue, SimpleWorker
from sqlalchemy import select, text

from core import create_app
from core.cli import QUEUES
from core.events import EventHandling, EventType, record_event
from core.extensions import db
from core.outbox import QUEUE_NAME, dispatch, subscriber_lag, sweep_outbox
from core.tenancy import tenant_scope
from core.unit_of_work import tenant_unit_of_work
from tests.conftest import ROOT, make_config
from tests.core.outbox_probe import BROKEN_FLAG, PROBE_TABLE

WORKER = [sys.executable, "-m", "core.cli", "worker"]
PACKAGES = "tenants,billing,compliance,webhooks,payments,staff,frontend,tests.core.outbox_probe"


@pytest.fixture(scope="module")
def probe_app(database_url, redis_url):
    app = create_app(make_config(database_url, redis_url, LANGO_PACKAGES=PACKAGES))
    app.config["TESTING"] = True
    return app


@pytest.fixture
def probed_tenant(tenant_factory, probe_app):
    tenant = tenant_factory()
    with probe_app.app_context():
        with tenant_unit_of_work(tenant.id):
            db.session.execute(text(PROBE_TABLE))
        db.session.remove()
    return tenant


def record(app, tenant_id: str, n: int, **data) -> list[str]:
    with app.app_context():
        with tenant_unit_of_work(tenant_id):
            ids = [record_event(EventType.PING, dict(data), livemode=False).id for _ in range(n)]
        db.session.remove()
    return ids


def effects(app, tenant_id: str) -> Counter:
    with app.app_context(), tenant_scope(tenant_id):
        rows = db.session.execute(text("SELECT event_id, subscriber FROM probe_effects")).all()
        db.session.remove()
    return Counter((event_id, subscriber) for event_id, subscriber in rows)


def handlings(app, tenant_id: str) -> dict[tuple[str, str], EventHandling]:
    with app.app_context(), tenant_scope(tenant_id):
        rows = db.session.scalars(select(EventHandling)).all()
        db.session.expunge_all()
        db.session.remove()
    return {(row.event_id, row.subscriber): row for row in rows}


def counted(done: Counter) -> int:
    return sum(1 for _, name in done if name == "probe.counter")


def run_events_queue(app) -> None:
    with app.app_context():
        connection = app.extensions["lango.redis"]
        queue = Queue(QUEUE_NAME, connection=connection)
        SimpleWorker([queue], connection=connection).work(burst=True, logging_level="WARNING")
        db.session.remove()


def test_recording_an_event_owes_it_to_every_interested_subscriber_and_runs_none(
    probe_app, probed_tenant
):
    record(probe_app, probed_tenant.id, 1)

    owed = handlings(probe_app, probed_tenant.id)
    assert {subscriber for _, subscriber in owed} >= {"probe.counter", "probe.flaky"}
    assert all(h.handled_at is None and h.attempts == 0 for h in owed.values())
    assert effects(probe_app, probed_tenant.id) == Counter()  # nothing ran in the transaction


def test_a_commit_wakes_the_dispatcher_and_each_subscriber_runs_once(probe_app, probed_tenant):
    ids = record(probe_app, probed_tenant.id, 3)
    run_events_queue(probe_app)
    run_events_queue(probe_app)  # nothing left to do: a second pass repeats nothing

    assert effects(probe_app, probed_tenant.id) == Counter(
        {(event_id, name): 1 for event_id in ids for name in ("probe.counter", "probe.flaky")}
    )
    assert all(h.handled_at is not None for h in handlings(probe_app, probed_tenant.id).values())


def test_a_busy_tenant_has_one_dispatch_job_waiting_which_takes_all_its_events(
    probe_app, probed_tenant
):
    ids = [record(probe_app, probed_tenant.id, 1)[0] for _ in range(5)]  # five commits
    assert Queue(QUEUE_NAME, connection=probe_app.extensions["lango.redis"]).count == 1

    run_events_queue(probe_app)
    assert effects(probe_app, probed_tenant.id) == Counter(
        {(event_id, name): 1 for event_id in ids for name in ("probe.counter", "probe.flaky")}
    )
    # The job took its flag down first: the next commit wakes a job of its own.
    record(probe_app, probed_tenant.id, 1)
    assert Queue(QUEUE_NAME, connection=probe_app.extensions["lango.redis"]).count == 1


def test_a_rolled_back_event_is_owed_to_nobody(probe_app, probed_tenant):
    with probe_app.app_context():
        with pytest.raises(RuntimeError), tenant_unit_of_work(probed_tenant.id):
            record_event(EventType.PING, {}, livemode=False)
            raise RuntimeError("the state change failed")
        db.session.remove()
        assert Queue(QUEUE_NAME, connection=probe_app.extensions["lango.redis"]).count == 0
    assert handlings(probe_app, probed_tenant.id) == {}


def test_a_failing_subscriber_is_retried_with_backoff_and_the_others_are_unaffected(
    probe_app, probed_tenant
):
    redis = probe_app.extensions["lango.redis"]
    redis.set(BROKEN_FLAG, 1)
    ids = record(probe_app, probed_tenant.id, 3)
    with probe_app.app_context():
        dispatch(probed_tenant.id)

    done = effects(probe_app, probed_tenant.id)
    assert done == Counter({(event_id, "probe.counter"): 1 for event_id in ids})
    owed = handlings(probe_app, probed_tenant.id)
    for event_id in ids:
        flaky = owed[(event_id, "probe.flaky")]
        assert flaky.handled_at is None and flaky.attempts == 1
        assert "the probe is broken" in flaky.last_error
        assert flaky.next_attempt_at > datetime.now(UTC)  # backed off, not hammered
        assert owed[(event_id, "probe.counter")].handled_at is not None
    with probe_app.app_context():
        lag = {row.subscriber: row for row in subscriber_lag()}
        assert lag["probe.flaky"].pending == 3 and lag["probe.flaky"].retrying == 3
        assert lag["probe.counter"].pending == 0 and lag["probe.counter"].oldest_seconds is None

        # Not due yet: the retry waits for its backoff.
        dispatch(probed_tenant.id)
        assert effects(probe_app, probed_tenant.id) == done
        redis.delete(BROKEN_FLAG)
        dispatch(probed_tenant.id, now=datetime.now(UTC) + timedelta(hours=2))
        dispatch(probed_tenant.id, now=datetime.now(UTC) + timedelta(hours=4))

    assert effects(probe_app, probed_tenant.id) == Counter(
        {(event_id, name): 1 for event_id in ids for name in ("probe.counter", "probe.flaky")}
    )
    assert handlings(probe_app, probed_tenant.id)[(ids[0], "probe.flaky")].attempts == 2


def test_nothing_is_lost_or_repeated_after_redis_is_flushed(probe_app, probed_tenant):
    ids = record(probe_app, probed_tenant.id, 5)
    redis = probe_app.extensions["lango.redis"]
    redis.flushall()  # the dispatch jobs the commit enqueued are gone
    run_events_queue(probe_app)
    assert effects(probe_app, probed_tenant.id) == Counter()

    with probe_app.app_context():
        assert sweep_outbox(now=datetime.now(UTC) + timedelta(minutes=1)) >= 1
    run_events_queue(probe_app)
    run_events_queue(probe_app)

    assert effects(probe_app, probed_tenant.id) == Counter(
        {(event_id, name): 1 for event_id in ids for name in ("probe.counter", "probe.flaky")}
    )


def test_a_dispatcher_killed_mid_batch_loses_and_repeats_nothing(
    probe_app, probed_tenant, database_url, redis_url
):
    ids = record(probe_app, probed_tenant.id, 12, sleep=0.3)
    worker = subprocess.Popen(
        [*WORKER, "--processes", "1", "--burst", "--queues", ",".join(QUEUES)],
        env={**os.environ, **make_config(database_url, redis_url, LANGO_PACKAGES=PACKAGES)},
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        # Kill it once it is part-way through the batch (some effects committed, not all).
        deadline = time.monotonic() + 60
        while (
            sum(1 for _, name in effects(probe_app, probed_tenant.id) if name == "probe.counter")
            < 3
        ):
            assert worker.poll() is None, "the worker finished before it could be killed"
            assert time.monotonic() < deadline, "the worker never got going"
            time.sleep(0.05)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
    finally:
        with suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)

    partial = effects(probe_app, probed_tenant.id)
    assert max(partial.values()) == 1
    assert counted(partial) < len(ids)

    # The job died with the worker: the sweeper finds what is still owed, a new one finishes.
    with probe_app.app_context():
        assert sweep_outbox(now=datetime.now(UTC) + timedelta(minutes=1)) >= 1
    run_events_queue(probe_app)
    run_events_queue(probe_app)

    assert effects(probe_app, probed_tenant.id) == Counter(
        {(event_id, name): 1 for event_id in ids for name in ("probe.counter", "probe.flaky")}
    )


def test_two_dispatchers_at_once_hand_each_event_over_once(probe_app, probed_tenant):
    import threading

    ids = record(probe_app, probed_tenant.id, 20, sleep=0.01)
    errors = []

    def run() -> None:
        try:
            with probe_app.app_context():
                dispatch(probed_tenant.id)
                db.session.remove()
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert not errors
    assert effects(probe_app, probed_tenant.id) == Counter(
        {(event_id, name): 1 for event_id in ids for name in ("probe.counter", "probe.flaky")}
    )
