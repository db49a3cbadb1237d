"""Rate limits per tenant, from the caller's plan (Flask-Limiter on Redis)."""

import pytest
from sqlalchemy import text

from billing.subscriptions import forget_rate_limit
from core.extensions import db
from core.unit_of_work import unit_of_work
from tests.billing.test_plans import added_plans
from tests.billing.test_subscription import upgrade
from tests.conftest import ApiClient


@pytest.fixture
def extra_plans(app):
    with added_plans(app) as add:
        yield add


def test_a_plan_with_a_low_limit_gets_429_with_its_limit_in_the_headers(app, api, extra_plans):
    extra_plans("throttled", monthly_price=1, rate_limit="3 per minute")
    # An upgrade: its limit applies from the next request on.
    upgrade(app, api, "throttled")

    allowed = [api.get("/v1/tenant") for _ in range(3)]
    limited = api.get("/v1/tenant")

    assert [response.status_code for response in allowed] == [200, 200, 200]
    assert [r.headers["X-RateLimit-Remaining"] for r in allowed] == ["2", "1", "0"]
    assert limited.status_code == 429
    error = limited.get_json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "rate_limited")
    assert error["request_id"] == limited.headers["Request-Id"]
    assert limited.headers["X-RateLimit-Limit"] == "3"
    assert limited.headers["X-RateLimit-Remaining"] == "0"
    assert int(limited.headers["X-RateLimit-Reset"]) > 0
    assert 0 < int(limited.headers["Retry-After"]) <= 60


def test_a_tenant_cannot_multiply_its_limit_by_minting_keys(app, client, api, tenant, extra_plans):
    from tenants.service import create_api_key

    extra_plans("throttled", monthly_price=1, rate_limit="4 per minute")
    upgrade(app, api, "throttled")
    with app.app_context(), unit_of_work():
        others = [
            ApiClient(client, create_api_key(tenant.id, livemode=False, name=f"k{n}").secret)
            for n in range(3)
        ]

    # Each new key is a fresh client, but all draw on the tenant's one allowance.
    statuses = [api.get("/v1/tenant").status_code for _ in range(2)]
    statuses += [other.get("/v1/tenant").status_code for other in others]

    assert statuses == [200, 200, 200, 200, 429]


def test_one_tenants_traffic_leaves_anothers_limit_alone(
    app, client, api, tenant_factory, extra_plans
):
    extra_plans("throttled", monthly_price=1, rate_limit="2 per minute")
    upgrade(app, api, "throttled")
    neighbour = ApiClient(client, tenant_factory().secret)

    ours = [api.get("/v1/tenant").status_code for _ in range(3)]
    theirs = [neighbour.get("/v1/tenant").status_code for _ in range(2)]

    assert ours == [200, 200, 429]
    assert theirs == [200, 200]


def test_each_plan_in_the_catalog_sets_its_own_limit(app, api):
    assert api.get("/v1/tenant").headers["X-RateLimit-Limit"] == "25"  # sandbox

    upgrade(app, api, "growth")

    assert api.get("/v1/tenant").headers["X-RateLimit-Limit"] == "100"


def test_requests_without_a_key_get_the_default_limit(client):
    response = client.get("/v1/plans")

    assert response.headers["X-RateLimit-Limit"] == "100"  # RATELIMIT_API_KEY


def test_an_unreadable_plan_limit_falls_back_to_the_default(app, api, tenant, extra_plans):
    extra_plans("broken", rate_limit="as many as you like")
    with app.app_context():
        db.session.execute(
            text("UPDATE public.subscriptions SET plan_code = 'broken' WHERE tenant_id = :t"),
            {"t": tenant.id},
        )
        db.session.commit()

    response = api.get("/v1/tenant")

    assert response.status_code == 200
    assert response.headers["X-RateLimit-Limit"] == "100"


def test_plan_limits_are_cached_briefly_in_process(app, api, tenant, extra_plans):
    extra_plans("cached", monthly_price=1, rate_limit="40 per second")
    upgrade(app, api, "cached")
    assert api.get("/v1/tenant").headers["X-RateLimit-Limit"] == "40"
    with app.app_context():  # an operator edits the plan behind the app's back
        db.session.execute(
            text("UPDATE public.plans SET rate_limit = '41 per second' WHERE code = 'cached'")
        )
        db.session.commit()

    assert api.get("/v1/tenant").headers["X-RateLimit-Limit"] == "40"
    forget_rate_limit(tenant.id)  # what RATE_LIMIT_CACHE_SECONDS does on its own
    assert api.get("/v1/tenant").headers["X-RateLimit-Limit"] == "41"
