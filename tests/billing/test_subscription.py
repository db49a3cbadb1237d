"""Subscriptions: without Stripe an upgrade waits for its invoice to be paid (then applies at
once, with a new period), downgrades wait for period end, tenants.plan follows."""

import logging
import threading
from datetime import datetime

import pytest
import requests
from sqlalchemy import select, text

from billing.invoices import mark_invoice_paid
from billing.models import Invoice, InvoiceStatus, Subscription
from billing.subscriptions import add_months, apply_pending_plan_change
from core.extensions import db
from core.unit_of_work import unit_of_work
from tests.billing.test_invoices import INVOICES, SUCCEEDS, billing_tenant, wait_for_invoice
from tests.billing.test_periods import subscription_of
from tests.billing.test_plans import added_plans
from tests.conftest import ApiClient
from tests.payments.test_stk_push import STKPUSHES, push_body

__all__ = ["billing_tenant"]  # a fixture used here

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
    "awaiting_payment_plan",
    "awaiting_payment_invoice",
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


def upgrade(app, api, plan_code: str) -> None:
    """Choose a dearer plan and pay its upgrade invoice (as a succeeded M-Pesa push of the
    billing tenant does). One request, made before the switch."""
    chosen = api.post(SUBSCRIPTION, json={"plan": plan_code})
    assert chosen.status_code == 200, chosen.get_json()
    invoice_id = chosen.get_json()["awaiting_payment_invoice"]
    assert invoice_id, chosen.get_json()
    pay_upgrade(app, invoice_id)


def pay_upgrade(app, invoice_id: str) -> None:
    with app.app_context():
        total = db.session.get(Invoice, invoice_id).total
        assert mark_invoice_paid(invoice_id, amount=total, livemode=False)
        db.session.commit()


def _open_upgrade_invoices(app, tenant_id) -> list[Invoice]:
    with app.app_context():
        rows = db.session.scalars(
            select(Invoice).where(
                Invoice.tenant_id == tenant_id,
                Invoice.kind == "upgrade",
                Invoice.status == InvoiceStatus.OPEN,
            )
        ).all()
        db.session.expunge_all()
        return list(rows)


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
    assert body["awaiting_payment_plan"] is None and body["awaiting_payment_invoice"] is None
    assert body["cancel_at_period_end"] is False
    assert body["current_period_start"].endswith("Z") and body["current_period_end"].endswith("Z")
    start = _parse(body["current_period_start"])
    assert _parse(body["current_period_end"]) == add_months(start, 1)


def test_an_unpaid_upgrade_keeps_the_current_plan_and_its_quota(platform, app, api, tenant):
    before = api.get(SUBSCRIPTION).get_json()
    _set_test_usage(app, tenant.id, 1000)  # the sandbox plan's whole test allowance

    response = api.post(SUBSCRIPTION, json={"plan": "scale"})

    assert response.status_code == 200
    body = response.get_json()
    assert body["plan"]["code"] == "sandbox" and body["status"] == "active"
    assert body["awaiting_payment_plan"] == "scale" and body["pending_plan"] is None
    assert body["current_period_start"] == before["current_period_start"]
    assert _stored_plans(app, tenant.id) == ("sandbox", None, "sandbox")
    # Still the sandbox plan's allowance: full.
    assert api.post(STKPUSHES, json=push_body()).status_code == 402
    usage = api.get("/v1/usage").get_json()
    assert (usage["plan"], usage["test_allowance"]) == ("sandbox", 1000)
    invoice = api.get(f"{INVOICES}/{body['awaiting_payment_invoice']}").get_json()
    assert (invoice["kind"], invoice["status"], invoice["plan"]) == ("upgrade", "open", "scale")
    assert (invoice["base_fee"], invoice["total"]) == (40_000, 40_000)
    assert invoice["due_at"] <= invoice["period_start"] < invoice["period_end"]


def test_paying_the_upgrade_invoice_by_mpesa_switches_the_plan(
    platform, app, api, tenant, billing_tenant
):
    before = subscription_of(app, tenant.id)
    _set_test_usage(app, tenant.id, 1000)
    invoice_id = api.post(SUBSCRIPTION, json={"plan": "starter"}).get_json()[
        "awaiting_payment_invoice"
    ]

    paying = api.post(f"{INVOICES}/{invoice_id}/pay", json={"phone_number": SUCCEEDS})

    assert paying.status_code == 202, paying.get_json()
    paid = wait_for_invoice(app, api, billing_tenant.id, invoice_id, "paid")
    body = api.get(SUBSCRIPTION).get_json()
    assert body["plan"]["code"] == "starter" and body["status"] == "active"
    assert body["awaiting_payment_plan"] is None and body["awaiting_payment_invoice"] is None
    assert _stored_plans(app, tenant.id) == ("starter", None, "starter")
    # The paid month starts when it was paid: a new period, a new allowance. (Compared as
    # stored: the API shows whole seconds, and the payment can land in the same one.)
    assert subscription_of(app, tenant.id).current_period_start > before.current_period_start
    assert (paid["period_start"], paid["period_end"]) == (
        body["current_period_start"],
        body["current_period_end"],
    )
    assert api.post(STKPUSHES, json=push_body()).status_code == 202
    usage = api.get("/v1/usage").get_json()
    assert (usage["test_mode_used"], usage["test_allowance"]) == (1, 10_000)


def test_a_downgrade_waits_for_the_period_end(app, api, tenant):
    upgrade(app, api, "growth")

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
    upgrade(app, api, "scale")
    assert api.post(SUBSCRIPTION, json={"plan": "sandbox"}).get_json()["pending_plan"] == "sandbox"

    body = api.post(SUBSCRIPTION, json={"plan": "scale"}).get_json()

    assert body["plan"]["code"] == "scale" and body["pending_plan"] is None
    assert _stored_plans(app, tenant.id) == ("scale", None, "scale")


def test_choosing_the_current_plan_voids_an_awaited_upgrade(app, api, tenant):
    awaited = api.post(SUBSCRIPTION, json={"plan": "growth"}).get_json()
    invoice_id = awaited["awaiting_payment_invoice"]

    body = api.post(SUBSCRIPTION, json={"plan": "sandbox"}).get_json()

    assert body["plan"]["code"] == "sandbox" and body["awaiting_payment_plan"] is None
    assert body["awaiting_payment_invoice"] is None and body["pending_plan"] is None
    assert api.get(f"{INVOICES}/{invoice_id}").get_json()["status"] == "void"
    # A payment arriving for it now pays nothing and switches nothing.
    with app.app_context():
        assert mark_invoice_paid(invoice_id, amount=10_000, livemode=False) is False
        db.session.rollback()
    assert _stored_plans(app, tenant.id) == ("sandbox", None, "sandbox")


def test_choosing_another_dearer_plan_replaces_the_awaited_one(app, api, tenant):
    first = api.post(SUBSCRIPTION, json={"plan": "growth"}).get_json()
    again = api.post(SUBSCRIPTION, json={"plan": "growth"}).get_json()
    assert again["awaiting_payment_invoice"] == first["awaiting_payment_invoice"]

    body = api.post(SUBSCRIPTION, json={"plan": "scale"}).get_json()

    assert body["awaiting_payment_plan"] == "scale"
    assert [invoice.id for invoice in _open_upgrade_invoices(app, tenant.id)] == [
        body["awaiting_payment_invoice"]
    ]
    voided = api.get(f"{INVOICES}/{first['awaiting_payment_invoice']}").get_json()
    assert voided["status"] == "void"


def test_an_upgrade_replaces_a_pending_downgrade(app, api, tenant):
    upgrade(app, api, "growth")
    api.post(SUBSCRIPTION, json={"plan": "starter"})

    body = api.post(SUBSCRIPTION, json={"plan": "scale"}).get_json()

    assert body["plan"]["code"] == "growth" and body["pending_plan"] is None
    assert body["awaiting_payment_plan"] == "scale"
    pay_upgrade(app, body["awaiting_payment_invoice"])
    assert _stored_plans(app, tenant.id) == ("scale", None, "scale")


def test_signup_on_a_paid_plan_without_stripe_starts_free_awaiting_it(app, client):
    response = client.post(
        "/v1/signup",
        json={
            "business_name": "Duka Ltd",
            "email": "paid-signup@example.co.ke",
            "password": "s3cure-Passw0rd",
            "plan": "scale",
            "payment_method": "pm_card_visa",
        },
    )

    assert response.status_code == 201, response.get_json()
    payload = response.get_json()
    assert payload["tenant"]["plan"] == "sandbox"
    api = ApiClient(client, payload["api_key"]["secret"])
    body = api.get(SUBSCRIPTION).get_json()
    assert (body["plan"]["code"], body["status"]) == ("sandbox", "active")
    assert body["awaiting_payment_plan"] == "scale"
    invoice = api.get(f"{INVOICES}/{body['awaiting_payment_invoice']}").get_json()
    assert (invoice["kind"], invoice["status"], invoice["total"]) == ("upgrade", "open", 40_000)
    assert _stored_plans(app, payload["tenant"]["id"]) == ("sandbox", None, "sandbox")


def test_an_unknown_or_retired_plan_is_refused_on_param_plan(app, api, tenant, extra_plans):
    extra_plans("legacy", monthly_price=50_000, active=False)

    for code in ("platinum", "legacy"):
        response = api.post(SUBSCRIPTION, json={"plan": code})
        assert response.status_code == 400
        error = response.get_json()["error"]
        assert error["param"] == "plan" and code in error["message"]
    assert _stored_plans(app, tenant.id) == ("sandbox", None, "sandbox")


def test_spending_cap_and_cancellation_are_set_and_cleared(app, api):
    capped = api.post(
        SUBSCRIPTION, json={"overage_spending_cap": 300, "cancel_at_period_end": True}
    )
    assert capped.status_code == 200
    assert capped.get_json()["overage_spending_cap"] == 300
    assert capped.get_json()["cancel_at_period_end"] is True

    upgrade(app, api, "starter")
    plan_only = api.get(SUBSCRIPTION).get_json()
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

    awaiting = [
        record
        for record in caplog.records
        if record.getMessage() == "billing.plan_change_awaiting_payment"
    ]
    assert len(awaiting) == 1
    record = awaiting[0]
    assert (record.tenant_id, record.from_plan, record.to_plan) == (tenant.id, "sandbox", "growth")
    assert record.actor_key_id == tenant.key_id


def test_once_live_only_a_live_key_changes_the_subscription(app, client, api, tenant):
    from tenants.service import create_api_key, get_tenant

    with app.app_context(), unit_of_work():
        get_tenant(tenant.id).live_enabled = True
        live_secret = create_api_key(tenant.id, livemode=True, name="live").secret

    refused = api.post(SUBSCRIPTION, json={"plan": "growth"})
    allowed = ApiClient(client, live_secret).post(SUBSCRIPTION, json={"plan": "growth"})

    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "mode_mismatch"
    assert allowed.status_code == 200 and allowed.get_json()["awaiting_payment_plan"] == "growth"


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
    # Nothing was paid: the tenant is still on the free plan, awaiting at most one plan.
    assert _stored_plans(app, tenant.id) == ("sandbox", None, "sandbox")
    assert len(_open_upgrade_invoices(app, tenant.id)) <= 1
