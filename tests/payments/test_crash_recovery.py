"""A web process killed between the Daraja call and the callback loses nothing: the push
still ends in its true state (the callback reaches the restarted process, or
reconciliation asks Daraja)."""

import os
import signal

import pytest
import requests

from payments.jobs import reconcile_pending_pushes
from tests.conftest import SANDBOX_PORT, free_port
from tests.payments.test_stk_push import push_body
from tests.served import start_gunicorn, wait_for_status


@pytest.mark.slow
def test_push_survives_the_web_process_dying_before_its_callback(
    platform, app, api, tenant, database_url, redis_url
):
    port = free_port()
    sandbox_url = f"http://127.0.0.1:{SANDBOX_PORT}"
    web = start_gunicorn(port, database_url, redis_url, sandbox_url)
    try:
        # The sandbox calls back after ~2 s (the "late callback" number).
        created = requests.post(
            f"http://127.0.0.1:{port}/v1/stk-pushes",
            json=push_body("254700000097"),
            headers={"Authorization": f"Bearer {tenant.secret}"},
            timeout=30,
        )
        assert created.status_code == 202
        os.killpg(web.pid, signal.SIGKILL)  # no graceful shutdown: a crash
        web.wait(10)
        web = start_gunicorn(port, database_url, redis_url, sandbox_url)

        push_id = created.json()["id"]
        try:
            final = wait_for_status(api, push_id, timeout=10)
        except AssertionError:
            # The callback came while nothing listened (Daraja does not retry): the
            # reconciliation job asks Daraja instead.
            with app.app_context():
                reconcile_pending_pushes()
            final = api.get(f"/v1/stk-pushes/{push_id}").get_json()
        assert (final["status"], final["result_code"]) == ("succeeded", "0")
    finally:
        if web.poll() is None:
            os.killpg(web.pid, signal.SIGTERM)
            web.wait(20)
