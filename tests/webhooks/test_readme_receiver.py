"""The README's webhook receiver, run for real: a Lango delivery to it verifies, a forgery does
not. The code is read from the README itself (the secret placeholder aside), so what a
reader copies is what this test runs."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from werkzeug.serving import make_server

from tests.conftest import free_port
from tests.webhooks.test_delivery import all_settled, deliveries, webhook_settings, work_until
from webhooks.models import DeliveryStatus

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_receiver() -> str:
    """The README's receiver: the Python block right after "A receiver, verifying"."""
    text = README.read_text()
    start = text.index("```python\n", text.index("A receiver, verifying")) + len("```python\n")
    return text[start : text.index("```", start)]


@pytest.fixture
def serve_readme_receiver() -> Iterator:
    servers = []

    def start(port: int, secret: str) -> None:
        namespace: dict = {"__name__": "receiver"}
        exec(readme_receiver().replace("whsec_…", secret), namespace)  # noqa: S102 -- the README's code
        server = make_server("127.0.0.1", port, namespace["app"], threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)

    yield start
    for server in servers:
        server.shutdown()


def test_the_readme_receiver_verifies_a_real_delivery_and_refuses_a_forgery(
    app, app_context, api, tenant, serve_readme_receiver, capsys
):
    port = free_port()
    url = f"http://127.0.0.1:{port}/webhooks/lango"
    with webhook_settings(app, WEBHOOK_ALLOW_PRIVATE_TARGETS=True):
        created = api.post("/v1/webhook-endpoints", json={"url": url})
        assert created.status_code == 201, created.get_json()
        serve_readme_receiver(port, created.get_json()["secret"])

        ping = api.post(f"/v1/webhook-endpoints/{created.get_json()['id']}/test").get_json()
        work_until(app, all_settled(tenant.id))

    (delivery,) = deliveries(tenant.id, event_id=ping["id"])
    assert delivery.status == DeliveryStatus.DELIVERED
    assert "ping" in capsys.readouterr().out

    forged = requests.post(
        url,
        data=json.dumps({"type": "payment.succeeded", "data": {}}),
        headers={
            "webhook-id": "evt_forged",
            "webhook-timestamp": str(int(time.time())),
            "webhook-signature": "v1,bm90IGEgc2lnbmF0dXJl",
        },
        timeout=10,
    )
    assert forged.status_code >= 400
    assert "payment.succeeded" not in capsys.readouterr().out
