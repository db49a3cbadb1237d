"""What Lango's logs say (core/logs.py): secrets in URLs never reach them, one line per
request and per job, JSON in production and a short line in development."""

from __future__ import annotations

import io
import json
import logging
import secrets
from collections.abc import Iterator

import pytest

from core import logs
from core.jobs import app_job


@pytest.fixture
def captured() -> Iterator[callable]:
    """Every line Lango's loggers write, formatted as a process would (JSON by default)."""
    streams: list[io.StringIO] = []
    root = logging.getLogger()
    handlers = []
    quiet = {name: logging.getLogger(name).level for name in ("lango.requests", "lango.jobs")}
    for name in quiet:
        logging.getLogger(name).setLevel(logging.INFO)

    def capture(*, development: bool = False) -> io.StringIO:
        stream = io.StringIO()
        handler = logs.log_handler(stream, development=development)
        root.addHandler(handler)
        handlers.append(handler)
        streams.append(stream)
        return stream

    yield capture
    for handler in handlers:
        root.removeHandler(handler)
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)


def test_redact_hides_secret_path_segments_query_values_and_api_keys():
    token = secrets.token_urlsafe(32)
    assert logs.redact(f"/callbacks/mpesa/stk/{token}") == "/callbacks/mpesa/stk/[redacted]"
    assert logs.redact(f"GET /invite/{token}?next=/x HTTP/1.1") == (
        "GET /invite/[redacted]?next=/x HTTP/1.1"
    )
    assert logs.redact(f"/v1/x?limit=5&access_token={token}&api_key={token}#f") == (
        "/v1/x?limit=5&access_token=[redacted]&api_key=[redacted]#f"
    )
    assert logs.redact("Bearer sk_test_abcDEF123") == "Bearer sk_test_[redacted]"
    # Nothing else changes: ids and ordinary query values stay readable.
    assert logs.redact("/v1/stk-pushes/stk_01J?status=pending") == (
        "/v1/stk-pushes/stk_01J?status=pending"
    )


def test_a_callback_token_never_reaches_the_request_or_error_log(
    app, client, captured, monkeypatch
):
    from payments import service

    production, development = captured(), captured(development=True)
    token = secrets.token_urlsafe(32)
    assert client.post(f"/callbacks/mpesa/stk/{token}", json={}).status_code == 404
    assert client.get(f"/invite/{token}?token={token}").status_code == 404

    def fails(callback_token):
        # As a library's exception would: its message quotes the URL it was handling.
        raise RuntimeError(f"connection reset for /callbacks/mpesa/stk/{callback_token}")

    monkeypatch.setattr(service, "tenant_id_from_token", fails)
    assert client.post(f"/callbacks/mpesa/stk/{token}", json={}).status_code == 500

    for stream in (production, development):
        written = stream.getvalue()
        assert token not in written
        assert "/callbacks/mpesa/stk/[redacted]" in written
        assert "/invite/[redacted]" in written
    lines = [json.loads(line) for line in production.getvalue().splitlines() if line[:1] == "{"]
    error = next(line for line in lines if line["message"] == "unhandled error")
    assert error["path"] == "/callbacks/mpesa/stk/[redacted]"
    assert "RuntimeError" in error["exc_info"]


def test_each_request_is_one_line_json_in_production_and_short_in_development(
    app, client, captured
):
    production, development = captured(), captured(development=True)
    client.get("/healthz")
    [line] = [json.loads(line) for line in production.getvalue().splitlines()]
    assert line["logger"] == "lango.requests"
    assert (line["method"], line["path"], line["status"]) == ("GET", "/healthz", 200)
    assert line["request_id"].startswith("req_") and isinstance(line["duration_ms"], int)
    [short] = development.getvalue().splitlines()
    assert "INFO  GET /healthz 200 " in short and "{" not in short


def test_each_job_is_one_line(app, captured):
    development = captured(development=True)

    @app_job
    def tidy_up() -> dict:
        return {"removed": 2}

    with app.app_context():
        assert tidy_up() == {"removed": 2}
    [line] = development.getvalue().splitlines()
    assert "job tidy_up ok" in line and "result={'removed': 2}" in line


def test_rq_per_job_chatter_is_silenced_but_its_warnings_are_not(monkeypatch):
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))  # put back afterwards
    monkeypatch.setattr(root, "level", root.level)
    logs.configure_logging("INFO", "development")
    for name in ("rq.worker", "rq.job", "rq.cron", "rq.scheduler"):
        assert not logging.getLogger(name).isEnabledFor(logging.INFO)
        assert logging.getLogger(name).isEnabledFor(logging.WARNING)
