"""What the benchmarks under bench/ set up alike: the PostgreSQL and Redis servers they run
against, a database of their own for each run, the child processes they start, and the few
figures and look-ups they share.

One place, so that every benchmark finds its servers, creates and drops its database and
stops what it started in the same way, and a fix to any of that reaches them all.

A script imports this as `bench.harness` after putting the repo root first on sys.path: run
as `python bench/<script>.py`, bench/ is sys.path[0], and bench/tenants.py would otherwise
shadow the `tenants` package that the project's modules import.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit, urlunsplit

import psycopg
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from core.embedded import start_embedded
from core.extensions import db

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
LOG_DIR = ROOT / ".lango" / "bench" / "logs"


# --- servers and database -------------------------------------------------------------------


@contextmanager
def servers() -> Iterator[tuple[str, str]]:
    """(PostgreSQL maintenance URL, Redis URL): the given ones, else embedded servers
    (stopped at the end unless they were already running)."""
    database_url = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    embedded = None
    if not database_url or not redis_url:
        # platformdirs warns when a container has no XDG_RUNTIME_DIR; nothing here needs it.
        warnings.filterwarnings("ignore", "XDG_RUNTIME_DIR is not set")
        embedded = start_embedded(ROOT / ".lango" / "bench", database="postgres")
        database_url = database_url or embedded.database_url
        redis_url = redis_url or embedded.redis_url
    try:
        # A URL plain psycopg connects with too: no SQLAlchemy driver suffix.
        yield (
            database_url.replace("postgresql+psycopg://", "postgresql://", 1).replace(
                "postgres://", "postgresql://", 1
            ),
            redis_url,
        )
    finally:
        if embedded is not None:
            embedded.stop()


@contextmanager
def fresh_database(server_url: str, prefix: str) -> Iterator[str]:
    """URL of a new database named `prefix`_<random>, dropped on the way out (with whatever
    connections are still open to it)."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(server_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_name(database_url: str) -> str:
    """The database a URL names: how PostgreSQL's backends serving it show in /proc."""
    return urlsplit(database_url).path.lstrip("/")


# --- child processes --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def gunicorn_args(app_path: str, port: int, workers: int, threads: int) -> list[str]:
    """The one gunicorn command line every benchmarked web app runs under."""
    return [
        str(BIN / "gunicorn"),
        app_path,
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--graceful-timeout",
        "5",
        # gunicorn ≥ 25 claims one control socket per user; two servers would collide.
        "--no-control-socket",
    ]


def start_process_group(args: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen:
    """`args` run from the repo root in a session (process group) of its own, so that
    stop_process_group reaches its workers too; stderr to LOG_DIR/<log_name>.log, stdout
    (access logs) dropped."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOG_DIR / f"{log_name}.log", "wb") as log:
        return subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )


def stop_process_group(process: subprocess.Popen, grace_seconds: float) -> None:
    """SIGTERM to the process's group (a graceful shutdown), then SIGKILL if it outlasts
    `grace_seconds`."""
    for sig, grace in ((signal.SIGTERM, grace_seconds), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(grace)
            break
        except subprocess.TimeoutExpired:
            continue
    # Workers outliving their master (killed): same group, so end them too.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """A SIGTERM handler: unwind as Ctrl-C does, so that every `finally` stops the processes
    and drops the database the run made."""
    raise KeyboardInterrupt


# --- figures and look-ups -------------------------------------------------------------------


def roomiest_plan() -> str | None:
    """The plan with the largest test-mode allowance, so the push quota does not cut a run
    short and the usage meter reads like a real one; None (the default plan) where there are
    no plans. Needs an app context; reads in the caller's transaction, which a failed look-up
    leaves usable (a savepoint)."""
    try:
        with db.session.begin_nested():
            if db.session.scalar(text("SELECT to_regclass('public.plans')")) is None:
                return None
            return db.session.scalar(
                text(
                    "SELECT code FROM public.plans WHERE active ORDER BY test_allowance DESC"
                    " LIMIT 1"
                )
            )
    except DBAPIError:
        return None


def percentile_ms(samples: list[float], percent: int) -> float:
    """The `percent`th percentile of `samples` (seconds) in milliseconds; needs two samples
    or more."""
    return statistics.quantiles(samples, n=100, method="inclusive")[percent - 1] * 1000


# --- CPU, from /proc ------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_now(worker_group: int) -> tuple[float, float]:
    """(CPU seconds the whole machine has used, all but idle and iowait; CPU seconds of the
    worker processes' group so far), from /proc; zeros where there is no /proc."""
    try:
        with open("/proc/stat") as handle:
            ticks = [int(value) for value in handle.readline().split()[1:9]]
        machine = (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS
        pids = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except (OSError, ValueError):
        return 0.0, 0.0
    workers = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
            rest = stat[stat.rindex(")") + 2 :].split()
            if int(rest[2]) == worker_group:
                workers += (int(rest[11]) + int(rest[12])) / CLOCK_TICKS
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
    return machine, workers
