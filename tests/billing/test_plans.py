"""The plan catalog: public, in catalog order, only plans on offer."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import text

from billing.models import Plan
from billing.subscriptions import forget_rate_limit
from core.extensions import db

PLAN_FIELDS = {
    "object",
    "code",
    "name",
    "monthly_price",
    "included_pushes",
    "overage_price",
    "rate_limit",
    "livemode_allowed",
    "max_webhook_endpoints",
    "test_allowance",
}


def insert_plan(app, code: str, **fields) -> str:
    """A plan for one test (free, test-mode allowance 1000, live allowed, generous limit)."""
    values = {
        "name": code.title(),
        "monthly_price": 0,
        "included_pushes": 0,
        "overage_price": None,
        "rate_limit": "1000 per second",
        "max_webhook_endpoints": 1,
        "livemode_allowed": True,
        "test_allowance": 1000,
        "active": True,
        "position": 90,
        **fields,
    }
    with app.app_context():
        db.session.add(Plan(code=code, **values))
        db.session.commit()
    return code


def remove_plans(app, codes: list[str]) -> None:
    """Move every subscription off the given plans, then delete them."""
    with app.app_context():
        params = {"codes": codes}
        db.session.execute(
            text(
                "UPDATE public.subscriptions SET plan_code = 'sandbox' "
                "WHERE plan_code = ANY(:codes)"
            ),
            params,
        )
        db.session.execute(
            text(
                "UPDATE public.subscriptions SET pending_plan_code = NULL "
                "WHERE pending_plan_code = ANY(:codes)"
            ),
            params,
        )
        db.session.execute(text("DELETE FROM public.plans WHERE code = ANY(:codes)"), params)
        db.session.commit()
    forget_rate_limit()


@contextmanager
def added_plans(app) -> Iterator[Callable[..., str]]:
    """`add("code", **fields)` inserts a plan; every plan added is removed on exit."""
    added: list[str] = []

    def add(code: str, **fields) -> str:
        added.append(insert_plan(app, code, **fields))
        return code

    try:
        yield add
    finally:
        remove_plans(app, added)


@pytest.fixture
def extra_plans(app):
    with added_plans(app) as add:
        yield add


def test_plan_list_is_public_and_in_catalog_order(client):
    response = client.get("/v1/plans")

    assert response.status_code == 200
    body = response.get_json()
    assert body["object"] == "list" and body["has_more"] is False
    assert [plan["code"] for plan in body["data"]] == ["sandbox", "starter", "growth", "scale"]
    assert all(set(plan) == PLAN_FIELDS for plan in body["data"])
    sandbox, starter = body["data"][0], body["data"][1]
    assert sandbox == {
        "object": "plan",
        "code": "sandbox",
        "name": "Sandbox",
        "monthly_price": 0,
        "included_pushes": 0,
        "overage_price": None,
        "rate_limit": "25 per second",
        "livemode_allowed": False,
        "max_webhook_endpoints": 2,
        "test_allowance": 1000,
    }
    assert (starter["monthly_price"], starter["overage_price"]) == (2500, 3)
    assert starter["livemode_allowed"] is True


def test_retired_plans_are_not_listed_and_new_ones_follow_their_position(client, extra_plans):
    extra_plans("legacy", active=False, position=0)
    extra_plans("enterprise", monthly_price=99_000, position=10)

    codes = [plan["code"] for plan in client.get("/v1/plans").get_json()["data"]]

    assert codes == ["sandbox", "starter", "growth", "scale", "enterprise"]


def test_plan_list_ignores_whatever_key_is_sent(client):
    response = client.get("/v1/plans", headers={"Authorization": "Bearer sk_test_nonsense"})

    assert response.status_code == 200


def test_openapi_documents_the_plan_list_as_public(client):
    operation = client.get("/openapi.json").get_json()["paths"]["/v1/plans"]["get"]

    assert operation["security"] == []
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema == {"$ref": "#/components/schemas/PlanList"}
