"""What fraud screening and the audit log cost: screen() latency, audit append rate.

1. Screening: one tenant on plan 'scale', the default fraud rules (as migrated), and the
   velocity counters pre-populated for --phones distinct phones (one
   compliance.velocity.record_attempt each, as screen() itself counts an attempt). Then
   --screens calls of compliance.fraud.screen on phones drawn at random from that set, one
   at a time in this process, each in a unit of work of its own (its end untimed). Prints
   p50/p99/max in ms and the outcomes.
2. Audit: --writers threads, each with its own app context (own session and connection),
   each appending --appends entries via compliance.audit.record (system actor) to the
   tenant's chain, each in a unit of work of its own; all appends serialise on that chain's
   head row (other tenants' chains are not touched). Prints entries/s and p50/p99/max per
   append (record + commit), then walks every chain with
   compliance.audit_chain.verify_chain (what `lango audit verify` runs) and prints ok/BROKEN.

    .venv/bin/python bench/screening.py [--phones 10000] [--screens 2000]
                                        [--writers 8] [--appends 250]

Uses DATABASE_URL / REDIS_URL when set, else the embedded servers under .lango/bench. Works
in a database of its own, created here and dropped at the end; deletes the velocity keys it
wrote to Redis (test mode) at the end. Figures only; nothing is asserted.
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
from datetime import UTC, datetime
from pathlib import Path

# The project from its root, ahead of this folder (bench/tenants.py shadows `tenants`).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from cryptography.fernet import Fernet
from flask import Flask

from bench.harness import fresh_database, servers
from compliance import velocity
from compliance.audit import SYSTEM, AuditAction, record
from compliance.audit_chain import configured_checkpoint_dir, verify_chain
from compliance.audit_keys import current_key_ring
from compliance.fraud import ScreenedPush, active_rules, invalidate_rules, screen
from core import create_app
from core.cli import upgrade_public
from core.extensions import db
from core.ids import new_id
from core.unit_of_work import unit_of_work
from tenants.service import sign_up

SECRET_KEY = secrets.token_urlsafe(48)
ENCRYPTION_KEY = Fernet.generate_key().decode()


def percentile_ms(values: list[float], percent: int) -> float:
    # Not bench.harness's: NaN rather than an error below two samples (--screens 1, say),
    # so a tiny run still prints all its figures.
    if len(values) < 2:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[percent - 1] * 1000


def summary(values: list[float]) -> str:
    return (
        f"p50 {percentile_ms(values, 50):.3f} ms, p99 {percentile_ms(values, 99):.3f} ms, "
        f"max {max(values) * 1000:.3f} ms"
        if values
        else "no samples"
    )


# --- screening ------------------------------------------------------------------------------


def populate_counters(app: Flask, tenant_id: str, phones: list[str]) -> None:
    """One counted attempt per phone, as screen() records it."""
    redis = app.extensions["lango.redis"]
    now = datetime.now(UTC)
    for phone in phones:
        velocity.record_attempt(
            redis,
            attempt_id=new_id("att"),
            tenant_id=tenant_id,
            phone=phone,
            amount=random.randint(1, 5000),
            livemode=False,
            now=now,
        )


def time_screening(
    app: Flask, tenant_id: str, phones: list[str], count: int
) -> tuple[list[float], Counter]:
    rng = random.Random(7)
    latencies: list[float] = []
    outcomes: Counter = Counter()
    with app.app_context():
        # Each screening is its own unit of work, as each push's request is (timed without
        # the unit's end).
        invalidate_rules()
        with unit_of_work():
            rules = active_rules()
        print(f"  {len(rules)} enabled rules")
        for _ in range(50):  # warm-up: connection, script load, rule cache
            with unit_of_work():
                screen(tenant_id, ScreenedPush(rng.choice(phones), 100, False))
        for _ in range(count):
            push = ScreenedPush(rng.choice(phones), rng.randint(1, 5000), False)
            with unit_of_work():
                started = time.perf_counter()
                decision = screen(tenant_id, push)
                latencies.append(time.perf_counter() - started)
            outcomes[
                decision.outcome.value + (f" ({decision.rule_id})" if decision.rule_id else "")
            ] += 1
        db.session.remove()
    return latencies, outcomes


def delete_counters(app: Flask, tenant_id: str, phones: list[str]) -> None:
    redis = app.extensions["lango.redis"]
    keys = [
        f"fraud:test:phone:{p}:{kind}" for p in phones for kind in ("pushes", "tenants", "cancels")
    ]
    keys += list(redis.scan_iter(match=f"fraud:test:tenant:{tenant_id}:volume:*"))
    for start in range(0, len(keys), 1000):
        redis.unlink(*keys[start : start + 1000])


# --- audit ----------------------------------------------------------------------------------


def time_audit(
    app: Flask, tenant_id: str, writers: int, appends: int
) -> tuple[float, list[float], Counter]:
    ready = threading.Barrier(writers + 1)
    lock = threading.Lock()
    latencies: list[float] = []
    errors: Counter = Counter()

    def worker(number: int) -> None:
        mine: list[float] = []
        failed: Counter = Counter()
        with app.app_context():
            with unit_of_work():
                db.session.connection()  # a pooled connection before the clock starts
            ready.wait()
            for index in range(appends):
                started = time.perf_counter()
                try:
                    with unit_of_work():  # an audited change's own transaction, committed
                        record(
                            AuditAction.FRAUD_RULE_CHANGED,
                            target_type="bench",
                            target_id=f"w{number}-{index}",
                            tenant_id=tenant_id,
                            diff={"after": {"writer": number, "index": index}},
                            actor=SYSTEM,
                        )
                except Exception as error:
                    failed[f"{type(error).__name__}: {str(error)[:120]}"] += 1
                    continue
                mine.append(time.perf_counter() - started)
            db.session.remove()
        with lock:
            latencies.extend(mine)
            errors.update(failed)

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(writers)]
    for thread in threads:
        thread.start()
    ready.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phones", type=int, default=10_000, help="distinct phones counted")
    parser.add_argument("--screens", type=int, default=2000, help="timed screen() calls")
    parser.add_argument("--writers", type=int, default=8, help="concurrent audit writers")
    parser.add_argument("--appends", type=int, default=250, help="audit entries per writer")
    args = parser.parse_args()

    run = secrets.token_hex(4)
    with (
        servers() as (server_url, redis_url),
        fresh_database(server_url, prefix="lango_bench_screening") as url,
    ):
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
                "DB_POOL_SIZE": str(args.writers + 2),
            }
        )
        with app.app_context():
            upgrade_public()
            with unit_of_work():
                tenant_id = sign_up(
                    "Screening Bench", f"owner-{run}@bench.example", "s3cure-Passw0rd", plan="scale"
                ).tenant.id
            db.session.remove()
        print(
            f"PostgreSQL {version} (synchronous_commit {commit_mode}), {os.cpu_count()} CPUs; "
            f"tenant {tenant_id} on plan scale"
        )

        phones = [f"2547{n:08d}" for n in random.Random(run).sample(range(10**8), args.phones)]
        try:
            started = time.perf_counter()
            populate_counters(app, tenant_id, phones)
            print(
                f"Screening: velocity counters populated for {len(phones):,} phones in "
                f"{time.perf_counter() - started:.1f} s; {args.screens:,} screen() calls, "
                "test mode",
                flush=True,
            )
            latencies, outcomes = time_screening(app, tenant_id, phones, args.screens)
            print(f"  screen(): {summary(latencies)}")
            print("  outcomes: " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common()))
        finally:
            delete_counters(app, tenant_id, phones)

        print(
            f"Audit: {args.writers} writers x {args.appends} appends (record + commit each)",
            flush=True,
        )
        wall, appended, errors = time_audit(app, tenant_id, args.writers, args.appends)
        rate = len(appended) / wall if wall else 0.0
        print(f"  {len(appended):,} entries in {wall:.2f} s: {rate:,.0f} entries/s")
        print(f"  per append: {summary(appended)}")
        for error, count in errors.most_common(5):
            print(f"  {count} failed: {error}")
        with app.app_context():
            started = time.perf_counter()
            report = verify_chain(current_key_ring(), configured_checkpoint_dir())
            took = time.perf_counter() - started
            if report.ok:
                print(
                    f"  verify_chain: ok, {report.entries:,} entries in {report.chains} chains"
                    f" ({took:.2f} s)"
                )
            else:
                print(f"  verify_chain: BROKEN ({report.entries:,} entries walked)")
                for problem in report.problems:
                    print(f"    {problem.describe()}")
            db.session.remove()
            db.engine.dispose()


if __name__ == "__main__":
    main()
