"""Webhook delivery under a steady event rate, printed (not asserted):

1. Steady: `lango worker --processes 2` (the RQ workers, as run in production) and a local
   receiver in this process. Events are recorded here at a steady rate (record_event in a
   tenant unit of work: on commit the outbox dispatcher is woken, its `events` job fans the
   event out to the endpoint and enqueues the delivery, as in production) on a tenant with
   one endpoint pointing at the receiver, which answers 200 at once. Prints deliveries/s,
   event-to-delivery latency p50/p99/max (arrival at the receiver minus the event's
   created_at), and the events still undelivered after --drain seconds.
2. One endpoint hangs: a second tenant gets an endpoint whose receiver never answers within
   WEBHOOK_TIMEOUT_SECONDS (--timeout, small to keep the run short), and the same event rate
   of its own; the healthy tenant's load goes on as in 1. Prints the healthy endpoint's
   figures while the other one hangs, beside how the hanging endpoint fared (attempts,
   deliveries pending) and the queue's depth when the load stopped.

    .venv/bin/python bench/webhooks.py [--rate 50] [--seconds 20] [--workers 2] [--timeout 3]

Latency counts the first arrival of each event (delivery is at least once; duplicates are
counted apart). Both clocks are this machine's. Uses DATABASE_URL / REDIS_URL when set, else
the embedded servers under .lango/bench. Works in a database of its own, created here and
dropped at the end; the RQ jobs of this run's tenants left in Redis (retries of the hanging
endpoint) are deleted at the end. The workers run in their own process group and are stopped
on the way out (Ctrl-C and errors included); their stderr goes to .lango/bench/logs/.
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

# The project from its root, ahead of this folder (bench/tenants.py shadows `tenants`).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.fernet import Fernet
from flask import Flask
from redis import Redis
from sqlalchemy import func, select
from werkzeug.serving import make_server

from bench.harness import (
    BIN,
    LOG_DIR,
    cpu_now,
    free_port,
    fresh_database,
    raise_on_sigterm,
    servers,
    start_process_group,
    stop_process_group,
)
from core import create_app
from core.cli import upgrade_public
from core.events import record_event
from core.extensions import db
from core.outbox import QUEUE_NAME as OUTBOX_QUEUE
from core.tenancy import tenant_scope
from core.unit_of_work import tenant_unit_of_work, unit_of_work
from tenants.service import sign_up
from webhooks.endpoints import create_endpoint
from webhooks.models import WebhookAttempt, WebhookDelivery
from webhooks.service import QUEUE_NAME

SECRET_KEY = secrets.token_urlsafe(48)
ENCRYPTION_KEY = Fernet.generate_key().decode()
# The plan with room for endpoints (and no endpoint limit in the way).
PLAN = "scale"
EVENT_TYPE = "payment.succeeded"
# Latencies above this are counted, with when their events were created, to see a stall.
SLOW_SECONDS = 0.25


# --- processes ------------------------------------------------------------------------


@contextmanager
def worker_processes(count: int, env: dict) -> Iterator[subprocess.Popen]:
    """`lango worker --processes count` in its own session (process group), stopped as a
    group on the way out: SIGTERM (RQ's warm shutdown), then SIGKILL."""
    process = start_process_group(
        [str(BIN / "lango"), "worker", "--processes", str(count)], env, "webhook-workers"
    )
    try:
        yield process
    finally:
        stop_process_group(process, 20)


# --- CPU (Linux /proc) -----------------------------------------------------------------------


# --- the receiver -------------------------------------------------------------------------


class Receiver:
    """A threaded werkzeug server on 127.0.0.1: `/ok` records the arrival time of each
    `webhook-id` and answers 200 at once; `/hang` answers only after `hang_seconds` (or when
    released at the end)."""

    def __init__(self, hang_seconds: float) -> None:
        self.hang_seconds = hang_seconds
        self.lock = threading.Lock()
        self.arrivals: dict[str, float] = {}  # event id → first arrival (time.time())
        self.duplicates = 0
        self.hang_hits = 0
        self.release = threading.Event()
        self.port = free_port()
        self.server = make_server("127.0.0.1", self.port, self.app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def app(self, environ, start_response):
        arrived = time.time()
        path = environ.get("PATH_INFO", "")
        length = int(environ.get("CONTENT_LENGTH") or 0)
        if length:
            environ["wsgi.input"].read(length)
        if path.startswith("/hang"):
            with self.lock:
                self.hang_hits += 1
            self.release.wait(self.hang_seconds)
        elif path.startswith("/ok"):
            event_id = environ.get("HTTP_WEBHOOK_ID", "")
            with self.lock:
                if event_id in self.arrivals:
                    self.duplicates += 1
                else:
                    self.arrivals[event_id] = arrived
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    def received(self, event_ids) -> int:
        with self.lock:
            return sum(1 for event_id in event_ids if event_id in self.arrivals)

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


# --- the load -------------------------------------------------------------------------------


@dataclass
class Phase:
    label: str
    created: dict[str, float] = field(default_factory=dict)  # healthy events: id → created
    other_events: int = 0  # events of the other (hanging) tenant
    started: float = 0.0
    produced_in: float = 0.0  # seconds the producer took
    behind: float = 0.0  # how far the producer fell behind its schedule at worst (s)
    drained_in: float = 0.0  # from the end of production to the last arrival / give-up
    queue_at_end: dict[str, int] = field(default_factory=dict)
    machine_cpu: float = 0.0  # CPU seconds the machine used during the phase (load + drain)
    worker_cpu: float = 0.0  # of which the workers
    wall: float = 0.0


def produce(
    app: Flask, phase: Phase, healthy: str, others: list[str], rate: float, seconds: float
) -> None:
    """One event per tick per tenant (healthy first), ticks `1/rate` apart for `seconds`,
    each recorded in a unit of work of its tenant, as the payment code does."""
    count = int(rate * seconds)
    with app.app_context():
        phase.started = time.time()
        start = time.perf_counter()
        for number in range(count):
            due = start + number / rate
            lag = time.perf_counter() - due
            if lag < 0:
                time.sleep(-lag)
            else:
                phase.behind = max(phase.behind, lag)
            for tenant_id in [healthy, *others]:
                with tenant_unit_of_work(tenant_id):
                    event = record_event(
                        EVENT_TYPE,
                        {"object": "stk_push", "id": f"bench_{number}", "amount": 100},
                        livemode=False,
                    )
                    # Read before the commit expires them (outside the scope they can't load).
                    event_id, created = event.id, event.created_at.timestamp()
                if tenant_id == healthy:
                    phase.created[event_id] = created
                else:
                    phase.other_events += 1
        phase.produced_in = time.perf_counter() - start
        db.session.remove()


def queue_depth(redis: Redis) -> dict[str, int]:
    from rq import Queue

    queue = Queue(QUEUE_NAME, connection=redis)
    return {
        "queued": queue.count,
        "started": queue.started_job_registry.count,
        "scheduled": queue.scheduled_job_registry.count,
        "failed": queue.failed_job_registry.count,
    }


def drain(receiver: Receiver, phase: Phase, seconds: float) -> None:
    started = time.perf_counter()
    deadline = started + seconds
    while receiver.received(phase.created) < len(phase.created):
        if time.perf_counter() > deadline:
            break
        time.sleep(0.05)
    phase.drained_in = time.perf_counter() - started


def run_phase(
    app: Flask,
    redis: Redis,
    receiver: Receiver,
    label: str,
    healthy: str,
    others: list[str],
    args: argparse.Namespace,
    worker_group: int,
) -> Phase:
    phase = Phase(label)
    machine, workers = cpu_now(worker_group)
    started = time.perf_counter()
    produce(app, phase, healthy, others, args.rate, args.seconds)
    phase.queue_at_end = queue_depth(redis)
    drain(receiver, phase, args.drain)
    phase.wall = time.perf_counter() - started
    machine_after, workers_after = cpu_now(worker_group)
    phase.machine_cpu, phase.worker_cpu = machine_after - machine, workers_after - workers
    return phase


def percentile(values: list[float], percent: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1]


def print_phase(phase: Phase, receiver: Receiver, args: argparse.Namespace) -> None:
    with receiver.lock:
        arrivals = {
            event_id: receiver.arrivals[event_id]
            for event_id in phase.created
            if event_id in receiver.arrivals
        }
    latencies = [arrivals[event_id] - phase.created[event_id] for event_id in arrivals]
    sent = len(phase.created)
    produced_rate = (sent + phase.other_events) / phase.produced_in if phase.produced_in else 0
    # Deliveries/s over the phase: from the first event to the last arrival.
    span = (max(arrivals.values()) - phase.started) if arrivals else 0.0
    print(f"\n{phase.label}")
    print(
        f"  produced  {sent} healthy-endpoint events"
        + (f" + {phase.other_events} for the hanging endpoint" if phase.other_events else "")
        + f" in {phase.produced_in:.1f} s ({produced_rate:.1f} events/s committed;"
        f" producer at worst {phase.behind * 1000:.0f} ms behind schedule)"
    )
    print(
        f"  delivered {len(arrivals)}/{sent} to the healthy endpoint:"
        f" {len(arrivals) / span if span else 0:.1f} deliveries/s"
        f" (first event → last arrival, {span:.1f} s)"
    )
    print(
        f"  latency   p50 {percentile(latencies, 50) * 1000:8.1f} ms"
        f"   p99 {percentile(latencies, 99) * 1000:8.1f} ms"
        f"   max {max(latencies, default=float('nan')) * 1000:8.1f} ms"
        "   (event created → arrival at the receiver)"
    )
    slow = sorted(
        phase.created[event_id] - phase.started
        for event_id in arrivals
        if arrivals[event_id] - phase.created[event_id] > SLOW_SECONDS
    )
    if slow:
        print(
            f"            {len(slow)} over {SLOW_SECONDS * 1000:.0f} ms, for events created"
            f" {slow[0]:.1f} to {slow[-1]:.1f} s into the phase"
        )
    lost = sent - len(arrivals)
    print(
        f"  undelivered after {args.drain:.0f} s drain: {lost}"
        f"   (drain took {phase.drained_in:.1f} s)"
    )
    if phase.wall and phase.machine_cpu:
        cores = os.cpu_count() or 1
        print(
            f"  CPU       workers {phase.worker_cpu:.1f} s"
            f" ({phase.worker_cpu * 1000 / max(len(arrivals), 1):.1f} ms per healthy delivery);"
            f" machine busy {phase.machine_cpu / (phase.wall * cores):.0%} of {cores} cores"
            " (this run and anything else on the machine)"
        )
    depth = phase.queue_at_end
    print(
        f"  queue '{QUEUE_NAME}' when production stopped: {depth.get('queued')} queued,"
        f" {depth.get('started')} started, {depth.get('scheduled')} scheduled"
    )


def deliveries_summary(app: Flask, tenant_id: str) -> tuple[Counter, int, Counter]:
    """(deliveries by status, attempts made, attempts by outcome) in the tenant's schema."""
    with app.app_context(), tenant_scope(tenant_id):
        statuses = Counter(
            {
                str(getattr(status, "value", status)): count
                for status, count in db.session.execute(
                    select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
                )
            }
        )
        outcomes = Counter(
            {
                (str(code) if code is not None else (error or "?").split(" after")[0]): count
                for code, error, count in db.session.execute(
                    select(WebhookAttempt.status_code, WebhookAttempt.error, func.count()).group_by(
                        WebhookAttempt.status_code, WebhookAttempt.error
                    )
                )
            }
        )
        attempts = sum(outcomes.values())
        db.session.remove()
    return statuses, attempts, outcomes


def forget_run_jobs(redis_url: str, tenant_ids: list[str]) -> int:
    """Delete the webhook and outbox jobs of this run's tenants still in Redis (queued,
    scheduled, started or failed): their database is gone."""
    from rq import Queue
    from rq.job import Job

    deleted = 0
    try:
        redis = Redis.from_url(redis_url)
        job_ids = set()
        for name in (QUEUE_NAME, OUTBOX_QUEUE):
            queue = Queue(name, connection=redis)
            job_ids.update(queue.get_job_ids())
            for registry in (
                queue.scheduled_job_registry,
                queue.started_job_registry,
                queue.failed_job_registry,
                queue.deferred_job_registry,
                queue.finished_job_registry,
                queue.canceled_job_registry,
            ):
                with suppress(Exception):
                    job_ids.update(registry.get_job_ids())
        ours = set(tenant_ids)
        for job in Job.fetch_many(list(job_ids), connection=redis):
            if job is not None and job.args and job.args[0] in ours:
                job.delete()
                deleted += 1
    except Exception as error:
        print(f"could not delete this run's RQ jobs: {error}", file=sys.stderr)
    return deleted


# --- the run --------------------------------------------------------------------------------


def wait_for_workers(
    app: Flask, receiver: Receiver, tenant_id: str, workers: subprocess.Popen, seconds: float
) -> float:
    """Record one event and wait for its delivery: the workers are up and connected.
    Returns how long that took."""
    warm = Phase("warm-up")
    started = time.perf_counter()
    produce(app, warm, tenant_id, [], rate=100.0, seconds=0.03)
    deadline = started + seconds
    while receiver.received(warm.created) < len(warm.created):
        if workers.poll() is not None:
            raise SystemExit(
                f"workers exited with {workers.returncode}; see {LOG_DIR}/webhook-workers.log"
            )
        if time.perf_counter() > deadline:
            raise SystemExit(
                f"no delivery within {seconds:.0f} s; see {LOG_DIR}/webhook-workers.log"
            )
        time.sleep(0.05)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="events/s per tenant")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--workers", type=int, default=2, help="`lango worker --processes`")
    parser.add_argument(
        "--timeout", type=int, default=3, help="WEBHOOK_TIMEOUT_SECONDS (the hang outlasts it)"
    )
    parser.add_argument(
        "--endpoint-concurrency",
        type=int,
        default=None,
        help="WEBHOOK_ENDPOINT_CONCURRENCY (default: the platform's default)",
    )
    parser.add_argument(
        "--drain", type=float, default=20.0, help="seconds to wait for the last deliveries"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    run = secrets.token_hex(4)
    tenant_ids: list[str] = []
    redis_url = ""
    try:
        with (
            servers() as (server_url, redis_url),
            fresh_database(server_url, prefix="lango_bench_webhooks") as database_url,
        ):
            lango_env = {
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "SECRET_KEY": SECRET_KEY,
                "ENCRYPTION_KEYS": ENCRYPTION_KEY,
                "LANGO_ENV": "production",
                "LOG_LEVEL": "WARNING",
                "WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
                "WEBHOOK_TIMEOUT_SECONDS": str(args.timeout),
            }
            if args.endpoint_concurrency is not None:
                lango_env["WEBHOOK_ENDPOINT_CONCURRENCY"] = str(args.endpoint_concurrency)
            app = create_app(lango_env)
            settings = app.extensions["lango.settings"]
            redis = app.extensions["lango.redis"]
            # Hangs well past the request's timeouts (connect and read); released at the end.
            hang_seconds = settings.WEBHOOK_TIMEOUT_SECONDS * 4 + 5
            with Receiver(hang_seconds) as receiver:
                with app.app_context():
                    upgrade_public()
                    for name in ("healthy", "hanging"):
                        with unit_of_work():
                            signed_up = sign_up(
                                f"Webhook Bench {name}",
                                f"{name}-{run}@bench.example",
                                "s3cure-Passw0rd",
                                plan=PLAN,
                            )
                        tenant_ids.append(signed_up.tenant.id)
                    db.session.remove()
                healthy, hanging = tenant_ids
                with app.app_context():
                    with tenant_unit_of_work(healthy):
                        create_endpoint(
                            livemode=False, url=receiver.url("/ok"), enabled_events=[EVENT_TYPE]
                        )
                    db.session.remove()

                print(
                    f"{os.cpu_count()} CPUs; lango worker --processes {args.workers};"
                    f" WEBHOOK_TIMEOUT_SECONDS {settings.WEBHOOK_TIMEOUT_SECONDS},"
                    f" WEBHOOK_ENDPOINT_CONCURRENCY {settings.WEBHOOK_ENDPOINT_CONCURRENCY};"
                    f" {args.rate:g} events/s per tenant for {args.seconds:g} s per phase;"
                    f" plan {PLAN}",
                    flush=True,
                )
                child_env = {**os.environ, **lango_env}
                with worker_processes(args.workers, child_env) as workers:
                    took = wait_for_workers(app, receiver, healthy, workers, 60)
                    print(f"workers up (first delivery after {took:.1f} s)", flush=True)

                    steady = run_phase(
                        app, redis, receiver, "1. steady load", healthy, [], args, workers.pid
                    )
                    print_phase(steady, receiver, args)

                    with app.app_context():
                        with tenant_unit_of_work(hanging):
                            create_endpoint(
                                livemode=False,
                                url=receiver.url("/hang"),
                                enabled_events=[EVENT_TYPE],
                            )
                        db.session.remove()
                    hung = run_phase(
                        app,
                        redis,
                        receiver,
                        "2. same load while another tenant's endpoint hangs"
                        f" ({hang_seconds:g} s per request)",
                        healthy,
                        [hanging],
                        args,
                        workers.pid,
                    )
                    print_phase(hung, receiver, args)
                    statuses, attempts, outcomes = deliveries_summary(app, hanging)
                    print(
                        f"  hanging endpoint: {attempts} attempts made"
                        f" ({', '.join(f'{k} {v}' for k, v in outcomes.items()) or 'none'}),"
                        f" requests that reached it {receiver.hang_hits};"
                        f" deliveries {dict(statuses)}"
                    )
                    statuses, attempts, outcomes = deliveries_summary(app, healthy)
                    print(
                        f"  healthy endpoint (whole run): {attempts} attempts,"
                        f" deliveries {dict(statuses)},"
                        f" duplicate arrivals {receiver.duplicates}"
                    )
                    receiver.release.set()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if redis_url and tenant_ids:
            forget_run_jobs(redis_url, tenant_ids)


if __name__ == "__main__":
    main()
