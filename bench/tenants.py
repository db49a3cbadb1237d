"""Tenant scale figures, printed beside the targets in ARCHITECTURE.md ("Tenancy"):

- a new tenant ready (tenants.service.sign_up: rows + schema at head), p50 and p95;
- `lango db status` and `lango db upgrade` (nothing to do, then one revision adding a
  column) at each tenant count given with --tenants.

    .venv/bin/python bench/tenants.py [--tenants 100,1000] [--signups 100]

Uses DATABASE_URL / REDIS_URL when set, else the embedded servers under .lango/bench. Each
measurement runs in a database of its own, created here and dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from unittest import mock

import psycopg
from cryptography.fernet import Fernet
from flask import Flask
from sqlalchemy import Engine, text

# Import the project from its root, ahead of this folder: this script shares its name with
# the `tenants` package it measures.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import core.cli
import core.migrations
from bench.harness import ROOT, fresh_database, percentile_ms, servers
from core import create_app
from core.cli import main as lango
from core.cli import upgrade_public
from core.extensions import db
from core.ids import new_id
from core.migrations import TENANT_MIGRATIONS, provision_schema, tenant_head
from core.tenancy import schema_name_for
from core.unit_of_work import unit_of_work
from tenants.service import sign_up

EXTRA_REVISION = "t9001_bench_events_note"
SECRET_KEY = secrets.token_urlsafe(48)
ENCRYPTION_KEY = Fernet.generate_key().decode()


@dataclass(frozen=True)
class Figure:
    label: str
    value: str
    target: str = ""
    met: bool | None = None

    def line(self) -> str:
        verdict = {True: "ok", False: "MISSED", None: ""}[self.met]
        return f"  {self.label:<52} {self.value:>10}   {self.target:<10} {verdict}"


def app_config(database_url: str, redis_url: str) -> dict:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": SECRET_KEY,
        "ENCRYPTION_KEYS": ENCRYPTION_KEY,
        "LANGO_ENV": "development",
        "LOG_LEVEL": "WARNING",
    }


@contextmanager
def migrated_app(server_url: str, redis_url: str) -> Iterator[tuple[Flask, str]]:
    """The app on a fresh database with the public schema at head, inside an app context."""
    with fresh_database(server_url, prefix="lango_bench") as database_url:
        app = create_app(app_config(database_url, redis_url))
        with app.app_context():
            upgrade_public()
            try:
                yield app, database_url
            finally:
                db.session.remove()
                db.engine.dispose()


def measure_sign_ups(count: int) -> list[Figure]:
    """Sign-ups one after another, timing each and, within it, the schema provisioning."""
    run = secrets.token_hex(4)
    total, provisioning = [], []

    def timed_provision_schema(connection, schema: str) -> str:
        started = time.perf_counter()
        try:
            return provision_schema(connection, schema)
        finally:
            provisioning.append(time.perf_counter() - started)

    with mock.patch("tenants.service.provision_schema", timed_provision_schema):
        for number in range(count):
            started = time.perf_counter()
            with unit_of_work():  # ready once committed, as at the end of a sign-up request
                sign_up(
                    f"Bench Shop {number}", f"owner{number}-{run}@bench.example", "s3cure-Passw0rd"
                )
            total.append(time.perf_counter() - started)
    sign_up_p95 = percentile_ms(total, 95)
    return [
        Figure(f"new tenant ready (sign_up, n={count}), p50", f"{percentile_ms(total, 50):.0f} ms"),
        Figure(
            f"new tenant ready (sign_up, n={count}), p95",
            f"{sign_up_p95:.0f} ms",
            "< 250 ms",
            sign_up_p95 < 250,
        ),
        Figure("  of which schema at head, p50", f"{percentile_ms(provisioning, 50):.0f} ms"),
        Figure("  of which schema at head, p95", f"{percentile_ms(provisioning, 95):.0f} ms"),
    ]


def provision_tenants(engine: Engine, count: int) -> None:
    """Real schemas and registry rows, without sign-up's password hashing: ten tenants per
    transaction, four transactions at a time."""
    tenant_ids = [new_id("ten") for _ in range(count)]

    def provision_batch(batch: list[str]) -> None:
        with engine.begin() as connection:
            for tenant_id in batch:
                schema = schema_name_for(tenant_id)
                connection.execute(
                    text(
                        "INSERT INTO public.tenants (id, business_name, status, plan, "
                        "schema_name, schema_revision, schema_migrated_at) VALUES "
                        "(:id, 'Bench Shop', 'active', 'free', :schema, :revision, now())"
                    ),
                    {
                        "id": tenant_id,
                        "schema": schema,
                        "revision": provision_schema(connection, schema),
                    },
                )

    batches = [tenant_ids[start : start + 10] for start in range(0, count, 10)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(provision_batch, batches))


def tenant_tree_adding_a_column(directory: Path) -> Path:
    """A copy of the tenant tree with one more revision: a nullable column on `events`
    (a catalog-only change in PostgreSQL)."""
    tree = directory / "tenant"
    shutil.copytree(TENANT_MIGRATIONS, tree, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "versions" / f"{EXTRA_REVISION}.py").write_text(
        "import sqlalchemy as sa\n"
        "from alembic import op\n\n"
        f"revision = {EXTRA_REVISION!r}\n"
        f"down_revision = {tenant_head()!r}\n"
        "branch_labels = None\n"
        "depends_on = None\n\n\n"
        "def upgrade():\n"
        '    op.add_column("events", sa.Column("note", sa.Text()))\n\n\n'
        "def downgrade():\n"
        '    op.drop_column("events", "note")\n'
    )
    return tree


@contextmanager
def commands_using_tenant_tree(location: Path) -> Iterator[None]:
    """Point `lango db upgrade` / `status` at another tenant tree: the commands call these
    functions by the names core.cli imported them under."""
    with mock.patch.multiple(
        core.cli,
        upgrade_tenants=partial(core.migrations.upgrade_tenants, location=location),
        migration_status=partial(core.migrations.migration_status, location=location),
    ):
        yield


def run_command(app: Flask, *args: str, expect_exit: int = 0) -> float:
    """Run `lango <args>` in this process; returns its wall time in seconds."""
    started = time.perf_counter()
    result = app.test_cli_runner().invoke(lango, list(args))
    elapsed = time.perf_counter() - started
    if result.exit_code != expect_exit:
        raise SystemExit(f"lango {' '.join(args)} exited {result.exit_code}:\n{result.output}")
    return elapsed


def run_command_in_new_process(database_url: str, redis_url: str, *args: str) -> float:
    """Run `lango <args>` as an operator would, interpreter and app start-up included."""
    environment = {**os.environ, **app_config(database_url, redis_url)}
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "core.cli", *args],
        cwd=ROOT,
        env=environment,
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - started


def measure_commands(app: Flask, database_url: str, redis_url: str, count: int) -> list[Figure]:
    started = time.perf_counter()
    provision_tenants(db.engine, count)
    provisioned = time.perf_counter() - started

    status = statistics.median(run_command(app, "db", "status") for _ in range(5))
    status_process = run_command_in_new_process(database_url, redis_url, "db", "status")
    no_op_upgrade = run_command(app, "db", "upgrade", "--quiet")
    with tempfile.TemporaryDirectory() as directory:
        next_release = tenant_tree_adding_a_column(Path(directory))
        with commands_using_tenant_tree(next_release):
            run_command(app, "db", "status", expect_exit=1)
            column_upgrade = run_command(app, "db", "upgrade", "--quiet")
            run_command(app, "db", "status")  # every tenant at the new head
    return [
        Figure(f"{count} tenants provisioned in bulk (setup)", f"{provisioned:.1f} s"),
        Figure("lango db status", f"{status * 1000:.0f} ms", "< 1 s", status < 1),
        Figure("lango db status, new process (start-up incl.)", f"{status_process:.2f} s"),
        Figure("lango db upgrade, nothing to do", f"{no_op_upgrade:.2f} s"),
        Figure(
            "lango db upgrade, add a nullable column",
            f"{column_upgrade:.2f} s",
            "< 30 s" if count >= 1000 else "",
            column_upgrade < 30 if count >= 1000 else None,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", default="100,1000", help="tenant counts, comma-separated")
    parser.add_argument("--signups", type=int, default=100, help="sign-ups timed one by one")
    args = parser.parse_args()
    counts = [int(count) for count in args.tenants.split(",") if count.strip()]

    with servers() as (server_url, redis_url):
        with psycopg.connect(server_url) as connection:
            version = connection.execute("SHOW server_version").fetchone()[0]
        print(f"PostgreSQL {version}, {os.cpu_count()} CPUs; commands run in this process")
        print(f"  {'':<52} {'figure':>10}   {'target':<10}")
        with migrated_app(server_url, redis_url) as (app, _):
            workers = app.extensions["lango.settings"].MIGRATION_WORKERS
            for figure in measure_sign_ups(args.signups):
                print(figure.line(), flush=True)
        for count in counts:
            print(f"{count} tenant schemas ({workers} migration workers):")
            with migrated_app(server_url, redis_url) as (app, database_url):
                for figure in measure_commands(app, database_url, redis_url, count):
                    print(figure.line(), flush=True)


if __name__ == "__main__":
    main()
