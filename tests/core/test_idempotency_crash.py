"""A gunicorn worker SIGKILLed while a push waits on Daraja does not block its Idempotency-Key:
a retry with the key gets that push once the claim's lease runs out, with no second push and
no second call to Daraja."""

import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import text

from core.extensions import db
from core.tenancy import tenant_scope
from tests.conftest import free_port
from tests.payments.test_stk_push import push_body
from tests.served import start_gunicorn

LEASE_SECONDS = 2


class SilentDaraja:
    """A Daraja that accepts connections and never answers: the request calling it hangs."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.connections: list[socket.socket] = []
        self.contacted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:  # closed
                return
            self.connections.append(connection)
            self.contacted.set()

    def close(self):
        self.server.close()
        for connection in self.connections:
            connection.close()


def workers_of(master_pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == master_pid:
                children.append(int(entry.name))
    return children


@pytest.mark.slow
def test_a_sigkilled_workers_key_resolves_to_its_push_without_a_second_one(
    app, tenant, database_url, redis_url
):
    daraja = SilentDaraja()
    port = free_port()
    web = start_gunicorn(
        port, database_url, redis_url, daraja.url, IDEMPOTENCY_LEASE_SECONDS=str(LEASE_SECONDS)
    )
    url = f"http://127.0.0.1:{port}/v1/stk-pushes"
    headers = {"Authorization": f"Bearer {tenant.secret}", "Idempotency-Key": "order-1001"}
    body = push_body()
    try:

        def send_and_die_with_the_worker():
            with contextlib.suppress(requests.ConnectionError):
                requests.post(url, json=body, headers=headers, timeout=60)

        first = threading.Thread(target=send_and_die_with_the_worker, daemon=True)
        first.start()
        assert daraja.contacted.wait(30), "the push never reached Daraja"
        calls_before_the_kill = len(daraja.connections)
        for worker in workers_of(web.pid):
            os.kill(worker, signal.SIGKILL)  # the request dies mid-flight; gunicorn respawns

        answers = []
        deadline = time.monotonic() + 60  # a bound for the loop, not the claim's lease
        while time.monotonic() < deadline:
            try:
                answer = requests.post(url, json=body, headers=headers, timeout=10)
            except requests.ConnectionError:  # between the kill and the new worker
                time.sleep(0.2)
                continue
            answers.append(answer)
            if answer.status_code != 409:
                break
            time.sleep(0.5)
        replayed = requests.post(url, json=body, headers=headers, timeout=10)
    finally:
        os.killpg(web.pid, signal.SIGKILL)
        web.wait(10)
        daraja.close()

    assert answers, "no answer from the restarted worker"
    *held, resolved = answers
    assert all(a.json()["error"]["code"] == "idempotency_key_in_use" for a in held)
    assert resolved.status_code == 202
    with app.app_context(), tenant_scope(tenant.id):
        pushes = db.session.execute(text("SELECT id, status FROM stk_pushes")).all()
    assert [(row.id, row.status) for row in pushes] == [(resolved.json()["id"], "pending")]
    assert len(daraja.connections) == calls_before_the_kill  # Daraja not called again
    assert replayed.json() == resolved.json()
    assert replayed.headers["Idempotent-Replayed"] == "true"
