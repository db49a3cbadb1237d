"""`lango`: the operator's one command (a Flask CLI group on the app factory).

Core's own commands are here:

lango up             the whole platform (embedded servers unless URLs are given)
lango worker         RQ workers (with the scheduler) for every queue
lango scheduler      the periodic jobs the packages registered
lango db upgrade     public schema, then every tenant schema behind head
lango db status      is everything at head? (reads the registry; milliseconds)

The packages add theirs to `app.cli` in their `init_app` (`lango queues`, `lango tenants …`,
`lango staff …`, `lango audit …`, `lango sandbox` …); `lango --help` lists them all.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import click
import requests
from cryptography.fernet import Fernet
from dotenv import load_dotenv
from flask import current_app
from flask.cli import FlaskGroup
from redis import Redis

from core import create_app
from core.embedded import DEFAULT_DATA_DIR, start_embedded
from core.extensions import db as database
from core.jobs import periodic_jobs
from core.migrations import (
    PUBLIC_MIGRATIONS,
    TENANT_MIGRATIONS,
    migration_status,
    summarize,
    upgrade_tenants,
)
from core.private_files import write_private

# Every RQ queue, the most urgent first (a worker takes from the first non-empty one): events
# reach their subscribers first, then webhook deliveries, then everything else.
QUEUES = ("events", "webhooks", "default", "billing")


def _create_app():
    return create_app()


@click.group(cls=FlaskGroup, create_app=_create_app, add_version_option=False)
def main() -> None:
    """Lango: self-hosted M-Pesa payments."""


@main.group()
def db() -> None:
    """Schema migrations for the public schema and every tenant schema."""


@db.command("upgrade")
@click.option("--workers", type=int, default=None, help="Tenants migrated in parallel.")
@click.option("--quiet", is_flag=True, help="Print failures and the summary only.")
def db_upgrade(workers: int | None, quiet: bool) -> None:
    """Upgrade public, then each tenant behind head (one transaction per tenant)."""

    settings = current_app.extensions["lango.settings"]
    started = time.perf_counter()
    upgrade_public()
    click.echo(f"public: at {_public_revision()}")

    def report(result) -> None:
        if result.ok and not quiet:
            click.echo(
                f"{result.tenant_id} {result.schema}: {result.from_revision or 'new'} -> "
                f"{result.to_revision} ok ({result.seconds * 1000:.0f} ms)"
            )
        elif not result.ok:
            click.echo(f"{result.tenant_id} {result.schema}: FAILED: {result.error}", err=True)

    results = upgrade_tenants(
        database.engine,
        workers=workers or settings.MIGRATION_WORKERS,
        lock_timeout_ms=settings.MIGRATION_LOCK_TIMEOUT_MS,
        statement_timeout_ms=settings.MIGRATION_STATEMENT_TIMEOUT_MS,
        report=report,
    )
    upgraded, failed = summarize(results)
    click.echo(
        f"tenants: {upgraded} upgraded, {failed} failed in {time.perf_counter() - started:.2f} s"
    )
    if failed:
        click.echo("Rerun `lango db upgrade` after fixing: it resumes with those behind.", err=True)
        sys.exit(1)


@db.command("status")
def db_status() -> None:
    """Say whether the public schema and every tenant schema are at head (exit 1 if not)."""

    started = time.perf_counter()
    status = migration_status(database.engine)
    elapsed_ms = (time.perf_counter() - started) * 1000
    click.echo(f"public: {status.public_revision or 'empty'} (head {status.public_head})")
    click.echo(
        f"tenants: {status.tenants - status.tenants_behind}/{status.tenants} at head "
        f"{status.tenant_head}"
    )
    click.echo(f"{'all at head' if status.at_head else 'NOT at head'} ({elapsed_ms:.1f} ms)")
    sys.exit(0 if status.at_head else 1)


@db.command("revision")
@click.option("-m", "--message", required=True)
@click.option("--tenant", "tenant_tree", is_flag=True, help="Write a tenant-tree revision.")
@click.option("--autogenerate", is_flag=True)
def db_revision(message: str, tenant_tree: bool, autogenerate: bool) -> None:
    """Write a new revision for the public tree (default) or the tenant tree."""
    from alembic import command
    from alembic.config import Config

    location = TENANT_MIGRATIONS if tenant_tree else PUBLIC_MIGRATIONS
    config = Config(str(location / "alembic.ini"))
    config.set_main_option("script_location", str(location))
    command.revision(config, message=message, autogenerate=autogenerate)


def upgrade_public() -> None:
    import flask_migrate

    flask_migrate.upgrade(directory=str(PUBLIC_MIGRATIONS))


def _public_revision() -> str | None:

    return migration_status(database.engine).public_revision


@main.command("worker")
@click.option("--queues", default=",".join(QUEUES), show_default=True)
@click.option("--burst", is_flag=True, help="Exit when the queues are empty.")
@click.option(
    "--processes",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="Worker processes. Keep it above WEBHOOK_ENDPOINT_CONCURRENCY, so endpoints that "
    "hang can't hold every worker.",
)
def worker(queues: str, burst: bool, processes: int) -> None:
    """Run RQ workers (non-forking: jobs are cheap and enter their own tenant scope), one
    per process, with RQ's scheduler (webhook retries are scheduled jobs)."""
    if processes > 1:
        _run_worker_processes(processes, queues, burst)
        return
    from rq import Queue, SimpleWorker

    # Its own connection, without the app's socket timeout: dequeuing blocks for minutes.
    connection = Redis.from_url(current_app.extensions["lango.settings"].REDIS_URL)
    names = [name.strip() for name in queues.split(",") if name.strip()]
    rq_worker = SimpleWorker(
        [Queue(name, connection=connection) for name in names], connection=connection
    )
    # Every worker offers to run the scheduler; one holds its lock at a time.
    rq_worker.work(burst=burst, with_scheduler=True)


def _run_worker_processes(count: int, queues: str, burst: bool) -> None:
    """`count` one-process workers, each restarted if it dies (a killed worker loses nothing:
    the sweeper re-drives its delivery). Ctrl-C/SIGTERM stops them all."""
    command = [sys.executable, "-m", "core.cli", "worker", "--processes", "1", "--queues", queues]
    children = [subprocess.Popen(command + (["--burst"] if burst else [])) for _ in range(count)]
    stopping = False

    def request_stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        while not stopping and not (burst and all(c.poll() is not None for c in children)):
            for index, child in enumerate(children):
                if not burst and child.poll() is not None:
                    click.echo(
                        f"worker {child.pid} exited ({child.returncode}); restarting", err=True
                    )
                    children[index] = subprocess.Popen(command)
            time.sleep(0.5)
    finally:
        _stop([("worker", child) for child in children])


@main.command("scheduler")
def scheduler() -> None:
    """Run the periodic jobs the packages registered (RQ's cron scheduler): reconcile and
    expire pushes, sweep the outbox and deliveries, close billing periods, anchor the audit
    trail… One scheduler holds the cron lock at a time."""
    from rq.cron import CronScheduler

    cron = CronScheduler(connection=current_app.extensions["lango.redis"])
    for job in periodic_jobs(current_app):
        cron.register(
            job.func, queue_name=job.queue, interval=job.interval, job_timeout=job.timeout
        )
    cron.start()


@main.command("up", with_appcontext=False)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--sandbox-port", default=8001, show_default=True, type=int)
@click.option("--web-workers", default=2, show_default=True, type=int)
@click.option(
    "--data-dir",
    default=str(DEFAULT_DATA_DIR),
    show_default=True,
    help="Where the embedded servers keep their data.",
)
def up(host: str, port: int, sandbox_port: int, web_workers: int, data_dir: str) -> None:
    """Run the whole platform: migrate, create the demo tenant, start every process.

    Without DATABASE_URL / REDIS_URL it starts embedded PostgreSQL and Redis under
    --data-dir. Ctrl-C stops every process, then the embedded servers.
    """
    load_dotenv(Path.cwd() / ".env", override=False)
    lock = _claim_data_dir(Path(data_dir))
    for name, number in (("--port", port), ("--sandbox-port", sandbox_port)):
        if _port_in_use(host, number):
            raise click.ClickException(
                f"{host}:{number} is already in use (another Lango, or another server): "
                f"stop it, or choose another port with {name}."
            )
    embedded = None
    if not os.environ.get("DATABASE_URL") or not os.environ.get("REDIS_URL"):
        click.echo(f"Starting embedded PostgreSQL and Redis in {data_dir} …")
        embedded = start_embedded(Path(data_dir))
        os.environ.setdefault("DATABASE_URL", embedded.database_url)
        os.environ.setdefault("REDIS_URL", embedded.redis_url)
    os.environ.setdefault("SECRET_KEY", _development_secret(Path(data_dir), "secret_key"))
    os.environ.setdefault(
        "ENCRYPTION_KEYS", _development_secret(Path(data_dir), "encryption_key", fernet=True)
    )
    os.environ.setdefault("LANGO_ENV", "development")
    # In development, webhooks are tried against a receiver on this machine (loopback, LAN).
    development = os.environ["LANGO_ENV"] == "development"
    os.environ.setdefault("WEBHOOK_ALLOW_PRIVATE_TARGETS", "true" if development else "false")
    os.environ.setdefault("AUDIT_CHECKPOINT_DIR", str(Path(data_dir) / "audit-checkpoints"))
    os.environ.setdefault("PUBLIC_BASE_URL", f"http://{host}:{port}")
    os.environ.setdefault("SANDBOX_BASE_URL", f"http://{host}:{sandbox_port}")
    os.environ.setdefault("SANDBOX_REDIS_URL", os.environ["REDIS_URL"])
    _write_runtime_env(Path(data_dir))

    processes: list[tuple[str, subprocess.Popen]] = []
    try:
        _run(["db", "upgrade", "--quiet"])
        _run(["demo-sign-ins", "--keep", str(Path(data_dir) / "demo-sign-ins.json")])
        lango = [sys.executable, "-m", "core.cli"]
        started = datetime.now(UTC)
        # The production settings (gthread workers, one log line per request).
        web = [sys.executable, "-m", "gunicorn", "-c", "python:core.gunicorn_conf"]
        web += ["--bind", f"{host}:{port}", "--workers", str(web_workers), "wsgi:app"]
        processes = [
            ("web", subprocess.Popen(web)),
            ("worker", subprocess.Popen([*lango, "worker"])),
            ("scheduler", subprocess.Popen([*lango, "scheduler"])),
            (
                "sandbox",
                subprocess.Popen([*lango, "sandbox", "--host", host, "--port", str(sandbox_port)]),
            ),
        ]
        if not _wait_until_ready(processes, host, port, sandbox_port, started):
            return  # a process died while starting (said so); the finally stops the rest
        click.echo(f"Lango is up: http://{host}:{port}  (API docs: http://{host}:{port}/docs)")
        click.echo(
            f"Dashboard: http://{host}:{port}/login   Staff: http://{host}:{port}/staff/login"
        )
        click.echo(f"Other shells: `set -a; . {data_dir}/lango.env; set +a` then any lango command")
        stopped_on_request = _supervise(processes)
    finally:
        _stop(processes)
        if embedded is not None:
            embedded.stop()
            click.echo("Embedded servers stopped.")
        lock.close()
    sys.exit(0 if stopped_on_request else 1)


def _claim_data_dir(data_dir: Path):
    """Hold a lock on the data folder for as long as this `lango up` runs: a second one on
    the same folder says so and stops before starting anything. (The operating system drops
    the lock when the process dies, so a crash leaves nothing to clean up.)"""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = (data_dir / "lango-up.lock").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        lock.close()
        raise click.ClickException(
            f"Lango is already running from {data_dir} (`lango up`, pid {holder}). "
            "Stop it first (Ctrl-C in its terminal), or use another --data-dir."
        ) from None
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    return lock


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex((host, port)) == 0


# How long `lango up` waits for every process to be ready before saying it is up anyway.
READY_TIMEOUT_SECONDS = 180


def _wait_until_ready(processes, host: str, port: int, sandbox_port: int, started) -> bool:
    """Wait until the web app is ready (/readyz 200: PostgreSQL, Redis, migrations), the
    sandbox answers and every worker has registered in Redis. False if a process died."""
    from rq import Worker

    connection = Redis.from_url(os.environ["REDIS_URL"])
    expected_workers = 4  # `lango worker`'s default --processes
    pending = {"web", "sandbox", "worker"}
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while pending and time.monotonic() < deadline:
        for name, process in processes:
            if process.poll() is not None:
                click.echo(f"{name} exited with {process.returncode} while starting.", err=True)
                return False
        if "web" in pending and _answers(f"http://{host}:{port}/readyz", ok_only=True):
            pending.discard("web")
        if "sandbox" in pending and _answers(f"http://{host}:{sandbox_port}/"):
            pending.discard("sandbox")
        if "worker" in pending:
            fresh = [
                worker
                for worker in Worker.all(connection=connection)
                if worker.birth_date is not None
                and worker.birth_date.replace(tzinfo=worker.birth_date.tzinfo or UTC) >= started
            ]
            if len(fresh) >= expected_workers:
                pending.discard("worker")
        time.sleep(0.3)
    if pending:
        click.echo(f"Still starting after {READY_TIMEOUT_SECONDS} s: {', '.join(sorted(pending))}")
    return True


def _answers(url: str, ok_only: bool = False) -> bool:
    try:
        response = requests.get(url, timeout=2)
    except requests.RequestException:
        return False
    return response.status_code == 200 if ok_only else True


def _run(args: list[str]) -> None:
    subprocess.run([sys.executable, "-m", "core.cli", *args], check=True)


def _supervise(processes: list[tuple[str, subprocess.Popen]]) -> bool:
    """Wait for Ctrl-C/SIGTERM (True) or for a process to die on its own (False)."""
    stopping = False

    def request_stop(signum, frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    while not stopping:
        for name, process in processes:
            if process.poll() is not None:
                click.echo(f"{name} exited with {process.returncode}; stopping.", err=True)
                return False
        time.sleep(0.2)
    click.echo("Stopping …")
    return True


def _stop(processes: list[tuple[str, subprocess.Popen]]) -> None:
    for _, process in processes:
        if process.poll() is None:
            process.terminate()
    for _, process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def _development_secret(data_dir: Path, name: str, fernet: bool = False) -> str:
    """A secret kept in the data folder, so development data stays readable across restarts."""
    path = data_dir / name
    data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        write_private(path, Fernet.generate_key().decode() if fernet else secrets.token_urlsafe(48))
    return path.read_text().strip()


def _write_runtime_env(data_dir: Path) -> None:
    path = data_dir / "lango.env"
    names = (
        "DATABASE_URL",
        "REDIS_URL",
        "SECRET_KEY",
        "ENCRYPTION_KEYS",
        "LANGO_ENV",
        "PUBLIC_BASE_URL",
        "SANDBOX_BASE_URL",
        "SANDBOX_REDIS_URL",
        "WEBHOOK_ALLOW_PRIVATE_TARGETS",
        "AUDIT_CHECKPOINT_DIR",
    )
    write_private(path, "".join(f"{name}={os.environ[name]}\n" for name in names))


if __name__ == "__main__":
    main()
