"""The production web server (core/gunicorn_conf.py), run for real: one JSON line per
request with secrets redacted (gunicorn's access log too, when switched on), and health
checks answered while status streams hold threads."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from payments.api import STREAMS_PER_KEY
from tests.conftest import TEST_ENCRYPTION_KEY, TEST_SECRET_KEY, free_port
from tests.payments.test_reports import insert_push

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def gunicorn(database_url, redis_url, tmp_path, *flags) -> Iterator[tuple[str, Path]]:
    """gunicorn with Lango's production settings (plus `flags`); yields its URL and the file
    holding everything it wrote."""
    port = free_port()
    output = tmp_path / f"gunicorn-{port}.log"
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "LANGO_ENV": "production",
        "LOG_LEVEL": "INFO",
        "BIND": f"127.0.0.1:{port}",
    }
    env.pop("WEB_CONCURRENCY", None)
    env.pop("WEB_THREADS", None)
    command = [sys.executable, "-m", "gunicorn", "-c", "python:core.gunicorn_conf", *flags]
    with output.open("w") as sink:
        process = subprocess.Popen(
            [*command, "wsgi:app"],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, output.read_text()
            try:
                requests.get(f"{url}/healthz", timeout=2)
                break
            except requests.RequestException:  # not listening yet, or still loading the app
                assert time.monotonic() < deadline, output.read_text()
                time.sleep(0.2)
        yield url, output
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _post_secrets(url: str, token: str) -> None:
    callback = requests.post(f"{url}/callbacks/mpesa/stk/{token}?sig={token}", json={}, timeout=10)
    assert callback.status_code == 404
    assert requests.get(f"{url}/invite/{token}", timeout=10).status_code == 404


def test_production_server_logs_each_request_once_as_json_without_its_token(
    app, database_url, redis_url, tmp_path
):
    token = secrets.token_urlsafe(32)
    with gunicorn(database_url, redis_url, tmp_path) as (url, output):
        _post_secrets(url, token)
    written = output.read_text()
    assert token not in written
    lines = [json.loads(line) for line in written.splitlines() if line.strip()]
    about_callback = [line for line in lines if "/callbacks/mpesa/stk/" in json.dumps(line)]
    # One line (the app's), not a second one from gunicorn's access log.
    assert [line["path"] for line in about_callback] == ["/callbacks/mpesa/stk/[redacted]"]
    assert about_callback[0]["status"] == 404


def test_gunicorn_access_log_when_switched_on_is_redacted_too(
    app, database_url, redis_url, tmp_path
):
    token = secrets.token_urlsafe(32)
    with gunicorn(database_url, redis_url, tmp_path, "--access-logfile", "-") as (url, output):
        _post_secrets(url, token)
    written = output.read_text()
    assert token not in written
    assert '"POST /callbacks/mpesa/stk/[redacted]?sig=[redacted] HTTP/1.1" 404' in written
    assert '"GET /invite/[redacted] HTTP/1.1" 404' in written


def test_status_streams_are_capped_per_key_and_health_checks_still_answer(
    app, database_url, redis_url, tenant, tmp_path
):
    push_id = insert_push(app, tenant.id, status="pending")
    headers = {"Authorization": f"Bearer {tenant.secret}"}
    with gunicorn(database_url, redis_url, tmp_path) as (url, _):
        stream_url = f"{url}/v1/stk-pushes/{push_id}/stream"
        streams = []
        try:
            for _ in range(STREAMS_PER_KEY):
                stream = requests.get(stream_url, headers=headers, stream=True, timeout=10)
                assert stream.status_code == 200
                assert next(stream.iter_lines()).startswith(b"event: status")
                streams.append(stream)
            refused = requests.get(stream_url, headers=headers, timeout=10)
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "too_many_streams"
            assert int(refused.headers["Retry-After"]) > 0
            for _ in range(5):
                assert requests.get(f"{url}/healthz", timeout=5).status_code == 200
                assert requests.get(f"{url}/readyz", timeout=5).status_code in (200, 503)
        finally:
            for stream in streams:
                stream.close()


@pytest.mark.parametrize("setting", ["worker_class", "threads", "limit_request_line"])
def test_production_settings_keep_threads_for_health_checks(setting):
    from core import gunicorn_conf

    expected = {"worker_class": "gthread", "limit_request_line": 8190}
    value = getattr(gunicorn_conf, setting)
    assert value == expected[setting] if setting in expected else value > STREAMS_PER_KEY
