"""What every request and response goes through (core/__init__.py's request hooks):
Retry-After only when the client is asked to wait; the client's address as trusted proxies
report it."""

from __future__ import annotations

import pytest


def test_a_success_carries_rate_limit_headers_but_no_retry_after(api):
    response = api.get("/v1/tenant")
    assert response.status_code == 200
    assert "X-RateLimit-Remaining" in response.headers
    # Flask-Limiter put `Retry-After: 1` on every counted response, successes included.
    assert "Retry-After" not in response.headers


@pytest.mark.parametrize(
    ("trusted_proxies", "seen"),
    [
        (0, "10.0.0.7"),  # no proxy trusted: the connection's address; the header is ignored
        (1, "196.201.214.200"),  # one proxy: the address it reports
    ],
)
def test_the_client_address_is_the_one_trusted_proxies_report(
    database_url, redis_url, trusted_proxies, seen
):
    from core import create_app
    from core.ratelimit import client_ip
    from tests.conftest import make_config

    app = create_app(make_config(database_url, redis_url, TRUSTED_PROXIES=str(trusted_proxies)))
    addresses = []
    app.before_request(lambda: addresses.append(client_ip()))

    app.test_client().get(
        "/healthz",
        headers={"X-Forwarded-For": "196.201.214.200"},
        environ_base={"REMOTE_ADDR": "10.0.0.7"},
    )

    assert addresses == [seen]
