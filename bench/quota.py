"""What the push quota costs: STK pushes/s with quota enforcement on vs. off, same run.

Measures the push's own database work, not Daraja: in this process, N threads (each with
its own app context, so its own session and pooled connection) call
payments.service.initiate_push in a loop (each push one `tenant_unit_of_work`, as a request
is one unit), with `daraja_client` replaced by a stub that accepts every push at once (no
HTTP, no Redis). Both of initiate_push's
transactions run as in production: the pending push row plus the quota (committed together),
then the Daraja ids. "on" is billing.quota.reserve as shipped (subscription FOR SHARE, the
counter's conditional UPDATE, the usage record); "off" is the same code with reserve replaced
by a no-op. Same process, same database, same tenants, interleaved on/off, off/on over
--rounds so drift (table growth, caches, autovacuum) falls on both alike.

- 1 tenant: every push updates the same counter row (all contention on one row lock, held
  from the UPDATE to COMMIT);
- 100 tenants: pushes go round-robin over them, one counter each.

Prints pushes/s, p50/p99 per push, CPU ms per push (this process, and the PostgreSQL
backends of the bench database when /proc shows them), and the ratio on/off per
configuration. After every "on" run it checks exactness per tenant: counter = usage records
(each bound to an existing push) = pushes made with the quota on; and every push is stored.

    .venv/bin/python bench/quota.py [--pushes 2000] [--threads 8,16] [--tenants 1,100]

Tenants are signed up on a bench plan (test mode, an allowance no run reaches), so nothing
is refused. Uses DATABASE_URL / REDIS_URL when set, else the embedded servers under
.lango/bench. Works in a database of its own, created here and dropped at the end. In Redis
it leaves only what every push leaves: fraud screening's velocity counters, which expire.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

# The project from its root, ahead of this folder (bench/tenants.py shadows `tenants`).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from cryptography.fernet import Fernet
from flask import Flask
from sqlalchemy import text

import payments.service
from bench.harness import database_name, fresh_database, servers
from core import create_app
from core.cli import upgrade_public
from core.extensions import db
from core.tenancy import tenant_scope
from core.unit_of_work import tenant_unit_of_work, unit_of_work
from payments.daraja import StkPushAccepted
from payments.service import PushRequest, initiate_push
from tenants.service import Caller, sign_up

SECRET_KEY = secrets.token_urlsafe(48)
ENCRYPTION_KEY = Fernet.generate_key().decode()
BENCH_PLAN = "bench_quota"
# Test-mode allowance of the bench plan: a real cap (the UPDATE still compares) no run reaches.
BENCH_ALLOWANCE = 2_000_000_000
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# --- CPU (Linux /proc) --------------------------------------------------------------------


def postgres_cpu(database: str) -> dict[int, float] | None:
    """CPU seconds so far of each PostgreSQL backend serving `database` (by pid), read from
    /proc; None where /proc shows none (another host, another OS)."""
    found: dict[int, float] = {}
    try:
        pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return None
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
            if not stat[stat.index("(") + 1 : stat.rindex(")")].startswith("postgres"):
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
            if f" {database} " not in cmdline:
                continue
            rest = stat[stat.rindex(")") + 2 :].split()
            found[int(pid)] = (int(rest[11]) + int(rest[12])) / CLOCK_TICKS
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
    return found or None


def machine_cpu() -> float | None:
    """CPU seconds the whole machine has used (all but idle and iowait), from /proc/stat."""
    try:
        with open("/proc/stat") as handle:
            ticks = [int(value) for value in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS


# --- tenants ------------------------------------------------------------------------------


def create_bench_plan() -> None:
    """A free, test-only plan whose allowance no run reaches."""
    db.session.execute(
        text(
            "INSERT INTO public.plans (code, name, monthly_price, included_pushes, "
            "overage_price, rate_limit, max_webhook_endpoints, livemode_allowed, "
            "test_allowance, stripe_plan_id, active, position) VALUES (:code, 'Bench', 0, 0, "
            "NULL, '100000 per second', 1, false, :allowance, NULL, true, 999)"
        ),
        {"code": BENCH_PLAN, "allowance": BENCH_ALLOWANCE},
    )


def sign_up_tenants(app: Flask, count: int, run: str) -> list[str]:
    """`count` tenants on the bench plan, signed up as customers are (schema at head,
    subscription), four at a time."""

    def one(number: int) -> str:
        with app.app_context(), unit_of_work():
            signed_up = sign_up(
                f"Quota Bench {number}",
                f"owner{number}-{run}@bench.example",
                "s3cure-Passw0rd",
                plan=BENCH_PLAN,
            )
            return signed_up.tenant.id

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, range(count)))


# --- the pushes -----------------------------------------------------------------------------


class StubDaraja:
    """Daraja accepting every push at once: no HTTP, no token, no Redis."""

    def stk_push(self, **_arguments) -> StkPushAccepted:
        suffix = secrets.token_hex(10)
        return StkPushAccepted(
            merchant_request_id=f"bench-{suffix}",
            checkout_request_id=f"ws_CO_bench_{suffix}",
            response_code="0",
            response_description="Success. Request accepted for processing",
            customer_message="Success. Request accepted for processing",
        )


def no_reserve(tenant_id: str, livemode: bool, stk_push_id: str) -> None:
    """The quota off: billing.quota.reserve's signature, doing nothing."""


def push_request(rng: random.Random, number: int) -> PushRequest:
    return PushRequest(
        phone_number=f"2547{rng.randrange(10**8):08d}",
        amount=rng.randint(1, 5000),
        account_reference=f"Q{number}"[:12],
        description="Bench order",
        metadata={},
    )


@dataclass
class Phase:
    """One timed run: `pushes` pushes spread over the threads."""

    wall: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, successful pushes only
    errors: Counter = field(default_factory=Counter)
    made: Counter = field(default_factory=Counter)  # successful pushes per tenant
    cpu_self: float = 0.0
    cpu_postgres: float | None = None
    cpu_machine: float | None = None

    def add(self, other: Phase) -> None:
        self.wall += other.wall
        self.latencies += other.latencies
        self.errors += other.errors
        self.made += other.made
        self.cpu_self += other.cpu_self
        if other.cpu_postgres is not None:
            self.cpu_postgres = (self.cpu_postgres or 0.0) + other.cpu_postgres
        if other.cpu_machine is not None:
            self.cpu_machine = (self.cpu_machine or 0.0) + other.cpu_machine

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


def run_pushes(
    app: Flask, tenant_ids: list[str], pushes: int, threads: int, database: str
) -> Phase:
    """`pushes` calls of initiate_push by `threads` threads, push n for tenant n mod len;
    timed from the moment every thread is ready until the last one is done."""
    lock = threading.Lock()
    ready = threading.Barrier(threads + 1)
    phase = Phase()
    next_number = 0

    def worker(seed: int) -> None:
        nonlocal next_number
        rng = random.Random(seed)
        latencies: list[float] = []
        errors: Counter = Counter()
        made: Counter = Counter()
        with app.app_context():
            ready.wait()
            while True:
                with lock:
                    number = next_number
                    next_number += 1
                if number >= pushes:
                    break
                tenant_id = tenant_ids[number % len(tenant_ids)]
                caller = Caller(tenant_id, key_id="key_bench", livemode=False, live_enabled=False)
                request = push_request(rng, number)
                started = time.perf_counter()
                try:
                    with tenant_unit_of_work(tenant_id):
                        initiate_push(caller, request)
                except Exception as error:
                    errors[f"{type(error).__name__}: {str(error)[:120]}"] += 1
                    continue
                latencies.append(time.perf_counter() - started)
                made[tenant_id] += 1
        with lock:
            phase.latencies += latencies
            phase.errors += errors
            phase.made += made

    workers = [
        threading.Thread(target=worker, args=(random.randrange(2**32),), daemon=True)
        for _ in range(threads)
    ]
    for thread in workers:
        thread.start()
    ready.wait()
    postgres_before = postgres_cpu(database)
    machine_before = machine_cpu()
    cpu_before = time.process_time()
    started = time.perf_counter()
    for thread in workers:
        thread.join()
    phase.wall = time.perf_counter() - started
    phase.cpu_self = time.process_time() - cpu_before
    machine_after = machine_cpu()
    postgres_after = postgres_cpu(database)
    if machine_before is not None and machine_after is not None:
        phase.cpu_machine = machine_after - machine_before
    if postgres_before is not None and postgres_after is not None:
        # A backend that started meanwhile counts from 0; one that ended is not counted.
        phase.cpu_postgres = sum(
            seconds - postgres_before.get(pid, 0.0) for pid, seconds in postgres_after.items()
        )
    return phase


@contextmanager
def quota(enabled: bool) -> Iterator[None]:
    """initiate_push with billing.quota.reserve as shipped, or with a no-op in its place."""
    if enabled:
        yield
    else:
        with mock.patch.object(payments.service, "reserve_quota", no_reserve):
            yield


# --- exactness ------------------------------------------------------------------------------


@dataclass
class Exactness:
    checks: int = 0
    tenants: int = 0
    exact_tenants: int = 0
    counter: int = 0
    records: int = 0
    expected: int = 0
    pushes_stored: int = 0
    pushes_made: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return not self.problems


def check_exactness(
    app: Flask, tenant_ids: list[str], made_on: Counter, made_all: Counter
) -> Exactness:
    """Per tenant: counter = usage records bound to a stored push = pushes made with the
    quota on; and pushes stored = pushes made (on and off)."""
    result = Exactness(checks=1, tenants=len(tenant_ids))
    with app.app_context():
        for tenant_id in tenant_ids:
            with unit_of_work():  # a read, ended before the tenant scope begins
                counter = db.session.scalar(
                    text(
                        "SELECT coalesce(sum(used), 0) FROM public.usage_counters "
                        "WHERE tenant_id = :tenant_id AND NOT livemode"
                    ),
                    {"tenant_id": tenant_id},
                )
            with tenant_scope(tenant_id):
                records, bound, distinct, stored = db.session.execute(
                    text(
                        "SELECT (SELECT count(*) FROM usage_records),"
                        " (SELECT count(*) FROM usage_records r"
                        "  JOIN stk_pushes p ON p.id = r.stk_push_id),"
                        " (SELECT count(DISTINCT stk_push_id) FROM usage_records),"
                        " (SELECT count(*) FROM stk_pushes)"
                    )
                ).one()
            expected, made = made_on[tenant_id], made_all[tenant_id]
            result.counter += counter
            result.records += records
            result.expected += expected
            result.pushes_stored += stored
            result.pushes_made += made
            if counter == records == bound == distinct == expected and stored == made:
                result.exact_tenants += 1
            else:
                result.problems.append(
                    f"{tenant_id}: counter {counter}, usage records {records} ({bound} bound "
                    f"to a push, {distinct} distinct), pushes made with quota {expected}; "
                    f"pushes stored {stored} of {made} made"
                )
    return result


def merge(total: Exactness | None, check: Exactness) -> Exactness:
    """The latest figures, every check counted, every problem kept."""
    if total is None:
        return check
    check.checks += total.checks
    check.problems = total.problems + check.problems
    return check


# --- the run --------------------------------------------------------------------------------


@dataclass
class Row:
    tenants: int
    threads: int
    on: Phase
    off: Phase


def fmt_ms(value: float) -> str:
    return f"{value:8.2f}" if value == value else f"{'-':>8}"


def cpu_columns(phase: Phase) -> str:
    """CPU ms per push (this process, PostgreSQL); how busy this process was, in % of one
    core (near 100 % the run is bound by the interpreter's GIL, not by PostgreSQL); and the
    share of the machine's CPU used by anything else meanwhile (other load skews figures)."""
    if not phase.ok or not phase.wall:
        return f"{'-':>6} {'-':>6} {'-':>6} {'-':>6}"
    own = f"{phase.cpu_self * 1000 / phase.ok:6.2f}"
    pg = "-" if phase.cpu_postgres is None else f"{phase.cpu_postgres * 1000 / phase.ok:.2f}"
    other = "-"
    if phase.cpu_machine is not None:
        ours = phase.cpu_self + (phase.cpu_postgres or 0.0)
        other = f"{max(phase.cpu_machine - ours, 0.0) / (phase.wall * (os.cpu_count() or 1)):.0%}"
    return f"{own} {pg:>6} {phase.cpu_self / phase.wall:6.0%} {other:>6}"


def print_table(rows: list[Row]) -> None:
    print(
        f"  {'tenants':>7} {'threads':>7}  {'quota':<6} {'pushes':>6} {'pushes/s':>9}"
        f" {'p50 ms':>8} {'p99 ms':>8}   {'CPU ms/push':>13} {'python':>6} {'other':>6}"
    )
    print(
        f"  {'':>7} {'':>7}  {'':<6} {'':>6} {'':>9} {'':>8} {'':>8}   {'python':>6}"
        f" {'pg':>6} {'busy':>6} {'load':>6}"
    )
    for row in rows:
        for label, phase in (("on", row.on), ("off", row.off)):
            print(
                f"  {row.tenants:>7} {row.threads:>7}  {label:<6} {phase.ok:>6}"
                f" {phase.rate:9.1f} {fmt_ms(phase.percentile_ms(50))}"
                f" {fmt_ms(phase.percentile_ms(99))}   {cpu_columns(phase)}"
            )
        if row.on.ok and row.off.ok:
            print(
                f"  {'':>7} {'':>7}  {'on/off':<6} {'':>6} {row.on.rate / row.off.rate:9.3f}"
                f" {row.on.percentile_ms(50) / row.off.percentile_ms(50):8.2f}"
                f" {row.on.percentile_ms(99) / row.off.percentile_ms(99):8.2f}"
            )
        for phase in (row.on, row.off):
            for error, count in phase.errors.most_common(5):
                print(f"    {count} failed: {error}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=2000, help="pushes per configuration")
    parser.add_argument("--threads", default="8,16", help="thread counts, comma-separated")
    parser.add_argument("--tenants", default="1,100", help="tenant counts, comma-separated")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="on/off interleaving: the pushes of each configuration are split over this many"
        " rounds, ordered on,off then off,on, …",
    )
    parser.add_argument("--warmup", type=int, default=200, help="untimed pushes per tenant set")
    args = parser.parse_args()
    thread_counts = [int(value) for value in args.threads.split(",") if value.strip()]
    tenant_counts = [int(value) for value in args.tenants.split(",") if value.strip()]
    rounds = max(1, args.rounds)
    if args.pushes < rounds:
        raise SystemExit("--pushes must be at least --rounds")

    run = secrets.token_hex(4)
    rows: list[Row] = []
    exactness: dict[int, Exactness] = {}
    with (
        servers() as (server_url, redis_url),
        fresh_database(server_url, prefix="lango_bench_quota") as url,
    ):
        database = database_name(url)
        with psycopg.connect(url) as connection:
            version = connection.execute("SHOW server_version").fetchone()[0]
            commit_mode = connection.execute("SHOW synchronous_commit").fetchone()[0]
        app = create_app(
            {
                "DATABASE_URL": url,
                "REDIS_URL": redis_url,
                "SECRET_KEY": SECRET_KEY,
                "ENCRYPTION_KEYS": ENCRYPTION_KEY,
                "LANGO_ENV": "production",
                "LOG_LEVEL": "WARNING",
                # A pooled connection per thread and a few spare: no connects while timed.
                "DB_POOL_SIZE": str(max(thread_counts) + 2),
            }
        )
        with app.app_context():
            upgrade_public()
            with unit_of_work():
                create_bench_plan()
            db.session.remove()
        started = time.perf_counter()
        tenant_sets = {
            count: sign_up_tenants(app, count, f"{run}-{count}") for count in tenant_counts
        }
        print(
            f"PostgreSQL {version} (synchronous_commit {commit_mode}), {os.cpu_count()} CPUs; "
            f"{sum(tenant_counts)} tenants signed up in {time.perf_counter() - started:.1f} s"
        )
        print(
            f"initiate_push in-process with a stub Daraja (no HTTP), test mode, plan "
            f"{BENCH_PLAN} (allowance {BENCH_ALLOWANCE:,}); {args.pushes} pushes per "
            f"configuration in {rounds} round(s) alternating on/off; warm-up {args.warmup} "
            "per tenant set",
            flush=True,
        )

        with mock.patch.object(payments.service, "daraja_client", lambda _: StubDaraja()):
            for count, tenant_ids in tenant_sets.items():
                made_on: Counter = Counter()
                made_all: Counter = Counter()
                # Warm-up, quota on: pool connections, caches, each tenant's counter row.
                warm = run_pushes(app, tenant_ids, args.warmup, max(thread_counts), database)
                made_on += warm.made
                made_all += warm.made
                for threads in thread_counts:
                    row = Row(count, threads, Phase(), Phase())
                    for number in range(rounds):
                        share = args.pushes // rounds + (number < args.pushes % rounds)
                        order = (True, False) if number % 2 == 0 else (False, True)
                        for enabled in order:
                            with quota(enabled):
                                phase = run_pushes(app, tenant_ids, share, threads, database)
                            (row.on if enabled else row.off).add(phase)
                            made_all += phase.made
                            if enabled:
                                made_on += phase.made
                                exactness[count] = merge(
                                    exactness.get(count),
                                    check_exactness(app, tenant_ids, made_on, made_all),
                                )
                    rows.append(row)
                    print(
                        f"  done: {count} tenant(s), {threads} threads "
                        f"(on {row.on.rate:.0f}/s, off {row.off.rate:.0f}/s)",
                        flush=True,
                    )
        with app.app_context():
            db.session.remove()
            db.engine.dispose()

    print()
    print_table(rows)
    print(
        "  python busy: this process's CPU in % of one core (near 100 %: bound by the GIL);"
        " other load: the machine's CPU used by anything else meanwhile"
    )
    print()
    print(
        "Exactness, checked after every 'on' run (counter = usage records, each bound to a "
        "stored push, = pushes made with the quota on; pushes stored = pushes made):"
    )
    for count, check in exactness.items():
        verdict = "exact" if check.exact else "NOT EXACT"
        print(
            f"  {count:>4} tenant(s): {verdict} in {check.checks} checks; at the end "
            f"{check.exact_tenants}/{check.tenants} tenants exact, counters {check.counter:,} ="
            f" records {check.records:,} = pushes with quota {check.expected:,}; pushes "
            f"stored {check.pushes_stored:,} of {check.pushes_made:,} made"
        )
        for problem in check.problems[:10]:
            print(f"    {problem}")
    if any(not check.exact for check in exactness.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
