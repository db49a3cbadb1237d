"""`lango up` (what `./dev.sh up` runs) on a machine with nothing but Python: it must start
the embedded servers, migrate, print a demo key, say it is up only once everything answers,
keep the demo sign-ins across restarts, refuse to start twice, log each request once, and
stop everything on Ctrl-C."""

import json
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
from redis import Redis
from rq import Worker

ROOT = Path(__file__).resolve().parents[2]
LANGO = Path(sys.executable).parent / "lango"
UP = "Lango is up: "


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Up:
    """One `lango up` run on embedded servers, its output in a file."""

    def __init__(self, tmp_path: Path, data_dir: Path, port: int, sandbox_port: int, name: str):
        env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
        env.pop("SECRET_KEY", None)
        env.pop("LANGO_ENV", None)
        self.log_path = tmp_path / f"{name}.log"
        self.base = f"http://127.0.0.1:{port}"
        self.data_dir = data_dir
        command = [str(LANGO), "up", "--port", str(port), "--sandbox-port", str(sandbox_port)]
        command += ["--data-dir", str(data_dir), "--web-workers", "1"]
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, text: str, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            if self.process.poll() is not None:
                pytest.fail(f"lango up exited with {self.process.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                pytest.fail(f"{text!r} never printed:\n{self.output}")
            time.sleep(0.2)
        return self.output

    def stop(self) -> int:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise
        return self.process.returncode


def _sign_ins(printed: str) -> dict:
    return {
        "key": re.search(r"test key: (sk_test_\w+)", printed).group(1),
        "owner": re.search(r"dashboard sign-in: (\S+) / (\S+)", printed).groups(),
        "staff": re.search(
            r"staff sign-in \(admin \+ compliance\): (\S+) / (\S+)", printed
        ).groups(),
    }


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
    port, sandbox_port = _free_port(), _free_port()
    data_dir = tmp_path / "data"
    up = Up(tmp_path, data_dir, port, sandbox_port, "first")
    try:
        printed = up.wait_for(UP)
        # Said once everything answers: no retry needed, whatever the machine's speed.
        ready = requests.get(f"{up.base}/readyz", timeout=10)
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"postgres": "ok", "redis": "ok", "migrations": "ok"}
        assert requests.get(f"http://127.0.0.1:{sandbox_port}/", timeout=10).status_code
        env_file = (data_dir / "lango.env").read_text()
        redis_url = re.search(r"REDIS_URL=(.+)", env_file).group(1)
        assert len(Worker.all(connection=Redis.from_url(redis_url))) >= 4

        demo_key = _sign_ins(printed)["key"]
        me = requests.get(
            f"{up.base}/v1/tenant", headers={"Authorization": f"Bearer {demo_key}"}, timeout=10
        )
        assert me.status_code == 200 and me.json()["tenant"]["business_name"] == "Demo Shop"
        # No Retry-After on a success (Flask-Limiter used to add `Retry-After: 1`).
        assert "Retry-After" not in me.headers

        signup = requests.post(
            f"{up.base}/v1/signup",
            json={"business_name": "Fresh Co", "email": "a@fresh.co.ke", "password": "s3cure-Pass"},
            timeout=10,
        )
        assert signup.status_code == 201
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
                f"{up.base}/v1/webhook-endpoints",
                json={"url": receiver_url},
                headers={"Authorization": f"Bearer {demo_key}"},
                timeout=10,
            )
            assert endpoint.status_code == 201, endpoint.text
            requests.post(
                f"{up.base}/v1/webhook-endpoints/{endpoint.json()['id']}/test",
                headers={"Authorization": f"Bearer {demo_key}"},
                timeout=10,
            ).raise_for_status()
            assert received.wait(60), "the worker never delivered to the loopback receiver"
    finally:
        returncode = up.stop()
    printed = up.output
    assert "Embedded servers stopped." in printed
    assert returncode == 0
    # One short line per request (development), not a second one from gunicorn's access log.
    assert len([line for line in printed.splitlines() if "POST /v1/signup 201" in line]) == 1
    assert not [line for line in printed.splitlines() if line.startswith("{")]
    assert "XDG_RUNTIME_DIR" not in printed
    # Nothing left running: no process of the group, no server data folder in use.
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.killpg(up.process.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("processes started by lango up outlived it")
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{up.base}/healthz", timeout=2)


@pytest.mark.slow
def test_up_keeps_the_demo_sign_ins_and_refuses_to_start_twice(tmp_path):
    port, sandbox_port = _free_port(), _free_port()
    data_dir = tmp_path / "data"
    first = Up(tmp_path, data_dir, port, sandbox_port, "first")
    try:
        before = _sign_ins(first.wait_for(UP))
        # A second `lango up` on the same data folder stops before starting anything.
        second = Up(tmp_path, data_dir, _free_port(), _free_port(), "second")
        assert second.process.wait(60) != 0
        assert "already running" in second.output and str(data_dir) in second.output
        assert UP not in second.output and "test key" not in second.output
        # Another data folder, but the port is taken: said, before anything starts.
        third = Up(tmp_path, tmp_path / "other", port, _free_port(), "third")
        assert third.process.wait(60) != 0
        assert f"127.0.0.1:{port} is already in use" in third.output
        assert not (tmp_path / "other" / "postgres").exists()
    finally:
        assert first.stop() == 0
    kept = data_dir / "demo-sign-ins.json"
    assert kept.stat().st_mode & 0o777 == 0o600
    assert json.loads(kept.read_text())["test_key"] == before["key"]

    again = Up(tmp_path, data_dir, port, sandbox_port, "again")
    try:
        after = _sign_ins(again.wait_for(UP))
        assert after == before  # the same key and passwords as the first time
        me = requests.get(
            f"{again.base}/v1/tenant",
            headers={"Authorization": f"Bearer {before['key']}"},
            timeout=10,
        )
        assert me.status_code == 200
    finally:
        assert again.stop() == 0
