"""Stripe billing against a real localstripe server and a real PostgreSQL: customers and
subscriptions at signup, declined cards, the webhook's signature check, exactly-once event
handling, and dunning through Stripe's payment events."""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from datetime import UTC, datetime, timedelta

import pytest
import stripe
from sqlalchemy import func, select

from billing.models import Invoice, InvoiceStatus, Plan, StripeEvent, Subscription
from billing.models import SubscriptionStatus as Status
from core.extensions import db
from core.unit_of_work import unit_of_work
from tenants.models import Member, Tenant, TenantStatus
from tests.conftest import ApiClient, free_port
from tests.payments.test_stk_push import STKPUSHES, push_body
from tests.stripe_server import WEBHOOK_SECRET

CALLBACK = "/callbacks/stripe"
GOOD_CARD = "pm_card_visa"
CHARGE_DECLINED_CARD = "pm_card_chargeCustomerFail"  # attaches; every charge is declined
ATTACH_DECLINED_CARD = "pm_card_visa_chargeDeclined"  # refused when attached


@dataclasses.dataclass(frozen=True)
class Signup:
    tenant_id: str
    secret: str
    email: str


def new_email() -> str:
    return f"owner-{secrets.token_hex(4)}@example.co.ke"


def sign_up(client, plan="starter", payment_method=None, *, expect=201, email=None):
    email = email or new_email()
    body = {"business_name": "Duka Ltd", "email": email, "password": "s3cure-Passw0rd"}
    if plan:
        body["plan"] = plan
    if payment_method:
        body["payment_method"] = payment_method
    response = client.post("/v1/signup", json=body)
    assert response.status_code == expect, response.get_json()
    if expect != 201:
        return response
    payload = response.get_json()
    return Signup(payload["tenant"]["id"], payload["api_key"]["secret"], email)


def subscription_of(app, tenant_id: str) -> Subscription:
    with app.app_context():
        subscription = db.session.scalars(
            select(Subscription).where(Subscription.tenant_id == tenant_id)
        ).one()
        db.session.expunge(subscription)
        db.session.remove()
    return subscription


def tenant_of(app, tenant_id: str) -> Tenant:
    with app.app_context():
        tenant = db.session.get(Tenant, tenant_id)
        db.session.expunge(tenant)
        db.session.remove()
    return tenant


def members_with(app, email: str) -> int:
    with app.app_context():
        count = db.session.scalar(select(func.count()).where(Member.email == email))
        db.session.remove()
    return count


def set_status(app, tenant_id: str, status: Status) -> None:
    with app.app_context():
        subscription = db.session.scalars(
            select(Subscription).where(Subscription.tenant_id == tenant_id)
        ).one()
        subscription.status = status
        db.session.commit()
        db.session.remove()


def stripe_event(event_type: str, stripe_object: dict, *, created: int | None = None) -> dict:
    return {
        "id": "evt_" + secrets.token_hex(12),
        "object": "event",
        "type": event_type,
        "created": created or int(time.time()),
        "livemode": False,
        "data": {"object": stripe_object},
    }


def post_event(client, event: dict, *, secret: str = WEBHOOK_SECRET, timestamp=None):
    """Deliver an event signed with Stripe's scheme (t=…,v1=HMAC-SHA256 of "t.payload")."""
    payload = json.dumps(event)
    header = stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp)
    return client.post(
        CALLBACK,
        data=payload,
        headers={"Stripe-Signature": header, "Content-Type": "application/json"},
    )


def live_key(app, tenant_id: str) -> str:
    """Turn live mode on for the tenant (credentials stored, enabled) and mint a live key."""
    from payments.credentials import save_credentials
    from tenants.service import create_api_key, get_tenant

    with app.app_context(), unit_of_work():
        save_credentials(
            tenant_id,
            shortcode="174379",
            kind="paybill",
            till_number=None,
            consumer_key="lango_sandbox_key",
            consumer_secret="lango_sandbox_secret",
            passkey=app.extensions["lango.settings"].SANDBOX_PASSKEY,
        )
        get_tenant(tenant_id).live_enabled = True
        secret = create_api_key(tenant_id, livemode=True, name="live").secret
    return secret


def wait_for(predicate, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"not true after {timeout} s")


# --- signup ------------------------------------------------------------------------------


def test_signup_on_a_paid_plan_creates_customer_and_subscription(app, client, stripe_billing):
    signed_up = sign_up(client, "starter", GOOD_CARD)

    subscription = subscription_of(app, signed_up.tenant_id)
    assert subscription.status is Status.ACTIVE
    assert subscription.stripe_customer_id.startswith("cus_")
    stripe_client = stripe_billing.client()
    customer = stripe_client.v1.customers.retrieve(subscription.stripe_customer_id).to_dict()
    assert customer["email"] == signed_up.email
    assert customer["metadata"]["tenant_id"] == signed_up.tenant_id
    in_stripe = stripe_client.v1.subscriptions.retrieve(
        subscription.stripe_subscription_id
    ).to_dict()
    assert in_stripe["status"] == "active"
    assert in_stripe["customer"] == subscription.stripe_customer_id
    plan = in_stripe["items"]["data"][0]["plan"]
    # Stripe's KES has two decimals: 2,500 KES a month is 250000.
    assert (plan["id"], plan["amount"], plan["currency"]) == (
        "lango_starter_2500_kes",
        250000,
        "kes",
    )
    with app.app_context():
        assert db.session.get(Plan, "starter").stripe_plan_id == "lango_starter_2500_kes"
        db.session.remove()


def test_signup_on_a_free_plan_leaves_stripe_alone(app, client, stripe_billing):
    signed_up = sign_up(client, "sandbox", GOOD_CARD)

    subscription = subscription_of(app, signed_up.tenant_id)
    assert subscription.status is Status.ACTIVE
    assert (subscription.stripe_customer_id, subscription.stripe_subscription_id) == (None, None)


def test_a_declining_card_leaves_the_subscription_incomplete_and_live_mode_off(
    app, client, stripe_billing
):
    signed_up = sign_up(client, "starter", CHARGE_DECLINED_CARD)

    subscription = subscription_of(app, signed_up.tenant_id)
    assert subscription.status is Status.INCOMPLETE
    in_stripe = stripe_billing.client().v1.subscriptions.retrieve(
        subscription.stripe_subscription_id
    )
    assert in_stripe.status == "incomplete"
    live = ApiClient(client, live_key(app, signed_up.tenant_id))
    refused = live.post(STKPUSHES, json=push_body())
    assert refused.status_code == 403
    error = refused.get_json()["error"]
    assert (error["code"], error["subscription_status"]) == ("livemode_not_enabled", "incomplete")
    # Test mode is unaffected.
    assert ApiClient(client, signed_up.secret).get("/v1/tenant").status_code == 200


def test_a_working_card_later_completes_an_incomplete_subscription(app, client, stripe_billing):
    signed_up = sign_up(client, "starter", CHARGE_DECLINED_CARD)
    declined = subscription_of(app, signed_up.tenant_id)

    response = ApiClient(client, signed_up.secret).post(
        "/v1/subscription", json={"payment_method": GOOD_CARD}
    )

    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "active"
    completed = subscription_of(app, signed_up.tenant_id)
    assert completed.stripe_subscription_id != declined.stripe_subscription_id
    stripe_client = stripe_billing.client()
    assert stripe_client.v1.subscriptions.retrieve(completed.stripe_subscription_id).status == (
        "active"
    )
    assert stripe_client.v1.subscriptions.retrieve(declined.stripe_subscription_id).status == (
        "canceled"
    )


def test_a_paid_plan_without_a_card_waits_incomplete(app, client, stripe_billing):
    signed_up = sign_up(client, "starter")

    subscription = subscription_of(app, signed_up.tenant_id)
    assert subscription.status is Status.INCOMPLETE
    assert subscription.stripe_customer_id.startswith("cus_")
    assert subscription.stripe_subscription_id is None


def test_upgrading_with_a_card_subscribes_in_stripe(app, client, stripe_billing):
    signed_up = sign_up(client, "sandbox")

    response = ApiClient(client, signed_up.secret).post(
        "/v1/subscription", json={"plan": "growth", "payment_method": GOOD_CARD}
    )

    assert response.status_code == 200, response.get_json()
    subscription = subscription_of(app, signed_up.tenant_id)
    assert (subscription.plan_code, subscription.status) == ("growth", Status.ACTIVE)
    in_stripe = stripe_billing.client().v1.subscriptions.retrieve(
        subscription.stripe_subscription_id
    )
    assert in_stripe.to_dict()["items"]["data"][0]["plan"]["amount"] == 10_000 * 100


def test_an_unknown_payment_method_is_a_400(client, stripe_billing):
    response = sign_up(client, "starter", "pm_no_such_method", expect=400)

    error = response.get_json()["error"]
    assert (error["code"], error["param"]) == ("payment_method_invalid", "payment_method")


def test_without_stripe_billing_runs_on_lango_alone(app, client):
    signed_up = sign_up(client, "starter", GOOD_CARD)

    subscription = subscription_of(app, signed_up.tenant_id)
    assert subscription.status is Status.ACTIVE
    assert (subscription.stripe_customer_id, subscription.stripe_subscription_id) == (None, None)


def test_a_card_refused_when_attached_creates_nothing(app, client, stripe_billing):
    email = new_email()

    response = sign_up(client, "starter", ATTACH_DECLINED_CARD, expect=402, email=email)

    error = response.get_json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "card_error",
        "card_declined",
        "payment_method",
    )
    assert members_with(app, email) == 0


def test_stripe_unreachable_at_signup_fails_it_and_creates_nothing(
    app, client, stripe_billing, monkeypatch
):
    settings = app.extensions["lango.settings"]
    nothing_listens = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setitem(
        app.extensions,
        "lango.settings",
        dataclasses.replace(settings, STRIPE_API_BASE=nothing_listens),
    )

    email = new_email()

    response = sign_up(client, "starter", GOOD_CARD, expect=503, email=email)

    assert response.get_json()["error"]["code"] == "stripe_unavailable"
    assert members_with(app, email) == 0


# --- the webhook -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"secret": "whsec_not_ours"}, id="wrong-secret"),
        pytest.param({"timestamp": int(time.time()) - 3600}, id="an-hour-old"),
    ],
)
def test_a_webhook_with_a_bad_signature_is_rejected(app, client, stripe_billing, headers):
    event = stripe_event("customer.subscription.deleted", {"id": "sub_x", "object": "x"})

    response = post_event(client, event, **headers)

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "signature_invalid")
    assert error["request_id"].startswith("req_")
    with app.app_context():
        assert db.session.get(StripeEvent, event["id"]) is None
        db.session.remove()


def test_a_webhook_without_a_signature_is_rejected(client, stripe_billing):
    response = client.post(CALLBACK, json=stripe_event("invoice.payment_succeeded", {}))

    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "signature_invalid"


def test_the_same_event_twice_is_applied_once(app, client, stripe_billing):
    signed_up = sign_up(client, "starter", GOOD_CARD)
    subscription = subscription_of(app, signed_up.tenant_id)
    in_stripe = stripe_billing.client().v1.subscriptions.retrieve(
        subscription.stripe_subscription_id
    )
    event = stripe_event(
        "customer.subscription.updated", {**in_stripe.to_dict(), "status": "past_due"}
    )

    first = post_event(client, event)
    assert first.status_code == 200
    assert first.get_json() == {
        "id": event["id"],
        "type": "customer.subscription.updated",
        "status": "applied",
        "duplicate": False,
    }
    assert subscription_of(app, signed_up.tenant_id).status is Status.PAST_DUE
    # Paid meanwhile: a replay of the old event must not make it past due again.
    set_status(app, signed_up.tenant_id, Status.ACTIVE)

    second = post_event(client, event)

    assert second.status_code == 200
    assert second.get_json()["duplicate"] is True
    assert subscription_of(app, signed_up.tenant_id).status is Status.ACTIVE
    with app.app_context():
        rows = db.session.scalars(select(StripeEvent).where(StripeEvent.id == event["id"])).all()
        assert [(row.status, row.type) for row in rows] == [("applied", event["type"])]
        db.session.remove()


def test_event_types_lango_does_not_handle_are_recorded_as_ignored(app, client, stripe_billing):
    event = stripe_event("customer.created", {"id": "cus_123", "object": "customer"})

    response = post_event(client, event)

    assert response.status_code == 200
    assert response.get_json()["status"] == "ignored"
    with app.app_context():
        assert db.session.get(StripeEvent, event["id"]).status == "ignored"
        db.session.remove()


def test_subscription_updated_mirrors_a_plan_changed_in_stripe(app, client, stripe_billing):
    from billing import stripe_gateway

    signed_up = sign_up(client, "starter", GOOD_CARD)
    subscription = subscription_of(app, signed_up.tenant_id)
    with app.app_context():
        growth_plan_id = stripe_gateway.ensure_plan(db.session.get(Plan, "growth"))
        db.session.remove()
    stripe_client = stripe_billing.client()
    item = stripe_client.v1.subscriptions.retrieve(subscription.stripe_subscription_id).to_dict()
    changed = stripe_client.v1.subscriptions.update(
        subscription.stripe_subscription_id,
        params={"items": [{"id": item["items"]["data"][0]["id"], "plan": growth_plan_id}]},
    )

    response = post_event(client, stripe_event("customer.subscription.updated", changed.to_dict()))

    assert response.get_json()["status"] == "applied"
    assert subscription_of(app, signed_up.tenant_id).plan_code == "growth"
    assert tenant_of(app, signed_up.tenant_id).plan == "growth"


def test_subscription_deleted_cancels_it_and_live_mode_stops(app, client, stripe_billing):
    signed_up = sign_up(client, "starter", GOOD_CARD)
    subscription = subscription_of(app, signed_up.tenant_id)
    canceled = stripe_billing.client().v1.subscriptions.cancel(subscription.stripe_subscription_id)

    response = post_event(client, stripe_event("customer.subscription.deleted", canceled.to_dict()))

    assert response.get_json()["status"] == "applied"
    assert subscription_of(app, signed_up.tenant_id).status is Status.CANCELED
    refused = ApiClient(client, live_key(app, signed_up.tenant_id)).post(
        STKPUSHES, json=push_body()
    )
    assert refused.get_json()["error"]["subscription_status"] == "canceled"


# --- dunning through Stripe ----------------------------------------------------------------


def _open_invoice(app, tenant_id: str, stripe_invoice_id: str, *, due_days_ago: int) -> str:
    """Lango's invoice for a closed period, collected by the given Stripe invoice."""
    now = datetime.now(UTC)
    invoice = Invoice(
        id="inv_" + secrets.token_hex(8),
        tenant_id=tenant_id,
        plan_code="starter",
        period_start=now - timedelta(days=31 + due_days_ago),
        period_end=now - timedelta(days=due_days_ago),
        base_fee=2500,
        included_pushes=1000,
        used_pushes=0,
        overage_pushes=0,
        overage_amount=0,
        total=2500,
        status=InvoiceStatus.OPEN,
        lines=[],
        due_at=now - timedelta(days=due_days_ago),
        stripe_invoice_id=stripe_invoice_id,
        created_at=now,
    )
    with app.app_context():
        db.session.add(invoice)
        db.session.commit()
        invoice_id = invoice.id
        db.session.remove()
    return invoice_id


def _invoice_status(app, invoice_id: str) -> InvoiceStatus:
    with app.app_context():
        status = db.session.get(Invoice, invoice_id).status
        db.session.remove()
    return status


def test_payment_failed_within_grace_marks_past_due_only(app, client, stripe_billing):
    signed_up = sign_up(client, "starter", GOOD_CARD)
    subscription = subscription_of(app, signed_up.tenant_id)
    stripe_client = stripe_billing.client()
    latest = stripe_client.v1.subscriptions.retrieve(subscription.stripe_subscription_id)
    stripe_invoice = stripe_client.v1.invoices.retrieve(latest.latest_invoice).to_dict()
    _open_invoice(app, signed_up.tenant_id, stripe_invoice["id"], due_days_ago=2)

    response = post_event(client, stripe_event("invoice.payment_failed", stripe_invoice))

    assert response.get_json()["status"] == "applied"
    assert subscription_of(app, signed_up.tenant_id).status is Status.PAST_DUE
    assert tenant_of(app, signed_up.tenant_id).status is TenantStatus.ACTIVE


def test_payment_failed_past_grace_suspends_and_payment_succeeded_reinstates(
    platform, app, client, stripe_billing
):
    signed_up = sign_up(client, "starter", CHARGE_DECLINED_CARD)
    subscription = subscription_of(app, signed_up.tenant_id)
    stripe_client = stripe_billing.client()
    latest = stripe_client.v1.subscriptions.retrieve(subscription.stripe_subscription_id)
    stripe_invoice = stripe_client.v1.invoices.retrieve(latest.latest_invoice).to_dict()
    assert stripe_invoice["status"] == "open"
    invoice_id = _open_invoice(app, signed_up.tenant_id, stripe_invoice["id"], due_days_ago=8)
    api = ApiClient(client, signed_up.secret)

    failed = post_event(client, stripe_event("invoice.payment_failed", stripe_invoice))

    assert failed.get_json()["status"] == "applied"
    tenant = tenant_of(app, signed_up.tenant_id)
    assert (tenant.status, tenant.suspended_reason) == (TenantStatus.SUSPENDED, "billing")
    refused = api.get("/v1/tenant")
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "tenant_suspended"

    # The customer fixes the card and Stripe collects the invoice; localstripe itself posts
    # the signed invoice.payment_succeeded event to Lango, served for real.
    stripe_billing.send_webhooks_to(
        f"{platform.url}{CALLBACK}", events=["invoice.payment_succeeded"]
    )
    card = stripe_client.v1.payment_methods.attach(
        GOOD_CARD, params={"customer": subscription.stripe_customer_id}
    )
    stripe_client.v1.customers.update(
        subscription.stripe_customer_id,
        params={"invoice_settings": {"default_payment_method": card.id}},
    )
    assert stripe_client.v1.invoices.pay(stripe_invoice["id"]).status == "paid"

    wait_for(lambda: tenant_of(app, signed_up.tenant_id).status is TenantStatus.ACTIVE)
    assert tenant_of(app, signed_up.tenant_id).suspended_reason is None
    assert _invoice_status(app, invoice_id) is InvoiceStatus.PAID
    assert subscription_of(app, signed_up.tenant_id).status is Status.ACTIVE
    assert api.get("/v1/tenant").status_code == 200
    with app.app_context():
        delivered = db.session.scalars(
            select(StripeEvent).where(StripeEvent.type == "invoice.payment_succeeded")
        ).all()
        db.session.remove()
    ours = [e for e in delivered if e.payload["data"]["object"]["id"] == stripe_invoice["id"]]
    assert [event.status for event in ours] == ["applied"]
