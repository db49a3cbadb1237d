"""Shared fixtures: a real PostgreSQL database and a real Redis for the whole run.

Given DATABASE_URL / REDIS_URL (CI's system services, docker-compose), the tests use those
servers; otherwise they start the embedded servers under `.lango/test`. Either way the run
gets a database of its own, created at the start and dropped at the end, and every test
leaves no tenant, row or Redis key behind.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from sqlalchemy.exc import OperationalError

from core import create_app
from core.config import load_settings

# Lango, the Daraja sandbox and localstripe (a fake Stripe) served for real, for any test
# package that needs them.
pytest_plugins = ["tests.served", "tests.stripe_server", "tests.browser", "tests.accounts"]

ROOT = Path(__file__).resolve().parent.parent
TEST_SECRET_KEY = "test-secret-key-" + "x" * 32
TEST_ENCRYPTION_KEY = "kXr0s6oKQ0mZb0wB0n0n6m0nH0mB0m0n0m0n0m0n0m0="


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# Where the test run serves Lango and the Daraja sandbox for real (tests/payments), fixed for
# the session because the app's configuration names them.
LANGO_PORT = free_port()
SANDBOX_PORT = free_port()


@dataclass(frozen=True)
class Servers:
    server_url: str  # psycopg URL of the server's maintenance database
    redis_url: str


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    database_url = os.environ.get("DATABASE_URL")
    redis_url = os.environ.get("REDIS_URL")
    embedded = None
    if not database_url or not redis_url:
        from core.embedded import start_embedded

        embedded = start_embedded(ROOT / ".lango" / "test", database="postgres")
        database_url = database_url or embedded.database_url
        redis_url = redis_url or embedded.redis_url
    yield Servers(_plain_postgres_url(database_url), redis_url)
    if embedded is not None:
        embedded.stop()


def _plain_postgres_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1).replace(
        "postgres://", "postgresql://", 1
    )


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def database_url(servers: Servers) -> Iterator[str]:
    """A fresh database for this run (per xdist worker), dropped afterwards."""
    name = f"lango_test_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(servers.server_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    yield _with_database(servers.server_url, name)
    with psycopg.connect(servers.server_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url(servers: Servers) -> str:
    return servers.redis_url


def make_config(database_url: str, redis_url: str, **overrides) -> dict:
    return {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": TEST_SECRET_KEY,
        "LANGO_ENV": "test",
        "LOG_LEVEL": "WARNING",
        "RATELIMIT_SIGNUP": "10000 per hour",
        "ENCRYPTION_KEYS": TEST_ENCRYPTION_KEY,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{LANGO_PORT}",
        "SANDBOX_BASE_URL": f"http://127.0.0.1:{SANDBOX_PORT}",
        "RECONCILE_AFTER_SECONDS": "1",
        "RECONCILE_INTERVAL_SECONDS": "1",
        # Never a checkout's own `lango up` checkpoints (they anchor another database); tests
        # that write checkpoints pass a directory of their own.
        "AUDIT_CHECKPOINT_DIR": str(ROOT / ".lango" / "test" / "audit-checkpoints"),
        **overrides,
    }


@pytest.fixture(scope="session")
def app(database_url: str, redis_url: str):
    app = create_app(make_config(database_url, redis_url))
    app.config["TESTING"] = True
    with app.app_context():
        from core.cli import upgrade_public

        upgrade_public()
    return app


@pytest.fixture(autouse=True)
def _clean_state(request) -> Iterator[None]:
    yield
    if "app" not in request.fixturenames:
        return
    app = request.getfixturevalue("app")
    reset_state(app)


def reset_state(app) -> None:
    """Drop every tenant schema and platform row a test made, and empty Redis."""
    from core.extensions import db

    with app.app_context():
        db.session.remove()
        # A callback still arriving from the sandbox can deadlock with DROP SCHEMA; retry.
        for attempt in range(5):
            try:
                _drop_everything(db)
                break
            except OperationalError:
                if attempt == 4:
                    raise
                time.sleep(0.2)
        app.extensions["lango.redis"].flushdb()


def _drop_everything(db) -> None:
    with db.engine.connect() as connection:
        schemas = (
            connection.exec_driver_sql(
                "SELECT nspname FROM pg_namespace WHERE nspname ~ '^t_[0-9a-z]{26}$'"
            )
            .scalars()
            .all()
        )
        connection.rollback()
    # A few schemas per transaction: one transaction dropping hundreds runs out of lock slots.
    for start in range(0, len(schemas), 20):
        with db.engine.begin() as connection:
            for schema in schemas[start : start + 20]:
                connection.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    with db.engine.begin() as connection:
        connection.exec_driver_sql(
            "TRUNCATE public.api_keys, public.members, public.tenants, public.usage_counters, "
            "public.stripe_events, public.fraud_review_cases, public.phone_blocklist CASCADE"
        )
        connection.exec_driver_sql("TRUNCATE public.kyc_documents, public.kyc_submissions CASCADE")
        connection.exec_driver_sql("TRUNCATE public.staff_users CASCADE")
        # The audit trail refuses TRUNCATE by trigger; tests may empty it with the trigger off.
        # Chain heads and anchors go with it, or the next test's first entry would continue a
        # chain whose entries are gone.
        for table, trigger in (
            ("audit_log", "audit_log_no_truncate"),
            ("audit_anchors", "audit_anchors_no_truncate"),
        ):
            connection.exec_driver_sql(f"ALTER TABLE public.{table} DISABLE TRIGGER {trigger}")
        connection.exec_driver_sql(
            "TRUNCATE public.audit_log, public.audit_chain_heads, public.audit_anchors"
        )
        for table, trigger in (
            ("audit_log", "audit_log_no_truncate"),
            ("audit_anchors", "audit_anchors_no_truncate"),
        ):
            connection.exec_driver_sql(f"ALTER TABLE public.{table} ENABLE TRIGGER {trigger}")


@pytest.fixture
def app_context(app):
    with app.app_context():
        yield
        from core.extensions import db

        db.session.remove()


@pytest.fixture
def client(app):
    return app.test_client()


@dataclass
class SignedUpTenant:
    id: str
    schema: str
    secret: str
    email: str
    key_id: str


@pytest.fixture
def tenant_factory(client):
    """Signs a business up through the public API and returns its ids and test key."""
    counter = iter(range(1_000_000))

    def make(business_name: str = "Duka Ltd") -> SignedUpTenant:
        email = f"owner{next(counter)}-{secrets.token_hex(4)}@example.co.ke"
        response = client.post(
            "/v1/signup",
            json={"business_name": business_name, "email": email, "password": "s3cure-Passw0rd"},
        )
        assert response.status_code == 201, response.get_json()
        _release_shared_session()
        body = response.get_json()
        tenant_id = body["tenant"]["id"]
        return SignedUpTenant(
            id=tenant_id,
            schema="t_" + tenant_id.split("_", 1)[1],
            secret=body["api_key"]["secret"],
            email=email,
            key_id=body["api_key"]["id"],
        )

    return make


def _release_shared_session() -> None:
    """A test client request reuses an app context the test already pushed, and with it the
    scoped session; end whatever transaction the request left so the test starts clean."""
    from flask import has_app_context

    from core.extensions import db

    if has_app_context():
        db.session.remove()


class ApiClient:
    """A test client that sends one tenant's key on every call."""

    def __init__(self, client, secret: str):
        self.client = client
        self.secret = secret

    def _headers(self, headers: dict | None) -> dict:
        return {"Authorization": f"Bearer {self.secret}", **(headers or {})}

    def get(self, path, headers=None, **kwargs):
        return self.client.get(path, headers=self._headers(headers), **kwargs)

    def post(self, path, headers=None, **kwargs):
        return self.client.post(path, headers=self._headers(headers), **kwargs)

    def put(self, path, headers=None, **kwargs):
        return self.client.put(path, headers=self._headers(headers), **kwargs)

    def delete(self, path, headers=None, **kwargs):
        return self.client.delete(path, headers=self._headers(headers), **kwargs)


@pytest.fixture
def tenant(tenant_factory) -> SignedUpTenant:
    return tenant_factory()


@pytest.fixture
def api(client, tenant) -> ApiClient:
    return ApiClient(client, tenant.secret)


@pytest.fixture
def settings_for(database_url, redis_url):
    """Settings for a second app (e.g. with a one-connection pool)."""

    def build(**overrides):
        return load_settings(make_config(database_url, redis_url, **overrides))

    return build
