"""Liveness and readiness: /readyz names whatever the platform needs and cannot reach."""

import pytest
from sqlalchemy import text

from core import create_app
from core.extensions import db
from tests.conftest import make_config

CLOSED_PORT = 1  # nothing listens on tcpmux: connections are refused at once


@pytest.fixture
def app_with(app, database_url, redis_url):
    """Build a second app with some settings changed (`app` has migrated the database).

    The extension objects are shared (`core.extensions`), and the rate limiter's storage follows
    the last app built, so afterwards one more app binds them back to the working servers."""
    built = []

    def build(**overrides):
        other = create_app(make_config(database_url, redis_url, **overrides))
        other.config["TESTING"] = True
        built.append(other)
        return other

    yield build
    for other in built:
        with other.app_context():
            db.engine.dispose()
    create_app(make_config(database_url, redis_url))


def _assert_json(response):
    assert response.mimetype == "application/json"
    assert response.headers["Request-Id"].startswith("req_")
    return response.get_json()


def test_healthz_answers_ok_without_touching_dependencies(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert _assert_json(response)["status"] == "ok"


def test_readyz_is_ok_when_every_dependency_is_up_and_migrated(client, tenant):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert _assert_json(response) == {
        "status": "ok",
        "checks": {"postgres": "ok", "redis": "ok", "migrations": "ok"},
    }


def test_readyz_is_503_naming_redis_when_redis_is_unreachable(app_with):
    down = app_with(REDIS_URL=f"redis://127.0.0.1:{CLOSED_PORT}/0")

    response = down.test_client().get("/readyz")

    assert response.status_code == 503
    body = _assert_json(response)
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"].startswith("down: ")
    assert body["checks"]["postgres"] == "ok"
    assert body["checks"]["migrations"] == "ok"


def test_readyz_is_503_naming_postgres_when_postgres_is_unreachable(app_with):
    down = app_with(DATABASE_URL=f"postgresql://postgres@127.0.0.1:{CLOSED_PORT}/lango")

    response = down.test_client().get("/readyz")

    assert response.status_code == 503
    body = _assert_json(response)
    assert body["status"] == "unavailable"
    assert body["checks"]["postgres"].startswith("down: ")
    assert body["checks"]["migrations"] != "ok"
    assert body["checks"]["redis"] == "ok"


def test_readyz_is_503_when_a_tenant_schema_is_behind_head(app, client, tenant_factory):
    tenant_factory("Current Ltd")
    lagging = tenant_factory("Lagging Ltd")
    with app.app_context():
        db.session.execute(
            text("UPDATE public.tenants SET schema_revision = 'an_older_revision' WHERE id = :id"),
            {"id": lagging.id},
        )
        db.session.commit()

    response = client.get("/readyz")

    assert response.status_code == 503
    body = _assert_json(response)
    assert body["checks"]["migrations"] == "behind: 1 of 2 tenant schemas"
    assert body["checks"]["postgres"] == "ok" and body["checks"]["redis"] == "ok"
