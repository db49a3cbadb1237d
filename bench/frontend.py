"""Dashboard pages for a tenant with 100,000 payments: time to first byte, printed (not
asserted).

Signs a tenant up, writes N test-mode payments into its schema with one INSERT … SELECT over
generate_series (spread over the last 90 days, mixed outcomes, ids that sort by creation like
real ULIDs; the billing period moved 20 days back, with usage records and the usage counter
for the pushes in it),
serves Lango under gunicorn, signs the owner in (a session cookie made with the app's own
signing key, as the sign-in page would leave it), then GETs each page --requests times, one
at a time, and prints p50/p95 of the time to first byte (the response headers: the pages
are rendered whole before the first byte leaves) and of the whole response:

    .venv/bin/python bench/frontend.py [--payments 100000] [--requests 200] [--explain]

Pages: the overview (/dashboard), the payments list (/dashboard/payments), the list
filtered by status, by an EAT date range, and its second page. `--explain` also prints
PostgreSQL's plans for the overview's and the list's queries.

Uses DATABASE_URL / REDIS_URL when set, else the embedded servers under .lango/bench. Works
in a database of its own, created here and dropped at the end; gunicorn is stopped on the way
out (Ctrl-C and errors included), its stderr in .lango/bench/logs/frontend-web.log.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

# The project from its root, ahead of this folder (bench/tenants.py shadows `tenants`).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
import requests
from cryptography.fernet import Fernet
from sqlalchemy import text

from bench.harness import (
    LOG_DIR,
    free_port,
    fresh_database,
    gunicorn_args,
    percentile_ms,
    raise_on_sigterm,
    roomiest_plan,
    servers,
    start_process_group,
    stop_process_group,
)
from billing.subscriptions import current_subscription
from core import create_app
from core.cli import upgrade_public
from core.extensions import db
from core.tenancy import tenant_scope
from core.unit_of_work import tenant_unit_of_work, unit_of_work
from payments import reports
from tenants.models import Member
from tenants.service import sign_up

SECRET_KEY = secrets.token_urlsafe(48)
ENCRYPTION_KEY = Fernet.generate_key().decode()
REQUEST_TIMEOUT = 60.0

# N payments in one statement. Ids: "stk_" + 10 Crockford base32 characters of the creation
# time in milliseconds (as a ULID starts) + 16 random hex characters (all valid Crockford
# characters), so they sort by creation like new_id's; outcomes 80% succeeded, 10% failed,
# 6% cancelled, 4% expired; phones from a pool of 20,000 customers.
INSERT_PAYMENTS = """
INSERT INTO stk_pushes (
    id, livemode, status, phone_number, amount, account_reference, description, metadata,
    callback_token_hash, merchant_request_id, checkout_request_id, mpesa_receipt_number,
    result_code, result_description, transaction_date, created_at, updated_at, resolved_at
)
SELECT
    'stk_' || (
        SELECT string_agg(
            substr('0123456789abcdefghjkmnpqrstvwxyz',
                   ((s.ms >> (5 * (9 - i))) & 31)::int + 1, 1), '' ORDER BY i)
        FROM generate_series(0, 9) AS i
    ) || substr(md5(s.n::text || :salt), 1, 16),
    false,
    s.status,
    '2547' || lpad(((s.n * 7919) % 20000)::text, 8, '0'),
    1 + (s.n * 37) % 5000,
    'INV' || s.n,
    'Bench order',
    '{}'::jsonb,
    md5('token' || s.n || :salt) || md5('hash' || s.n || :salt),
    'mr_' || s.n,
    'ws_CO_' || md5('checkout' || s.n || :salt),
    CASE WHEN s.status = 'succeeded' THEN upper(substr(md5('r' || s.n), 1, 10)) END,
    CASE s.status WHEN 'succeeded' THEN '0' WHEN 'failed' THEN '1'
                  WHEN 'cancelled' THEN '1032' ELSE '1019' END,
    CASE s.status WHEN 'succeeded' THEN 'The service request is processed successfully.'
                  WHEN 'failed' THEN 'The balance is insufficient for the transaction.'
                  WHEN 'cancelled' THEN 'Request cancelled by user'
                  ELSE 'Transaction has expired' END,
    CASE WHEN s.status = 'succeeded' THEN s.created_at + interval '4 seconds' END,
    s.created_at,
    s.created_at + interval '4 seconds',
    s.created_at + interval '4 seconds'
FROM (
    SELECT n, created_at,
           (floor(extract(epoch FROM created_at) * 1000))::bigint AS ms,
           CASE WHEN r < 0.80 THEN 'succeeded' WHEN r < 0.90 THEN 'failed'
                WHEN r < 0.96 THEN 'cancelled' ELSE 'expired' END AS status
    FROM (
        SELECT n, now() - random() * interval '90 days' - interval '10 minutes' AS created_at,
               random() AS r
        FROM generate_series(1, :count) AS n
    ) AS raw
) AS s
"""

INSERT_USAGE = """
INSERT INTO usage_records (id, stk_push_id, livemode, period_start, created_at)
SELECT 'ur_' || substr(id, 5), id, livemode, :period_start, created_at
FROM stk_pushes WHERE created_at >= :period_start
"""


# --- gunicorn ----------------------------------------------------------------------------


@contextmanager
def gunicorn(port: int, env: dict, workers: int, threads: int) -> Iterator[str]:
    """Lango under gunicorn in its own process group, stopped (group and all) on the way out."""
    process = start_process_group(
        gunicorn_args("wsgi:app", port, workers, threads), env, "frontend-web"
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise SystemExit(f"gunicorn exited; see {LOG_DIR / 'frontend-web.log'}")
            try:
                requests.get(f"{url}/healthz", timeout=2)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise SystemExit("gunicorn did not start in 60 s") from None
                time.sleep(0.1)
        yield url
    finally:
        stop_process_group(process, 15)


# --- the tenant and its payments ----------------------------------------------------------


def seed(app, count: int) -> tuple[str, str, float]:
    """(tenant id, the owner's Flask-Login session id, seconds the INSERT took)."""
    with app.app_context():
        upgrade_public()
        with unit_of_work():
            signed_up = sign_up(
                "Bench Duka",
                f"owner-{secrets.token_hex(4)}@bench.example",
                "s3cure-Passw0rd",
                plan=roomiest_plan(),
            )
            tenant_id = signed_up.tenant.id
            member = db.session.get(Member, signed_up.owner.id)
            member.session_nonce = secrets.token_urlsafe(24)
            session_user = member.get_id()
            # A period 20 days old, so the usage meter and chart have weeks of pushes to show.
            subscription, _plan = current_subscription(tenant_id)
            period_start = subscription.current_period_start - timedelta(days=20)
            subscription.current_period_start = period_start
            subscription.current_period_end -= timedelta(days=20)
        started = time.perf_counter()
        with tenant_unit_of_work(tenant_id):
            db.session.execute(
                text(INSERT_PAYMENTS), {"count": count, "salt": secrets.token_hex(8)}
            )
            counted = db.session.execute(
                text(INSERT_USAGE), {"period_start": period_start}
            ).rowcount
        with unit_of_work():
            db.session.execute(
                text(
                    "INSERT INTO public.usage_counters (tenant_id, livemode, period_start, used) "
                    "VALUES (:tenant_id, false, :period_start, :used) "
                    "ON CONFLICT (tenant_id, livemode, period_start) DO UPDATE SET used = :used"
                ),
                {"tenant_id": tenant_id, "period_start": period_start, "used": counted},
            )
        inserted = time.perf_counter() - started
        with tenant_unit_of_work(tenant_id):
            db.session.execute(text("ANALYZE stk_pushes"))
            db.session.execute(text("ANALYZE usage_records"))
        db.session.remove()
    return tenant_id, session_user, inserted


def session_cookie(app, session_user: str) -> str:
    """The signed session cookie Flask-Login leaves after a sign-in."""
    serializer = app.session_interface.get_signing_serializer(app)
    return serializer.dumps({"_user_id": session_user, "_fresh": True})


def explain(app, tenant_id: str) -> None:
    start, end = reports.eat_day()
    statements = [
        (
            "overview: today's figures (one aggregate)",
            "SELECT count(*), count(*) FILTER (WHERE status = 'succeeded'), "
            "coalesce(sum(amount) FILTER (WHERE status = 'succeeded'), 0), "
            "count(*) FILTER (WHERE status <> 'pending') FROM stk_pushes "
            "WHERE livemode = false AND created_at >= :start AND created_at < :end",
        ),
        (
            "overview: recent payments",
            "SELECT id FROM stk_pushes WHERE livemode = false ORDER BY id DESC LIMIT 10",
        ),
        (
            "overview: usage per day (billing.usage.daily_usage)",
            "SELECT date(timezone('UTC', created_at)), livemode, count(*) FROM usage_records "
            "WHERE period_start = (SELECT min(period_start) FROM usage_records) "
            "GROUP BY 1, 2",
        ),
        (
            "payments: first page",
            "SELECT id FROM stk_pushes WHERE livemode = false ORDER BY id DESC LIMIT 26",
        ),
        (
            "payments: status = failed",
            "SELECT id FROM stk_pushes WHERE livemode = false AND status = 'failed' "
            "ORDER BY id DESC LIMIT 26",
        ),
    ]
    with app.app_context(), tenant_scope(tenant_id):
        for label, sql in statements:
            plan = db.session.execute(
                text(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}"), {"start": start, "end": end}
            ).scalars()
            print(f"  {label}:")
            for line in plan:
                print(f"    {line}")
        db.session.remove()


# --- measuring ----------------------------------------------------------------------------


def measure(url: str, cookie: str, count: int, expect: str) -> tuple[list[float], list[float]]:
    """(times to first byte, whole-response times), seconds, of `count` sequential GETs."""
    first_bytes, totals = [], []
    with requests.Session() as session:
        session.headers.update({"Cookie": f"session={cookie}", "Accept": "text/html"})
        for _ in range(count):
            started = time.perf_counter()
            response = session.get(url, stream=True, timeout=REQUEST_TIMEOUT)
            first_byte = time.perf_counter() - started
            body = response.content
            total = time.perf_counter() - started
            if response.status_code != 200 or expect.encode() not in body:
                raise SystemExit(f"GET {url}: {response.status_code} {body[:300]!r}")
            first_bytes.append(first_byte)
            totals.append(total)
    return first_bytes, totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--payments", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200, help="GETs per page")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=2, help="gunicorn threads per worker")
    parser.add_argument("--explain", action="store_true", help="print the queries' plans")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, raise_on_sigterm)

    with (
        servers() as (server_url, redis_url),
        fresh_database(server_url, prefix="lango_bench_frontend") as database_url,
    ):
        env = {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SECRET_KEY": SECRET_KEY,
            "ENCRYPTION_KEYS": ENCRYPTION_KEY,
            "LANGO_ENV": "production",
            "LOG_LEVEL": "WARNING",
        }
        app = create_app(env)
        tenant_id, session_user, inserted = seed(app, args.payments)
        with psycopg.connect(database_url) as connection:
            version = connection.execute("SHOW server_version").fetchone()[0]
        print(
            f"PostgreSQL {version}, {os.cpu_count()} CPUs; {args.payments:,} payments inserted"
            f" in {inserted:.1f} s; gunicorn --workers {args.workers} --threads {args.threads};"
            f" {args.requests} sequential GETs per page after 10 warm-up GETs"
        )
        if args.explain:
            explain(app, tenant_id)
        cookie = session_cookie(app, session_user)
        today = datetime.now(reports.EAT).date()
        week_ago = today - timedelta(days=7)
        with app.app_context(), tenant_scope(tenant_id):
            page_two_after = db.session.scalar(
                text(
                    "SELECT id FROM stk_pushes WHERE livemode = false ORDER BY id DESC "
                    "OFFSET 24 LIMIT 1"
                )
            )
            db.session.remove()
        pages = [
            ("GET /dashboard", "/dashboard", "Collected today"),
            ("GET /dashboard/payments", "/dashboard/payments", "Export CSV"),
            ("  … ?status=failed", "/dashboard/payments?status=failed", "Export CSV"),
            (
                "  … last 7 days (EAT)",
                f"/dashboard/payments?date_from={week_ago}&date_to={today}",
                "Export CSV",
            ),
            ("  … page 2", f"/dashboard/payments?starting_after={page_two_after}", "Newer"),
        ]
        with gunicorn(free_port(), {**os.environ, **env}, args.workers, args.threads) as url:
            print(
                f"{'page':<28} {'TTFB p50':>10} {'TTFB p95':>10} {'total p50':>10}"
                f" {'total p95':>10}"
            )
            for label, path, expect in pages:
                measure(url + path, cookie, 10, expect)  # warm-up: workers, pools, caches
                first_bytes, totals = measure(url + path, cookie, args.requests, expect)
                print(
                    f"{label:<28} {percentile_ms(first_bytes, 50):8.1f}ms"
                    f" {percentile_ms(first_bytes, 95):8.1f}ms {percentile_ms(totals, 50):8.1f}ms"
                    f" {percentile_ms(totals, 95):8.1f}ms",
                    flush=True,
                )


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted; gunicorn is stopped and the bench database dropped", file=sys.stderr)
        sys.exit(130)
