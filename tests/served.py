"""Lango and its Daraja sandbox served for real (threaded WSGI servers on loopback), so a
push goes app → sandbox → callback → app exactly as in production."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server

from tests.conftest import LANGO_PORT, ROOT, SANDBOX_PORT, TEST_ENCRYPTION_KEY, TEST_SECRET_KEY

GUNICORN = Path(sys.executable).parent / "gunicorn"

# Short sandbox timings keep the suite quick; the behaviour is the same as with defaults.
CALLBACK_DELAY = 0.3
LATE_CALLBACK = 2.0


class ServedApp:
    def __init__(self, wsgi_app, port: int):
        self.server = make_server("127.0.0.1", port, wsgi_app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{port}"

    def start(self) -> ServedApp:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(10)


@pytest.fixture(scope="session")
def sandbox_app(redis_url):
    from payments.sandbox import create_sandbox_app

    app = create_sandbox_app(
        {
            "SANDBOX_REDIS_URL": redis_url,
            "SANDBOX_CALLBACK_DELAY_SECONDS": CALLBACK_DELAY,
            "SANDBOX_LATE_CALLBACK_SECONDS": LATE_CALLBACK,
        }
    )
    yield app
    # Its callback thread reads Redis: stop it before the session's Redis goes away.
    app.extensions["lango.sandbox"].dispatcher.stop()


@pytest.fixture(scope="session")
def platform(app, sandbox_app) -> Iterator[ServedApp]:
    """Both servers up for the rest of the session; yields Lango's."""
    sandbox = ServedApp(sandbox_app, SANDBOX_PORT).start()
    lango = ServedApp(app, LANGO_PORT).start()
    yield lango
    lango.stop()
    sandbox.stop()


def wait_for_status(api, push_id: str, timeout: float = 20.0) -> dict:
    """Poll the public API until the push is final."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        push = api.get(f"/v1/stk-pushes/{push_id}").get_json()
        if push["status"] != "pending":
            return push
        time.sleep(0.1)
    raise AssertionError(f"push {push_id} still pending after {timeout} s")


class OutboundCalls:
    """Counts outgoing HTTP requests by URL fragment (requests is the only HTTP client)."""

    def __init__(self, monkeypatch):
        self.urls: list[str] = []
        self._lock = threading.Lock()
        original = requests.Session.request

        def counting(session, method, url, *args, **kwargs):
            with self._lock:
                self.urls.append(url)
            return original(session, method, url, *args, **kwargs)

        monkeypatch.setattr(requests.Session, "request", counting)

    def count(self, fragment: str) -> int:
        with self._lock:
            return sum(1 for url in self.urls if fragment in url)


@pytest.fixture
def outbound(monkeypatch) -> OutboundCalls:
    return OutboundCalls(monkeypatch)


def post_pushes_concurrently(platform, secret: str, bodies: list[dict]) -> list[tuple[int, dict]]:
    """POST every body to /v1/stk-pushes at once (one thread each) against the served Lango;
    returns (status, JSON answer) per request."""
    results: list[tuple[int, dict]] = []
    lock = threading.Lock()

    def send(body):
        response = requests.post(
            f"{platform.url}/v1/stk-pushes",
            json=body,
            headers={"Authorization": f"Bearer {secret}"},
            timeout=60,
        )
        with lock:
            results.append((response.status_code, response.json()))

    threads = [threading.Thread(target=send, args=(body,)) for body in bodies]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return results


def quota_counted(app, tenant_id: str) -> tuple[int, int, int]:
    """(quota counter summed over modes, usage records, push rows) for the tenant."""
    from sqlalchemy import text

    from core.extensions import db
    from core.tenancy import tenant_scope

    with app.app_context():
        counter = db.session.execute(
            text("SELECT coalesce(sum(used), 0) FROM public.usage_counters WHERE tenant_id = :t"),
            {"t": tenant_id},
        ).scalar()
        db.session.rollback()
        with tenant_scope(tenant_id):
            # The usage ledger's net count: a released push has its count and a reversal.
            records = db.session.execute(
                text("SELECT coalesce(sum(quantity), 0) FROM usage_records")
            ).scalar()
            pushes = db.session.execute(text("SELECT count(*) FROM stk_pushes")).scalar()
    return counter, records, pushes


def start_gunicorn(
    port: int, database_url: str, redis_url: str, daraja_url: str, **settings: str
) -> subprocess.Popen:
    """Lango under gunicorn (one worker, its own process group, so a test can SIGKILL it),
    talking to `daraja_url` in test mode; returns once it answers /healthz."""
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "SANDBOX_BASE_URL": daraja_url,
        "LOG_LEVEL": "WARNING",
        **settings,
    }
    process = subprocess.Popen(
        [str(GUNICORN), "wsgi:app", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                return process
        except requests.RequestException:  # not listening yet, or still booting workers
            time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    pytest.fail("gunicorn did not start")
