"""`lango up` (what `./dev.sh up` runs) on a machine with nothing but Python: it must start
the embedded servers, migrate, print a demo key, serve, and stop everything on Ctrl-C."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
import requests

ROOT = Path(__file__).resolve().parents[2]
LANGO = Path(sys.executable).parent / "lango"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_ready(url: str, process: subprocess.Popen, timeout: float = 90) -> requests.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"lango up exited early with {process.returncode}")
        try:
            response = requests.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except requests.RequestException:  # not listening yet, or still booting workers
            pass
        time.sleep(0.5)
    pytest.fail(f"{url} never answered 200")


@contextmanager
def _loopback_receiver() -> Iterator[tuple[str, threading.Event]]:
    """An HTTP server on 127.0.0.1 that answers 204 and sets the event on its first POST."""
    received = threading.Event()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(204)
            self.end_headers()
            received.set()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hooks", received
    finally:
        server.shutdown()


@pytest.mark.slow
def test_up_runs_the_platform_on_embedded_servers_and_stops_cleanly(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.pop("SECRET_KEY", None)
    log = (tmp_path / "up.log").open("w+")
    data_dir = tmp_path / "data"
    process = subprocess.Popen(
        [
            str(LANGO),
            "up",
            "--port",
            str(port),
            "--sandbox-port",
            str(_free_port()),
            "--data-dir",
            str(data_dir),
            "--web-workers",
            "1",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        ready = _wait_ready(f"{base}/readyz", process)
        assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok", "migrations": "ok"}

        log.seek(0)
        printed = log.read()
        demo_key = re.search(r"test key: (sk_test_\w+)", printed).group(1)
        me = requests.get(
            f"{base}/v1/tenant", headers={"Authorization": f"Bearer {demo_key}"}, timeout=10
        )
        assert me.status_code == 200 and me.json()["tenant"]["business_name"] == "Demo Shop"

        signup = requests.post(
            f"{base}/v1/signup",
            json={"business_name": "Fresh Co", "email": "a@fresh.co.ke", "password": "s3cure-Pass"},
            timeout=10,
        )
        assert signup.status_code == 201
        env_file = (data_dir / "lango.env").read_text()
        database_url = re.search(r"DATABASE_URL=(.+)", env_file).group(1)
        schema = "t_" + signup.json()["tenant"]["id"].split("_", 1)[1]
        with psycopg.connect(database_url) as connection:
            found = connection.execute(
                "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)
            ).fetchone()[0]
        assert found == 1

        # Development delivers webhooks to a receiver on this machine (web and worker alike).
        assert "WEBHOOK_ALLOW_PRIVATE_TARGETS=true" in env_file
        with _loopback_receiver() as (receiver_url, received):
            endpoint = requests.post(
                f"{base}/v1/webhook-endpoints",
                json={"url": receiver_url},
                headers={"Authorization": f"Bearer {demo_key}"},
                timeout=10,
            )
            assert endpoint.status_code == 201, endpoint.text
            requests.post(
                f"{base}/v1/webhook-endpoints/{endpoint.json()['id']}/test",
                headers={"Authorization": f"Bearer {demo_key}"},
                timeout=10,
            ).raise_for_status()
            assert received.wait(60), "the worker never delivered to the loopback receiver"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    log.seek(0)
    assert "Embedded servers stopped." in log.read()
    assert process.returncode == 0
    # Nothing left running: no process of the group, no server data folder in use.
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("processes started by lango up outlived it")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
