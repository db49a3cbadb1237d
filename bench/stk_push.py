"""STK push throughput, printed (not asserted), beside the floor of the same stack:

1. `POST /v1/stk-pushes` (test mode) under gunicorn, against the Daraja sandbox run as its
   own process: requests/s, p50/p99. Each push also brings one callback from the sandbox
   to the same gunicorn while the load runs, as in production.
2. `POST /callbacks/mpesa/stk/<token>`: M pending pushes made here with known tokens, then
   one Daraja success callback each, fired concurrently: callbacks/s, p50/p99, and a check
   that every one of those pushes ended `succeeded`.
3. The floor: bench/floor_app.py (Flask + one INSERT) under the same gunicorn settings and
   the same load shape; then the ratios Lango/floor.

    .venv/bin/python bench/stk_push.py [--requests 2000] [--concurrency 16] [--web-workers 2]

Uses DATABASE_URL / REDIS_URL when set, else the embedded servers under .lango/bench. Works
in a database of its own, created here and dropped at the end; the Redis keys it made are
deleted at the end. Every process it starts runs in its own process group and is stopped
on the way out (Ctrl-C and errors included); their stderr goes to .lango/bench/logs/.

The tenant is signed up on the plan with the largest test allowance, so the push quota does
not cut the run; pushes carry an Idempotency-Key (--no-idempotency-key to drop it). Each
phase also prints CPU milliseconds per request by component (gunicorn, sandbox, PostgreSQL
backends of the bench database, redis-server, this load generator), read from /proc, and
how busy the whole machine was: numbers taken while something else loads the machine are
not comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

# The project from its root, ahead of this folder (bench/tenants.py shadows `tenants`).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
import requests
from cryptography.fernet import Fernet
from flask import Flask
from redis import Redis
from sqlalchemy import func, insert, select

from bench.harness import (
    BIN,
    LOG_DIR,
    database_name,
    free_port,
    fresh_database,
    gunicorn_args,
    raise_on_sigterm,
    roomiest_plan,
    servers,
    start_process_group,
    stop_process_group,
)
from core import create_app
from core.cli import upgrade_public
from core.extensions import db
from core.ids import new_id
from core.tenancy import tenant_scope
from core.unit_of_work import tenant_unit_of_work, unit_of_work
from payments.daraja import _digest
from payments.models import MpesaCallback, PushStatus, StkPush
from payments.service import callback_token, hash_token
from tenants.service import sign_up

SECRET_KEY = secrets.token_urlsafe(48)
ENCRYPTION_KEY = Fernet.generate_key().decode()
SANDBOX_CONSUMER_KEY = "lango_sandbox_key"
REQUEST_TIMEOUT = 30.0


# --- processes ------------------------------------------------------------------------


class Processes:
    """Child processes, each in its own session (process group), stopped as a group."""

    def __init__(self) -> None:
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, args: list[str], env: dict) -> subprocess.Popen:
        process = start_process_group(args, env, name)
        self.running[name] = process
        return process

    def wait_http(self, name: str, url: str, seconds: float = 60) -> None:
        """Until `url` answers anything over HTTP (the process is serving)."""
        process = self.running[name]
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise SystemExit(
                    f"{name} exited with {process.returncode}; see {LOG_DIR / name}.log"
                )
            try:
                requests.get(url, timeout=2)
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise SystemExit(f"{name} did not start in {seconds:.0f} s; see {LOG_DIR / name}.log")

    def stop(self, name: str) -> None:
        process = self.running.pop(name, None)
        if process is None:
            return
        stop_process_group(process, 15)

    def stop_all(self) -> None:
        for name in reversed(list(self.running)):
            self.stop(name)


# --- CPU accounting (Linux /proc) -------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
MACHINE = "(whole machine)"


def cpu_seconds(groups: dict[str, int], database: str) -> dict[tuple, float]:
    """CPU seconds used so far by each process of interest, keyed (component, pid, start):
    our process groups, the PostgreSQL backends serving our database, redis-server, this
    process (the load generator), and the whole machine (/proc/stat, idle excluded)."""
    found: dict[tuple, float] = {}
    try:
        pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
        with open("/proc/stat") as handle:
            # user nice system idle iowait irq softirq steal: all but idle and iowait.
            ticks = [int(value) for value in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return {}
    found[(MACHINE, 0, 0)] = (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS
    by_group = {pgid: name for name, pgid in groups.items()}
    me = os.getpid()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
            comm = stat[stat.index("(") + 1 : stat.rindex(")")]
            rest = stat[stat.rindex(")") + 2 :].split()
            pgid, used, started = int(rest[2]), int(rest[11]) + int(rest[12]), int(rest[19])
            if int(pid) == me:
                name = "load generator (this process)"
            elif pgid in by_group:
                name = by_group[pgid]
            elif comm.startswith("redis-server"):
                name = "redis-server"
            elif comm.startswith("postgres"):
                with open(f"/proc/{pid}/cmdline", "rb") as handle:
                    cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
                if f" {database} " not in cmdline:
                    continue
                name = "postgres backends"
            else:
                continue
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        found[(name, int(pid), started)] = used / CLOCK_TICKS
    return found


def cpu_used(before: dict[tuple, float], after: dict[tuple, float]) -> dict[str, float]:
    """CPU seconds by component between two readings. A process that exited in between
    (e.g. a PostgreSQL backend of a connection the pool closed) is not counted."""
    used: Counter[str] = Counter()
    for key, seconds in after.items():
        used[key[0]] += seconds - before.get(key, 0.0)
    return dict(used)


# --- load generator ---------------------------------------------------------------------


@dataclass
class LoadResult:
    label: str
    expect: int
    sent: int
    wall: float
    latencies: list[float]  # seconds, expected-status responses only
    outcomes: Counter = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.ok / self.wall if self.wall else 0.0

    def percentile_ms(self, percent: int) -> float:
        if len(self.latencies) < 2:
            return float("nan")
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[percent - 1] * 1000


def run_load(
    label: str,
    send: Callable[[requests.Session, int], requests.Response],
    *,
    count: int,
    concurrency: int,
    max_seconds: float,
    expect: int,
    cpu: Callable[[], dict[tuple, float]] = dict,
) -> LoadResult:
    """`count` requests (or as many as fit in `max_seconds`), `concurrency` at a time: a pool
    of threads, one requests.Session each, taking the next request number as they free up."""
    lock = threading.Lock()
    stop = threading.Event()
    next_number = 0
    latencies: list[float] = []
    outcomes: Counter = Counter()

    def worker() -> None:
        nonlocal next_number
        with requests.Session() as session:
            while not stop.is_set():
                with lock:
                    number = next_number
                    next_number += 1
                if number >= count or time.perf_counter() > deadline:
                    return
                started = time.perf_counter()
                try:
                    outcome = send(session, number).status_code
                except requests.RequestException as error:
                    outcome = type(error).__name__
                elapsed = time.perf_counter() - started
                with lock:
                    outcomes[outcome] += 1
                    if outcome == expect:
                        latencies.append(elapsed)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    cpu_before = cpu()
    started = time.perf_counter()
    deadline = started + max_seconds
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException:
        stop.set()
        raise
    wall = time.perf_counter() - started
    used = cpu_used(cpu_before, cpu())
    return LoadResult(label, expect, sum(outcomes.values()), wall, latencies, outcomes, used)


def print_result(result: LoadResult, unit: str) -> None:
    print(
        f"  {result.label:<34} {result.rate:8.1f} {unit}/s   p50 {result.percentile_ms(50):7.1f} ms"
        f"   p99 {result.percentile_ms(99):7.1f} ms   ({result.ok}/{result.sent} ok"
        f" in {result.wall:.1f} s)"
    )
    others = {key: value for key, value in result.outcomes.items() if key != result.expect}
    if others:
        print(f"    other outcomes: {dict(others)}")
    if result.cpu and result.ok:
        cpu = dict(result.cpu)
        machine = cpu.pop(MACHINE, 0.0)
        ours = sum(cpu.values())
        cores = os.cpu_count() or 1
        parts = ", ".join(
            f"{name} {seconds * 1000 / result.ok:.2f}"
            for name, seconds in sorted(cpu.items(), key=lambda item: -item[1])
            if seconds > 0
        )
        print(f"    CPU ms per request: {ours * 1000 / result.ok:.2f} ({parts})")
        print(
            f"    machine busy {machine / (result.wall * cores):.0%} of {cores} cores, of which"
            f" anything else (kernel, other processes) "
            f"{max(machine - ours, 0) / (result.wall * cores):.0%}"
        )


# --- the Lango side ---------------------------------------------------------------------


class Phones:
    """Valid 2547XXXXXXXX numbers, never the same twice in a run (the sandbox refuses a
    second push to a phone whose prompt is open) and none of its magic 25470000xxxx."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def take(self, count: int) -> list[str]:
        taken: list[str] = []
        while len(taken) < count:
            phone = f"2547{self.rng.randrange(10**8):08d}"
            if not phone.startswith("25470000") and phone not in self.used:
                self.used.add(phone)
                taken.append(phone)
        return taken


def push_bodies(phones: list[str], rng: random.Random, prefix: str) -> list[bytes]:
    return [
        json.dumps(
            {
                "phone_number": phone,
                "amount": rng.randint(1, 5000),
                "account_reference": f"{prefix}{number}"[:12],
                "description": "Bench order",
            }
        ).encode()
        for number, phone in enumerate(phones)
    ]


def push_sender(base_url: str, secret: str, bodies: list[bytes], idempotency: bool, run: str):
    url = f"{base_url}/v1/stk-pushes"

    def send(session: requests.Session, number: int) -> requests.Response:
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        if idempotency:
            headers["Idempotency-Key"] = f"bench-{run}-{number}"
        return session.post(url, data=bodies[number], headers=headers, timeout=REQUEST_TIMEOUT)

    return send


@dataclass(frozen=True)
class KnownPush:
    id: str
    token: str
    checkout_request_id: str
    phone: str
    amount: int


def create_known_pushes(app: Flask, tenant_id: str, phones: list[str], rng: random.Random):
    """Pending test-mode pushes whose callback tokens we hold (as initiate_push leaves them
    once Daraja accepted)."""
    now = datetime.now(UTC)
    stamp = now.strftime("%d%m%Y%H%M%S%f")[:17]
    pushes = [
        KnownPush(
            id=new_id("stk"),
            token=callback_token(tenant_id),
            checkout_request_id=f"ws_CO_{stamp}{number:09d}",
            phone=phone,
            amount=rng.randint(1, 5000),
        )
        for number, phone in enumerate(phones)
    ]
    rows = [
        {
            "id": push.id,
            "livemode": False,
            "status": PushStatus.PENDING,
            "phone_number": push.phone,
            "amount": push.amount,
            "account_reference": "BENCH",
            "description": "Bench order",
            "metadata_": {},
            "callback_token_hash": hash_token(push.token),
            "merchant_request_id": f"{rng.randrange(10**5)}-{rng.randrange(10**8)}-1",
            "checkout_request_id": push.checkout_request_id,
            "created_at": now,
            "updated_at": now,
        }
        for push in pushes
    ]
    with app.app_context():
        with tenant_unit_of_work(tenant_id):
            for start in range(0, len(rows), 500):
                db.session.execute(insert(StkPush), rows[start : start + 500])
        db.session.remove()
    return pushes


def success_callback(push: KnownPush, rng: random.Random) -> bytes:
    """Daraja's success callback (daraja.md §3.2), amount and phone matching the push."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    receipt = "TK" + "".join(rng.choice(alphabet) for _ in range(8))
    body = {
        "Body": {
            "stkCallback": {
                "MerchantRequestID": f"{rng.randrange(10**5)}-{rng.randrange(10**8)}-1",
                "CheckoutRequestID": push.checkout_request_id,
                "ResultCode": 0,
                "ResultDesc": "The service request is processed successfully.",
                "CallbackMetadata": {
                    "Item": [
                        {"Name": "Amount", "Value": float(push.amount)},
                        {"Name": "MpesaReceiptNumber", "Value": receipt},
                        {"Name": "Balance"},
                        {
                            "Name": "TransactionDate",
                            "Value": int(datetime.now(UTC).strftime("%Y%m%d%H%M%S")),
                        },
                        {"Name": "PhoneNumber", "Value": int(push.phone)},
                    ]
                },
            }
        }
    }
    return json.dumps(body).encode()


def callback_sender(base_url: str, pushes: list[KnownPush], bodies: list[bytes]):
    def send(session: requests.Session, number: int) -> requests.Response:
        return session.post(
            f"{base_url}/callbacks/mpesa/stk/{pushes[number].token}",
            data=bodies[number],
            headers={"Content-Type": "application/json"},
            timeout=REQUEST_TIMEOUT,
        )

    return send


def status_counts(app: Flask, tenant_id: str, ids: list[str] | None = None) -> Counter:
    with app.app_context(), tenant_scope(tenant_id):
        statement = select(StkPush.status, func.count()).group_by(StkPush.status)
        if ids is not None:
            statement = statement.where(StkPush.id.in_(ids))
        counts = Counter({status.value: n for status, n in db.session.execute(statement)})
        db.session.remove()
    return counts


def wait_settled(app: Flask, tenant_id: str, seconds: float) -> Counter:
    """Until no push of the tenant is pending (or `seconds` passed); the last counts."""
    deadline = time.monotonic() + seconds
    while True:
        counts = status_counts(app, tenant_id)
        if not counts.get("pending") or time.monotonic() > deadline:
            return counts
        time.sleep(0.25)


def unsucceeded(app: Flask, tenant_id: str, ids: list[str]) -> list[tuple]:
    with app.app_context(), tenant_scope(tenant_id):
        rows = db.session.execute(
            select(StkPush.id, StkPush.status, StkPush.flagged_reason).where(
                StkPush.id.in_(ids), StkPush.status != PushStatus.SUCCEEDED
            )
        ).all()
        outcomes = Counter(
            outcome
            for (outcome,) in db.session.execute(
                select(MpesaCallback.outcome).where(MpesaCallback.stk_push_id.in_(ids))
            )
        )
        db.session.remove()
    return [(row.id, row.status.value, row.flagged_reason) for row in rows], outcomes


def forget_run_keys(
    redis_url: str, sandbox_url: str, sandbox_prefix: str, key_ids: list[str]
) -> None:
    """Delete only what this run wrote to Redis: the sandbox's keys (this run's prefix),
    Lango's Daraja token and circuit for this run's sandbox URL (its port is this run's),
    and the rate limiter's windows for this run's API key."""
    token_id = _digest(sandbox_url + "\n" + SANDBOX_CONSUMER_KEY)
    patterns = [
        f"{sandbox_prefix}*",
        f"lango:daraja:token:{token_id}*",
        f"lango:daraja:circuit:{_digest(sandbox_url)}*",
        *(f"LIMITS*{key_id}*" for key_id in key_ids),
    ]
    try:
        redis = Redis.from_url(redis_url)
        for pattern in patterns:
            keys = list(redis.scan_iter(match=pattern, count=1000))
            for start in range(0, len(keys), 500):
                redis.delete(*keys[start : start + 500])
    except Exception as error:
        print(f"could not delete this run's Redis keys: {error}", file=sys.stderr)


# --- the run ------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="pushes (and floor requests)")
    parser.add_argument(
        "--callbacks", type=int, default=None, help="callbacks (default: --requests)"
    )
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument("--sandbox-workers", type=int, default=2, help="sandbox gunicorn workers")
    parser.add_argument(
        "--callback-delay", type=float, default=0.05, help="SANDBOX_CALLBACK_DELAY_SECONDS"
    )
    parser.add_argument("--max-seconds", type=float, default=60, help="time bound per phase")
    parser.add_argument(
        "--idempotency-key",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="send a fresh Idempotency-Key with each push (as a careful client does)",
    )
    args = parser.parse_args()
    callbacks = args.callbacks if args.callbacks is not None else args.requests
    signal.signal(signal.SIGTERM, raise_on_sigterm)

    run = secrets.token_hex(4)
    rng = random.Random()
    phones = Phones(rng)
    lango_port, sandbox_port, floor_port = free_port(), free_port(), free_port()
    lango_url = f"http://127.0.0.1:{lango_port}"
    sandbox_url = f"http://127.0.0.1:{sandbox_port}"
    floor_url = f"http://127.0.0.1:{floor_port}"
    sandbox_prefix = f"sandbox:bench-{run}:"
    processes = Processes()
    key_ids: list[str] = []
    try:
        with ExitStack() as stack:
            server_url, redis_url = stack.enter_context(servers())
            database_url = stack.enter_context(fresh_database(server_url, prefix="lango_bench_stk"))
            database = database_name(database_url)
            # Unwound first: processes stopped, this run's Redis keys deleted, before the
            # database is dropped and the servers stopped.
            stack.callback(forget_run_keys, redis_url, sandbox_url, sandbox_prefix, key_ids)
            stack.callback(processes.stop_all)
            with psycopg.connect(database_url, autocommit=True) as connection:
                version = connection.execute("SHOW server_version").fetchone()[0]
                connection.execute(
                    "CREATE TABLE bench_floor (id bigserial PRIMARY KEY, phone_number text,"
                    " amount bigint, account_reference text,"
                    " created_at timestamptz NOT NULL DEFAULT now())"
                )
            lango_env = {
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "SECRET_KEY": SECRET_KEY,
                "ENCRYPTION_KEYS": ENCRYPTION_KEY,
                "LANGO_ENV": "production",
                "LOG_LEVEL": "WARNING",
                "PUBLIC_BASE_URL": lango_url,
                "SANDBOX_BASE_URL": sandbox_url,
                "RATELIMIT_API_KEY": "100000 per second",
            }
            app = create_app(lango_env)
            with app.app_context():
                upgrade_public()
                with unit_of_work():
                    plan = roomiest_plan()
                    signed_up = sign_up(
                        "Bench Shop", f"owner-{run}@bench.example", "s3cure-Passw0rd", plan=plan
                    )
                tenant_id, secret = signed_up.tenant.id, signed_up.issued.secret
                key_ids.append(signed_up.issued.key.id)
                db.session.remove()

            child_env = {**os.environ, **lango_env}
            sandbox_env = {
                **child_env,
                "SANDBOX_REDIS_URL": redis_url,
                "SANDBOX_CALLBACK_DELAY_SECONDS": str(args.callback_delay),
                "SANDBOX_KEY_PREFIX": sandbox_prefix,
            }
            print(
                f"PostgreSQL {version}, {os.cpu_count()} CPUs; gunicorn --workers "
                f"{args.web_workers} --threads {args.threads}; concurrency {args.concurrency};"
                f" sandbox: {args.sandbox_workers} workers, callback delay "
                f"{args.callback_delay} s; Idempotency-Key "
                f"{'on' if args.idempotency_key else 'off'}; plan {plan or 'default'}",
                flush=True,
            )
            processes.start(
                "sandbox",
                [
                    str(BIN / "lango"),
                    "sandbox",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(sandbox_port),
                    "--workers",
                    str(args.sandbox_workers),
                ],
                sandbox_env,
            )
            processes.start(
                "lango",
                gunicorn_args("wsgi:app", lango_port, args.web_workers, args.threads),
                child_env,
            )
            processes.wait_http("sandbox", f"{sandbox_url}/oauth/v1/generate")
            processes.wait_http("lango", f"{lango_url}/healthz")

            def lango_cpu() -> dict[tuple, float]:
                groups = {
                    "lango web": processes.running["lango"].pid,
                    "sandbox": processes.running["sandbox"].pid,
                }
                return cpu_seconds(groups, database)

            # Warm-up: the OAuth token, every worker's first request and pool connections.
            warm = max(4 * args.web_workers * args.threads, 2 * args.concurrency)
            warm_bodies = push_bodies(phones.take(warm), rng, "WARM")
            warm_result = run_load(
                "warm-up",
                push_sender(lango_url, secret, warm_bodies, args.idempotency_key, f"{run}w"),
                count=warm,
                concurrency=args.concurrency,
                max_seconds=args.max_seconds,
                expect=202,
            )
            if warm_result.ok < warm:
                raise SystemExit(f"warm-up failed: {dict(warm_result.outcomes)}")

            # 1. Pushes.
            bodies = push_bodies(phones.take(args.requests), rng, "INV")
            pushes = run_load(
                "POST /v1/stk-pushes",
                push_sender(lango_url, secret, bodies, args.idempotency_key, run),
                count=args.requests,
                concurrency=args.concurrency,
                max_seconds=args.max_seconds,
                expect=202,
                cpu=lango_cpu,
            )
            print_result(pushes, "req")
            settled = wait_settled(app, tenant_id, 30)
            print(f"    pushes after their sandbox callbacks: {dict(sorted(settled.items()))}")

            # 2. Callbacks.
            known = create_known_pushes(app, tenant_id, phones.take(callbacks), rng)
            callback_bodies = [success_callback(push, rng) for push in known]
            ingested = run_load(
                "POST /callbacks/mpesa/stk/<token>",
                callback_sender(lango_url, known, callback_bodies),
                count=callbacks,
                concurrency=args.concurrency,
                max_seconds=args.max_seconds,
                expect=200,
                cpu=lango_cpu,
            )
            print_result(ingested, "cb")
            known_ids = [push.id for push in known]
            final = status_counts(app, tenant_id, known_ids)
            missing, outcomes = unsucceeded(app, tenant_id, known_ids)
            print(
                f"    those {len(known)} pushes now: {dict(sorted(final.items()))}; "
                f"callbacks stored: {dict(sorted(outcomes.items()))}"
            )
            for push_id, status, reason in missing[:10]:
                print(f"    NOT succeeded: {push_id} {status} {reason or ''}")
            if len(missing) > 10:
                print(f"    … and {len(missing) - 10} more not succeeded")
            processes.stop("lango")
            processes.stop("sandbox")

            # 3. The floor: same gunicorn settings, same load shape.
            processes.start(
                "floor",
                gunicorn_args("bench.floor_app:app", floor_port, args.web_workers, args.threads),
                {**os.environ, "DATABASE_URL": database_url},
            )
            processes.wait_http("floor", f"{floor_url}/")

            def floor_cpu() -> dict[tuple, float]:
                return cpu_seconds({"floor web": processes.running["floor"].pid}, database)

            floor_send = push_sender(floor_url, secret, bodies, args.idempotency_key, run)
            run_load(
                "warm-up",
                floor_send,
                count=warm,
                concurrency=args.concurrency,
                max_seconds=args.max_seconds,
                expect=202,
            )
            floor = run_load(
                "floor: Flask + 1 INSERT",
                floor_send,
                count=args.requests,
                concurrency=args.concurrency,
                max_seconds=args.max_seconds,
                expect=202,
                cpu=floor_cpu,
            )
            print_result(floor, "req")
            processes.stop("floor")

            print("Lango / floor:")
            if floor.ok and pushes.ok:
                print(
                    f"  requests/s  {pushes.rate:8.1f} / {floor.rate:8.1f}      = "
                    f"{pushes.rate / floor.rate:.3f}"
                )
                lango_p50, floor_p50 = pushes.percentile_ms(50), floor.percentile_ms(50)
                print(
                    f"  p50         {lango_p50:8.1f} / {floor_p50:8.1f} ms   = "
                    f"{lango_p50 / floor_p50:.1f}"
                )
    finally:
        processes.stop_all()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; every process this run started is stopped", file=sys.stderr)
        sys.exit(130)
