"""Subscriptions: upgrades apply at once, downgrades at period end, tenants.plan follows."""

import logging
import threading
from datetime import datetime

import pytest
import requests
from sqlalchemy import text

from billing.models import Subscription
from billing.subscriptions import add_months, apply_pending_plan_change
from core.extensions import db
from tests.billing.test_plans import added_plans
from tests.conftest import ApiClient
from tests.payments.test_stk_push import STKPUSHES, push_body

SUBSCRIPTION = "/v1/subscription"
SUBSCRIPTION_FIELDS = {
    "object",
    "id",
    "plan",
    "status",
    "current_period_start",
    "current_period_end",
    "cancel_at_period_end",
    "pending_plan",
    "overage_spending_cap",
}


@pytest.fixture
def extra_plans(app):
    with added_plans(app) as add:
        yield add


def _parse(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def _stored_plans(app, tenant_id) -> tuple[str, str | None, str]:
    """(subscriptions.plan_code, pending_plan_code, tenants.plan) as stored."""
    with app.app_context():
        row = db.session.execute(
            text(
                "SELECT s.plan_code, s.pending_plan_code, t.plan FROM public.subscriptions s "
                "JOIN public.tenants t ON t.id = s.tenant_id WHERE s.tenant_id = :t"
            ),
            {"t": tenant_id},
        ).one()
        db.session.rollback()
    return row[0], row[1], row[2]


def _set_test_usage(app, tenant_id, used):
    with app.app_context():
        db.session.execute(
            text(
                "INSERT INTO public.usage_counters SELECT tenant_id, false, current_period_start, "
                ":used FROM public.subscriptions WHERE tenant_id = :t "
                "ON CONFLICT (tenant_id, livemode, period_start) DO UPDATE SET used = :used"
            ),
            {"t": tenant_id, "used": used},
        )
        db.session.commit()


def test_a_new_tenant_is_on_the_sandbox_plan_for_a_month(api):
    response = api.get(SUBSCRIPTION)

    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == SUBSCRIPTION_FIELDS
    assert body["object"] == "subscription" and body["id"].startswith("sub_")
    assert body["plan"]["object"] == "plan" and body["plan"]["code"] == "sandbox"
    assert body["status"] == "active"
    assert body["pending_plan"] is None and body["overage_spending_cap"] is None
    assert body["cancel_at_period_end"] is False
    assert body["current_period_start"].endswith("Z") and body["current_period_end"].endswith("Z")
    start = _parse(body["current_period_start"])
    assert _parse(body["current_period_end"]) == add_months(start, 1)


def test_an_upgrade_applies_at_once_and_its_allowance_is_usable_at_once(platform, app, api, tenant):
    before = api.get(SUBSCRIPTION).get_json()
    _set_test_usage(app, tenant.id, 1000)  # the sandbox plan's whole test allowance
    refused = api.post(STKPUSHES, json=push_body())
    assert refused.status_code == 402

    response = api.post(SUBSCRIPTION, json={"plan": "starter"})

    assert response.status_code == 200
    body = response.get_json()
    assert body["plan"]["code"] == "starter" and body["pending_plan"] is None
    # The same period keeps counting, now against the starter plan's allowance.
    assert body["current_period_start"] == before["current_period_start"]
    assert body["current_period_end"] == before["current_period_end"]
    assert _stored_plans(app, tenant.id) == ("starter", None, "starter")
    assert api.post(STKPUSHES, json=push_body()).status_code == 202
    usage = api.get("/v1/usage").get_json()
    assert (usage["test_mode_used"], usage["test_allowance"]) == (1001, 10_000)


def test_a_downgrade_waits_for_the_period_end(app, api, tenant):
    api.post(SUBSCRIPTION, json={"plan": "growth"})

    response = api.post(SUBSCRIPTION, json={"plan": "starter"})

    body = response.get_json()
    assert response.status_code == 200
    assert body["plan"]["code"] == "growth" and body["pending_plan"] == "starter"
    assert _stored_plans(app, tenant.id) == ("growth", "starter", "growth")
    with app.app_context():
        subscription = db.session.query(Subscription).filter_by(tenant_id=tenant.id).one()
        applied = apply_pending_plan_change(subscription)
        db.session.commit()
        assert applied.code == "starter"
        assert apply_pending_plan_change(subscription) is None  # nothing pending any more
        db.session.commit()
    assert _stored_plans(app, tenant.id) == ("starter", None, "starter")
    body = api.get(SUBSCRIPTION).get_json()
    assert body["plan"]["code"] == "starter" and body["pending_plan"] is None


def test_choosing_the_current_plan_cancels_a_pending_downgrade(app, api, tenant):
    api.post(SUBSCRIPTION, json={"plan": "scale"})
    assert api.post(SUBSCRIPTION, json={"plan": "sandbox"}).get_json()["pending_plan"] == "sandbox"

    body = api.post(SUBSCRIPTION, json={"plan": "scale"}).get_json()

    assert body["plan"]["code"] == "scale" and body["pending_plan"] is None
    assert _stored_plans(app, tenant.id) == ("scale", None, "scale")


def test_an_upgrade_replaces_a_pending_downgrade(app, api, tenant):
    api.post(SUBSCRIPTION, json={"plan": "growth"})
    api.post(SUBSCRIPTION, json={"plan": "starter"})

    body = api.post(SUBSCRIPTION, json={"plan": "scale"}).get_json()

    assert body["plan"]["code"] == "scale" and body["pending_plan"] is None
    assert _stored_plans(app, tenant.id) == ("scale", None, "scale")


def test_an_unknown_or_retired_plan_is_refused_on_param_plan(app, api, tenant, extra_plans):
    extra_plans("legacy", monthly_price=50_000, active=False)

    for code in ("platinum", "legacy"):
        response = api.post(SUBSCRIPTION, json={"plan": code})
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert error["param"] == "plan" and code in error["message"]
    assert _stored_plans(app, tenant.id) == ("sandbox", None, "sandbox")


def test_spending_cap_and_cancellation_are_set_and_cleared(api):
    capped = api.post(
        SUBSCRIPTION, json={"overage_spending_cap": 300, "cancel_at_period_end": True}
    )
    assert capped.status_code == 200
    assert capped.get_json()["overage_spending_cap"] == 300
    assert capped.get_json()["cancel_at_period_end"] is True

    plan_only = api.post(SUBSCRIPTION, json={"plan": "starter"}).get_json()
    assert plan_only["overage_spending_cap"] == 300  # left alone when not given

    cleared = api.post(
        SUBSCRIPTION, json={"overage_spending_cap": None, "cancel_at_period_end": False}
    )
    assert cleared.get_json()["overage_spending_cap"] is None
    assert cleared.get_json()["cancel_at_period_end"] is False


def test_invalid_changes_name_their_field(api):
    cases = {
        "overage_spending_cap": {"overage_spending_cap": -1},
        "cancel_at_period_end": {"cancel_at_period_end": "maybe"},
        "colour": {"colour": "blue"},
    }
    for param, body in cases.items():
        response = api.post(SUBSCRIPTION, json=body)
        assert response.status_code == 400, body
        assert response.get_json()["error"]["param"] == param
    empty = api.post(SUBSCRIPTION, json={})
    assert empty.status_code == 400 and "plan" in empty.get_json()["error"]["message"]


def test_a_replayed_change_returns_the_first_answer(api):
    first = api.post(SUBSCRIPTION, json={"plan": "growth"}, headers={"Idempotency-Key": "up-1"})
    again = api.post(SUBSCRIPTION, json={"plan": "growth"}, headers={"Idempotency-Key": "up-1"})

    assert again.status_code == 200 and again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"


def test_plan_changes_are_logged_with_the_acting_key(app, api, tenant, caplog):
    caplog.set_level(logging.INFO, logger="lango.billing")

    api.post(SUBSCRIPTION, json={"plan": "growth"})

    changed = [record for record in caplog.records if record.getMessage() == "billing.plan_changed"]
    assert len(changed) == 1
    record = changed[0]
    assert (record.tenant_id, record.from_plan, record.to_plan) == (tenant.id, "sandbox", "growth")
    assert record.actor_key_id == tenant.key_id


def test_once_live_only_a_live_key_changes_the_subscription(app, client, api, tenant):
    from tenants.service import create_api_key, get_tenant

    with app.app_context():
        get_tenant(tenant.id).live_enabled = True
        db.session.commit()
        live_secret = create_api_key(tenant.id, livemode=True, name="live").secret

    refused = api.post(SUBSCRIPTION, json={"plan": "growth"})
    allowed = ApiClient(client, live_secret).post(SUBSCRIPTION, json={"plan": "growth"})

    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "mode_mismatch"
    assert allowed.status_code == 200 and allowed.get_json()["plan"]["code"] == "growth"


def test_concurrent_plan_changes_keep_subscription_and_tenant_in_step(platform, app, tenant):
    choices = ["starter", "growth", "scale", "sandbox", "growth", "starter"] * 4
    statuses: list[int] = []
    lock = threading.Lock()

    def change(plan):
        response = requests.post(
            f"{platform.url}{SUBSCRIPTION}",
            json={"plan": plan},
            headers={"Authorization": f"Bearer {tenant.secret}"},
            timeout=30,
        )
        with lock:
            statuses.append(response.status_code)

    threads = [threading.Thread(target=change, args=(plan,)) for plan in choices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert statuses == [200] * len(choices)
    plan_code, pending, tenant_plan = _stored_plans(app, tenant.id)
    # Every upgrade reached the dearest plan at some point; nothing dearer exists.
    assert plan_code == tenant_plan == "scale"
    assert pending in {None, "sandbox", "starter", "growth"}
