"""localstripe — a fake but stateful Stripe server (PyPI `localstripe`) — run as a real
subprocess for the test session, and the app pointed at it.

What localstripe is, read from its source (1.15): an aiohttp server speaking Stripe's API of
about 2017-2019 — the legacy Plan API (no Prices), no Checkout, Billing Portal or meters; it
ignores Idempotency-Key and never advances time. Payment-method test ids `pm_card_visa`
(charges work), `pm_card_chargeCustomerFail` (attaches; every charge declined, so a new
subscription stays `incomplete`) and `pm_card_visa_chargeDeclined` (declined when attached,
402 card_declined). It posts events to URLs registered with `POST /_config/webhooks/<name>`
(url, secret, optional events filter), about a second after they happen, signed like Stripe
(`Stripe-Signature: t=<event created>,v1=<HMAC-SHA256 of "t.payload">`). Its state lives in
memory (`--from-scratch`: never loaded from its pickle in /tmp, which it still writes).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
import stripe

from tests.conftest import free_port

STRIPE_TEST_KEY = "sk_test_lango_localstripe"
WEBHOOK_SECRET = "whsec_lango_test_secret"
# localstripe cannot forget a webhook; one that listens for no event type is silent.
_NO_EVENTS = ["lango.none"]


@dataclass(frozen=True)
class LocalStripe:
    url: str

    def client(self) -> stripe.StripeClient:
        """A stripe library client on localstripe, for tests to look at what Lango did."""
        return stripe.StripeClient(STRIPE_TEST_KEY, base_addresses={"api": self.url})

    def send_webhooks_to(self, url: str, events: list[str] | None = None) -> None:
        body = {"url": url, "secret": WEBHOOK_SECRET}
        if events is not None:
            body["events"] = events
        response = requests.post(f"{self.url}/_config/webhooks/lango", json=body, timeout=10)
        response.raise_for_status()

    def stop_webhooks(self) -> None:
        self.send_webhooks_to("http://127.0.0.1:9/", events=_NO_EVENTS)


@pytest.fixture(scope="session")
def localstripe() -> Iterator[LocalStripe]:
    port = free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "localstripe", "--port", str(port), "--from-scratch"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        server = LocalStripe(f"http://127.0.0.1:{port}")
        try:
            _wait_until_up(server, process, log)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def _wait_until_up(server: LocalStripe, process: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"localstripe exited at start:\n{log.read().decode()[-2000:]}")
        try:
            requests.get(f"{server.url}/v1/customers", auth=(STRIPE_TEST_KEY, ""), timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError("localstripe did not start within 30 s")


@pytest.fixture
def stripe_billing(app, localstripe, monkeypatch) -> Iterator[LocalStripe]:
    """The app bills through localstripe for this test (the settings are restored after)."""
    settings = app.extensions["lango.settings"]
    monkeypatch.setitem(
        app.extensions,
        "lango.settings",
        dataclasses.replace(
            settings,
            STRIPE_API_KEY=STRIPE_TEST_KEY,
            STRIPE_API_BASE=localstripe.url,
            STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        ),
    )
    yield localstripe
    localstripe.stop_webhooks()
