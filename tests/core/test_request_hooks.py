"""What every response carries (core/__init__.py's request hooks): Retry-After only when the
client is asked to wait."""

from __future__ import annotations


def test_a_success_carries_rate_limit_headers_but_no_retry_after(api):
    response = api.get("/v1/tenant")
    assert response.status_code == 200
    assert "X-RateLimit-Remaining" in response.headers
    # Flask-Limiter put `Retry-After: 1` on every counted response, successes included.
    assert "Retry-After" not in response.headers
