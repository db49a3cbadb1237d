"""The event outbox under a steady event rate: how long from an event's creation to each
subscriber having handled it, printed (not asserted).

The issue's target: event → subscriber p99 under 200 ms at 50 events/s.

`lango worker --processes N` (the RQ workers as run in production; their default queues
include `events`) runs in a process group of its own. This process records events at a
steady rate, round-robin over a few tenants signed up through the tenants service, each in
a transaction of its own as a payment would: `record_event(payment.succeeded, {"object":
{…push…}}, livemode=False)` inside `tenant_unit_of_work(tenant)`, whose commit wakes the
dispatcher (one `dispatch_events` job on the `events` queue). The subscribers the packages
register run for real (listed at the start): e.g. the webhooks fan-out, here with no
endpoint configured, so it finds none and creates no delivery.

When the load stops it waits up to --drain seconds for every handling to be done, then
reads from each tenant's `event_handlings` the latency handled_at - events.created_at of
each (event, subscriber), and prints: events recorded and the rate achieved, handlings
done/pending (and retried), latency p50/p95/p99/max overall and per subscriber, the
`events` queue's depth (at most, and when the load stopped), the workers' CPU per event and
how busy the machine was (from /proc), and whether the target was met.

    .venv/bin/python bench/outbox.py [--rate 50] [--seconds 20] [--workers 2]
                                     [--tenants 3] [--drain 20]

created_at is set by record_event before the producer's commit, so the latency includes
that commit and the wake-up enqueue. Both timestamps come from this machine's clock. A
warm-up event per tenant (not counted) waits for the workers to be up. Uses DATABASE_URL /
REDIS_URL when set, else the embedded servers under .lango/bench. Works in a database of
its own, created here and dropped at the end; this run's jobs left in Redis are deleted.
The workers are stopped on every way out (Ctrl-C and errors included); their stderr goes to
.lango/bench/logs/outbox-workers.log. The periodic sweeper (`lango scheduler`) is not run:
an event whose wake-up was lost shows as pending.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

# The project from its root, ahead of this folder (bench/tenants.py shadows `tenants`).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.fernet import Fernet
from flask import Flask
from redis import Redis
from rq import Queue
from rq.job import Job
from sqlalchemy import func, select

from bench.harness import (
    BIN,
    LOG_DIR,
    cpu_now,
    fresh_database,
    percentile_ms,
    raise_on_sigterm,
    roomiest_plan,
    servers,
    start_process_group,
    stop_process_group,
)
from core import create_app
from core.cli import upgrade_public
from core.events import Event, EventHandling, EventType, record_event, subscribers
from core.extensions import db
from core.outbox import QUEUE_NAME
from core.tenancy import tenant_scope
from core.unit_of_work import tenant_unit_of_work, unit_of_work
from tenants.service import sign_up

SECRET_KEY = secrets.token_urlsafe(48)
ENCRYPTION_KEY = Fernet.generate_key().decode()
TARGET_P99_MS = 200
TARGET_RATE = 50
WORKER_LOG = "outbox-workers"


# --- processes ------------------------------------------------------------------------------


@contextmanager
def worker_processes(count: int, env: dict) -> Iterator[subprocess.Popen]:
    """`lango worker --processes count` in its own session (process group), stopped as a
    group on the way out: SIGTERM (RQ's warm shutdown), then SIGKILL."""
    process = start_process_group(
        [str(BIN / "lango"), "worker", "--processes", str(count)], env, WORKER_LOG
    )
    try:
        yield process
    finally:
        stop_process_group(process, 20)


def forget_run_jobs(redis_url: str, tenant_ids: list[str]) -> None:
    """Delete the dispatch jobs of this run's tenants still in Redis (queued, scheduled,
    started or failed): their database is gone."""
    try:
        redis = Redis.from_url(redis_url)
        queue = Queue(QUEUE_NAME, connection=redis)
        job_ids = set(queue.get_job_ids())
        for registry in (
            queue.scheduled_job_registry,
            queue.started_job_registry,
            queue.failed_job_registry,
            queue.deferred_job_registry,
        ):
            job_ids.update(registry.get_job_ids())
        ours = set(tenant_ids)
        for job in Job.fetch_many(list(job_ids), connection=redis):
            if job is not None and job.args and job.args[0] in ours:
                job.delete()
    except Exception as error:
        print(f"could not delete this run's RQ jobs: {error}", file=sys.stderr)


# --- CPU (Linux /proc) -----------------------------------------------------------------------


# --- the load -------------------------------------------------------------------------------


@dataclass
class Load:
    event_ids: set[str] = field(default_factory=set)
    produced_in: float = 0.0  # seconds from the first event to the last commit
    behind: float = 0.0  # how far the producer fell behind its schedule at worst (s)
    commits: list[float] = field(default_factory=list)  # seconds per record + commit
    queued_at_end: int = 0  # dispatch jobs still waiting when the load stopped
    queued_at_most: int = 0  # the most seen waiting, sampled after each event


def push_object(number: int) -> dict:
    """What payments puts in a payment.succeeded event: the push as the API shows it."""
    now = datetime.now(UTC).isoformat()
    return {
        "id": f"stk_bench{number:08d}",
        "object": "stk_push",
        "status": "succeeded",
        "livemode": False,
        "phone_number": "+254708374149",
        "amount": 100,
        "account_reference": f"order-{number}",
        "description": "Outbox bench",
        "metadata": {},
        "mpesa_receipt_number": f"BENCH{number:07d}",
        "result_code": "0",
        "result_description": "The service request is processed successfully.",
        "checkout_request_id": f"ws_CO_bench_{number}",
        "transaction_date": now,
        "flagged_reason": None,
        "expired_at": None,
        "created": now,
        "updated": now,
    }


def record(tenant_id: str, number: int) -> str:
    """One event in a transaction of its own, as a payment's outcome is recorded."""
    with tenant_unit_of_work(tenant_id):
        event = record_event(
            EventType.PAYMENT_SUCCEEDED, {"object": push_object(number)}, livemode=False
        )
        # Read before the commit expires it (outside the scope it can't load).
        return event.id


def produce(app: Flask, tenant_ids: list[str], rate: float, seconds: float) -> Load:
    """Events `1/rate` apart for `seconds`, round-robin over the tenants."""
    load = Load()
    count = int(rate * seconds)
    with app.app_context():
        queue = Queue(QUEUE_NAME, connection=app.extensions["lango.redis"])
        start = time.perf_counter()
        for number in range(count):
            due = start + number / rate
            lag = time.perf_counter() - due
            if lag < 0:
                time.sleep(-lag)
            else:
                load.behind = max(load.behind, lag)
            began = time.perf_counter()
            load.event_ids.add(record(tenant_ids[number % len(tenant_ids)], number))
            load.commits.append(time.perf_counter() - began)
            load.queued_at_most = max(load.queued_at_most, queue.count)
        load.produced_in = time.perf_counter() - start
        load.queued_at_end = queue.count
        db.session.remove()
    return load


def pending(app: Flask, tenant_ids: list[str], event_ids: set[str]) -> int:
    """Handlings of these events not yet done, over the tenants."""
    owed = 0
    with app.app_context():
        for tenant_id in tenant_ids:
            with tenant_scope(tenant_id):
                owed += db.session.scalar(
                    select(func.count())
                    .select_from(EventHandling)
                    .where(EventHandling.handled_at.is_(None))
                    .where(EventHandling.event_id.in_(event_ids))
                )
        db.session.remove()
    return owed


def wait_for_workers(
    app: Flask, tenant_ids: list[str], workers: subprocess.Popen, seconds: float
) -> float:
    """One event per tenant, handled: the workers are up and connected (and each tenant's
    schema is warm in their connections). Returns how long that took."""
    started = time.perf_counter()
    with app.app_context():
        warm = {record(tenant_id, -1 - index) for index, tenant_id in enumerate(tenant_ids)}
        db.session.remove()
    while pending(app, tenant_ids, warm):
        if workers.poll() is not None:
            raise SystemExit(
                f"workers exited with {workers.returncode}; see {LOG_DIR}/{WORKER_LOG}.log"
            )
        if time.perf_counter() - started > seconds:
            raise SystemExit(
                f"nothing handled within {seconds:.0f} s; see {LOG_DIR}/{WORKER_LOG}.log"
            )
        time.sleep(0.05)
    return time.perf_counter() - started


def drain(app: Flask, tenant_ids: list[str], event_ids: set[str], seconds: float) -> float:
    """Wait until every handling of the load is done, or `seconds` passed; how long it took."""
    started = time.perf_counter()
    while pending(app, tenant_ids, event_ids) and time.perf_counter() - started < seconds:
        time.sleep(0.1)
    return time.perf_counter() - started


# --- the figures ----------------------------------------------------------------------------


@dataclass
class Handlings:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    pending: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    retried: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    errors: set[str] = field(default_factory=set)


def read_handlings(app: Flask, tenant_ids: list[str], event_ids: set[str]) -> Handlings:
    """Every handling of the load's events, from each tenant's outbox."""
    found = Handlings()
    with app.app_context():
        for tenant_id in tenant_ids:
            with tenant_scope(tenant_id):
                rows = db.session.execute(
                    select(
                        EventHandling.event_id,
                        EventHandling.subscriber,
                        EventHandling.attempts,
                        EventHandling.last_error,
                        EventHandling.handled_at,
                        Event.created_at,
                    ).join(Event, Event.id == EventHandling.event_id)
                ).all()
            for event_id, name, attempts, last_error, handled_at, created_at in rows:
                if event_id not in event_ids:
                    continue  # a warm-up event
                if handled_at is None:
                    found.pending[name] += 1
                else:
                    found.latencies[name].append((handled_at - created_at).total_seconds())
                if attempts > 1 or last_error:
                    found.retried[name] += 1
                if last_error:
                    found.errors.add(f"{name}: {last_error}")
        db.session.remove()
    return found


def figures(samples: list[float]) -> str:
    if len(samples) < 2:
        return "too few samples"
    return (
        f"p50 {percentile_ms(samples, 50):7.1f}   p95 {percentile_ms(samples, 95):7.1f}"
        f"   p99 {percentile_ms(samples, 99):7.1f}   max {max(samples) * 1000:7.1f} ms"
    )


@dataclass
class Cpu:
    """CPU seconds over the load and its drain: the workers' group, and the whole machine."""

    workers: float
    machine: float
    wall: float


def report(
    load: Load, found: Handlings, drained_in: float, cpu: Cpu, args: argparse.Namespace
) -> None:
    recorded = len(load.event_ids)
    achieved = recorded / load.produced_in if load.produced_in else 0.0
    every = [latency for samples in found.latencies.values() for latency in samples]
    done, owed = len(every), sum(found.pending.values())
    print(
        f"\nevents recorded  {recorded} in {load.produced_in:.1f} s: {achieved:.1f} events/s"
        f" achieved (asked {args.rate:g}; producer at worst {load.behind * 1000:.0f} ms behind"
        f" schedule; record + commit {figures(load.commits)})"
    )
    print(
        f"events queue     dispatch jobs waiting: at most {load.queued_at_most} during the load,"
        f" {load.queued_at_end} when it stopped"
    )
    print(
        f"handlings        {done} done, {owed} pending after {drained_in:.1f} s of drain"
        f" (up to {args.drain:g} s); {sum(found.retried.values())} retried"
    )
    print(f"latency          event created → handled, {done} handlings")
    names = sorted(set(found.latencies) | set(found.pending))
    width = max(len("overall"), *(len(name) for name in names))
    print(f"  {'overall':<{width}} {figures(every)}")
    for name in names:
        samples = found.latencies.get(name, [])
        print(
            f"  {name:<{width}} {figures(samples)}"
            f"   ({len(samples)} done, {found.pending[name]} pending)"
        )
    if cpu.wall and cpu.machine:
        cores = os.cpu_count() or 1
        print(
            f"CPU              workers {cpu.workers:.1f} s"
            f" ({cpu.workers * 1000 / max(recorded, 1):.1f} ms per event);"
            f" machine busy {cpu.machine / (cpu.wall * cores):.0%} of {cores} cores over the"
            f" load and drain (this run and anything else on the machine;"
            f" load average {os.getloadavg()[0]:.1f})"
        )
    for error in sorted(found.errors)[:5]:
        print(f"  last error         {error}")
    p99 = percentile_ms(every, 99) if len(every) >= 2 else float("inf")
    met = owed == 0 and p99 < TARGET_P99_MS and achieved >= TARGET_RATE * 0.95
    print(
        f"target: p99 < {TARGET_P99_MS} ms at {TARGET_RATE} events/s:"
        f" {'met' if met else 'NOT met'}"
        f" (p99 {p99:.1f} ms at {achieved:.1f} events/s, {owed} pending)"
    )


# --- the run --------------------------------------------------------------------------------


def sign_up_tenants(app: Flask, count: int) -> list[str]:
    run = secrets.token_hex(4)
    with app.app_context():
        plan = roomiest_plan()
        with unit_of_work():
            tenant_ids = [
                sign_up(
                    f"Outbox Bench {number}",
                    f"outbox-{number}-{run}@bench.example",
                    "s3cure-Passw0rd",
                    plan=plan,
                ).tenant.id
                for number in range(count)
            ]
        db.session.remove()
    return tenant_ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="events/s, over all tenants")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the load")
    parser.add_argument("--workers", type=int, default=2, help="`lango worker --processes`")
    parser.add_argument("--tenants", type=int, default=3, help="tenants the events go to")
    parser.add_argument(
        "--drain", type=float, default=20.0, help="seconds to wait for the last handlings"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, raise_on_sigterm)

    tenant_ids: list[str] = []
    redis_url = ""
    try:
        with (
            servers() as (server_url, redis_url),
            fresh_database(server_url, prefix="lango_bench_outbox") as database_url,
        ):
            lango_env = {
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "SECRET_KEY": SECRET_KEY,
                "ENCRYPTION_KEYS": ENCRYPTION_KEY,
                "LANGO_ENV": "production",
                "LOG_LEVEL": "WARNING",
            }
            app = create_app(lango_env)
            with app.app_context():
                upgrade_public()
                db.session.remove()
                registered = subscribers()
            tenant_ids.extend(sign_up_tenants(app, args.tenants))
            wanting = [s.name for s in registered.values() if s.wants(EventType.PAYMENT_SUCCEEDED)]
            print(
                f"{os.cpu_count()} CPUs; lango worker --processes {args.workers};"
                f" {args.rate:g} events/s for {args.seconds:g} s over {args.tenants} tenants"
            )
            print(
                f"subscribers registered: {', '.join(registered) or 'none'};"
                f" wanting payment.succeeded: {', '.join(wanting) or 'none'}",
                flush=True,
            )
            with worker_processes(args.workers, {**os.environ, **lango_env}) as workers:
                took = wait_for_workers(app, tenant_ids, workers, 60)
                print(f"workers up (warm-up events handled after {took:.1f} s)", flush=True)
                machine, worker_cpu = cpu_now(workers.pid)
                started = time.perf_counter()
                load = produce(app, tenant_ids, args.rate, args.seconds)
                drained_in = drain(app, tenant_ids, load.event_ids, args.drain)
                machine_after, worker_cpu_after = cpu_now(workers.pid)
                cpu = Cpu(
                    worker_cpu_after - worker_cpu,
                    machine_after - machine,
                    time.perf_counter() - started,
                )
                found = read_handlings(app, tenant_ids, load.event_ids)
            report(load, found, drained_in, cpu, args)
            with app.app_context():
                db.session.remove()
                db.engine.dispose()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    finally:
        if redis_url and tenant_ids:
            forget_run_jobs(redis_url, tenant_ids)


if __name__ == "__main__":
    main()
