"""Invoices through the API: shape, pagination, isolation, and paying one by M-Pesa through
the Daraja sandbox from the platform's own (billing) tenant."""

from __future__ import annotations

import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import text

from billing import invoices as invoice_service
from billing.models import Invoice, InvoiceStatus
from billing.subscriptions import add_months
from core.extensions import db
from core.outbox import dispatch
from core.tenancy import tenant_scope
from payments.models import StkPush
from tests.billing.test_periods import PERIOD_END, bill_on, close
from tests.conftest import ApiClient

INVOICES = "/v1/invoices"
SUCCEEDS = "254708374149"
INSUFFICIENT_FUNDS = "254700000001"
NO_CALLBACK = "254700000099"

INVOICE_FIELDS = {
    "object",
    "id",
    "kind",
    "status",
    "period_start",
    "period_end",
    "plan",
    "base_fee",
    "included_pushes",
    "used_pushes",
    "overage_pushes",
    "overage_amount",
    "total",
    "currency",
    "lines",
    "due_at",
    "paid_at",
    "stripe_invoice_id",
    "mpesa_stk_push_id",
}


@contextmanager
def billing_tenant_configured(app, tenant_id: str):
    """Make `tenant_id` the platform's billing tenant for the block (settings are frozen)."""
    settings = app.extensions["lango.settings"]
    previous = settings.BILLING_TENANT_ID
    object.__setattr__(settings, "BILLING_TENANT_ID", tenant_id)
    try:
        yield
    finally:
        object.__setattr__(settings, "BILLING_TENANT_ID", previous)


@pytest.fixture
def billing_tenant(app, tenant_factory):
    made = tenant_factory("Lango Billing")
    with billing_tenant_configured(app, made.id):
        yield made


def open_invoice(app, tenant_id, plan="starter", used=1_200) -> str:
    """Close one period for the tenant, leaving an open invoice; returns its id."""
    bill_on(app, tenant_id, plan, used=used)
    return close(app, tenant_id)


def invoice_row(app, invoice_id) -> Invoice:
    with app.app_context():
        invoice = db.session.get(Invoice, invoice_id)
        db.session.expunge_all()
        return invoice


def dispatch_events(app, tenant_id) -> None:
    """Run the outbox dispatcher for the tenant, as an `events` worker would: a billing
    tenant's succeeded push settles its invoice in billing's subscriber."""
    with app.app_context():
        dispatch(tenant_id)


def wait_for_invoice(app, api, billing_tenant_id, invoice_id, status, timeout=20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dispatch_events(app, billing_tenant_id)
        invoice = api.get(f"{INVOICES}/{invoice_id}").get_json()
        if invoice["status"] == status:
            return invoice
        time.sleep(0.1)
    raise AssertionError(f"invoice {invoice_id} not {status} after {timeout} s")


def billing_push(app, billing_tenant_id, push_id) -> StkPush:
    with app.app_context(), tenant_scope(billing_tenant_id):
        push = db.session.get(StkPush, push_id)
        db.session.expunge_all()
        return push


def wait_for_push(app, billing_tenant_id, push_id, timeout=20.0) -> StkPush:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        push = billing_push(app, billing_tenant_id, push_id)
        if push.status.is_final:
            return push
        time.sleep(0.1)
    raise AssertionError(f"push {push_id} still pending after {timeout} s")


# --- reading ---------------------------------------------------------------------------


def test_invoice_object_has_the_documented_shape(app, api, tenant):
    invoice_id = open_invoice(app, tenant.id)

    listed = api.get(INVOICES)
    one = api.get(f"{INVOICES}/{invoice_id}")

    assert listed.status_code == one.status_code == 200
    body = listed.get_json()
    assert body["object"] == "list" and body["has_more"] is False
    assert body["data"] == [one.get_json()]
    invoice = one.get_json()
    assert set(invoice) == INVOICE_FIELDS
    assert invoice == {
        "object": "invoice",
        "id": invoice_id,
        "kind": "period",
        "status": "open",
        "period_start": "2026-01-31T09:30:00Z",
        "period_end": "2026-02-28T09:30:00Z",
        "plan": "starter",
        "base_fee": 2500,
        "included_pushes": 1000,
        "used_pushes": 1200,
        "overage_pushes": 200,
        "overage_amount": 600,
        "total": 3100,
        "currency": "KES",
        "lines": [
            {
                "type": "base_fee",
                "description": "Starter plan, 2026-01-31 to 2026-02-28",
                "quantity": 1,
                "unit_amount": 2500,
                "amount": 2500,
            },
            {
                "type": "overage",
                "description": "200 live pushes beyond the 1000 included",
                "quantity": 200,
                "unit_amount": 3,
                "amount": 600,
            },
        ],
        "due_at": "2026-02-28T09:30:00Z",
        "paid_at": None,
        "stripe_invoice_id": None,
        "mpesa_stk_push_id": None,
    }


def test_invoices_list_newest_first_with_cursor_pagination(app, api, tenant):
    bill_on(app, tenant.id, "starter")
    with app.app_context():
        from billing.periods import close_due_periods

        close_due_periods(now=add_months(PERIOD_END, 2) + timedelta(hours=1))  # 3 periods

    first = api.get(f"{INVOICES}?limit=2").get_json()
    rest = api.get(f"{INVOICES}?limit=2&starting_after={first['data'][-1]['id']}").get_json()
    back = api.get(f"{INVOICES}?limit=2&ending_before={rest['data'][0]['id']}").get_json()

    starts = [invoice["period_start"][:10] for invoice in first["data"] + rest["data"]]
    assert starts == ["2026-03-28", "2026-02-28", "2026-01-31"]
    assert (first["has_more"], rest["has_more"]) == (True, False)
    assert back["data"] == first["data"]
    assert api.get(f"{INVOICES}?limit=0").status_code == 400


def test_a_tenant_sees_only_its_own_invoices(app, client, tenant_factory):
    owner, other = tenant_factory(), tenant_factory()
    invoice_id = open_invoice(app, owner.id)
    other_api = ApiClient(client, other.secret)

    assert other_api.get(INVOICES).get_json()["data"] == []
    for response in (
        other_api.get(f"{INVOICES}/{invoice_id}"),
        other_api.post(f"{INVOICES}/{invoice_id}/pay", json={"phone_number": SUCCEEDS}),
        other_api.get(f"{INVOICES}/inv_doesnotexist"),
    ):
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "resource_missing"


def test_invoices_need_an_api_key(client):
    response = client.get(INVOICES)
    assert response.status_code == 401


# --- paying by M-Pesa ------------------------------------------------------------------


def test_paying_an_invoice_by_mpesa_marks_it_paid(platform, app, api, tenant, billing_tenant):
    invoice_id = open_invoice(app, tenant.id)

    response = api.post(f"{INVOICES}/{invoice_id}/pay", json={"phone_number": "0708374149"})

    assert response.status_code == 202, response.get_json()
    started = response.get_json()
    assert started["status"] == "open" and started["id"] == invoice_id
    push_id = started["mpesa_stk_push_id"]
    assert push_id.startswith("stk_")
    paid = wait_for_invoice(app, api, billing_tenant.id, invoice_id, "paid")
    assert paid["paid_at"].endswith("Z") and paid["mpesa_stk_push_id"] == push_id
    # Lango dogfooding: an ordinary push of the billing tenant collected the money.
    push = billing_push(app, billing_tenant.id, push_id)
    assert (push.status.value, push.amount, push.livemode) == ("succeeded", 3100, False)
    assert push.phone_number == SUCCEEDS
    assert push.metadata_["lango_invoice_id"] == invoice_id
    # The paying tenant's own pushes and quota are untouched.
    assert api.get("/v1/stk-pushes").get_json()["data"] == []


def test_a_failed_payment_leaves_the_invoice_open_to_pay_again(
    platform, app, api, tenant, billing_tenant
):
    invoice_id = open_invoice(app, tenant.id)

    failed = api.post(f"{INVOICES}/{invoice_id}/pay", json={"phone_number": INSUFFICIENT_FUNDS})
    assert failed.status_code == 202
    push = wait_for_push(app, billing_tenant.id, failed.get_json()["mpesa_stk_push_id"])
    assert push.status.value == "failed"
    assert api.get(f"{INVOICES}/{invoice_id}").get_json()["status"] == "open"

    retried = api.post(f"{INVOICES}/{invoice_id}/pay", json={"phone_number": SUCCEEDS})
    assert retried.status_code == 202
    assert (
        wait_for_invoice(app, api, billing_tenant.id, invoice_id, "paid")["mpesa_stk_push_id"]
        == (retried.get_json()["mpesa_stk_push_id"])
    )


def test_a_second_payment_waits_for_the_first(platform, app, api, tenant, billing_tenant):
    invoice_id = open_invoice(app, tenant.id)
    first = api.post(f"{INVOICES}/{invoice_id}/pay", json={"phone_number": NO_CALLBACK})
    assert first.status_code == 202

    second = api.post(f"{INVOICES}/{invoice_id}/pay", json={"phone_number": SUCCEEDS})

    assert second.status_code == 409
    error = second.get_json()["error"]
    assert error["code"] == "invoice_payment_in_progress"
    assert error["stk_push_id"] == first.get_json()["mpesa_stk_push_id"]


def test_a_push_whose_id_was_never_saved_still_holds_off_a_second_prompt(
    platform, app, api, tenant, billing_tenant
):
    invoice_id = open_invoice(app, tenant.id)
    first = api.post(f"{INVOICES}/{invoice_id}/pay", json={"phone_number": NO_CALLBACK})
    assert first.status_code == 202
    with app.app_context():
        # The process died after the push was sent, before the invoice recorded it.
        db.session.execute(
            text("UPDATE public.invoices SET mpesa_stk_push_id = NULL WHERE id = :id"),
            {"id": invoice_id},
        )
        db.session.commit()
    app.extensions["lango.redis"].delete(f"lango:invoice-pay:{invoice_id}")  # lock expired

    second = api.post(f"{INVOICES}/{invoice_id}/pay", json={"phone_number": SUCCEEDS})

    assert second.status_code == 409
    assert second.get_json()["error"]["stk_push_id"] == first.get_json()["mpesa_stk_push_id"]


def test_paying_a_paid_invoice_is_refused(platform, app, api, tenant, billing_tenant):
    bill_on(app, tenant.id, "sandbox")
    free_invoice = close(app, tenant.id)  # a free period is paid at once

    response = api.post(f"{INVOICES}/{free_invoice}/pay", json={"phone_number": SUCCEEDS})

    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "invoice_not_open"


def test_an_invoice_above_the_mpesa_limit_cannot_be_paid_by_mpesa(
    platform, app, api, tenant, billing_tenant
):
    invoice_id = open_invoice(app, tenant.id, plan="scale", used=400_000)  # 340,000 KES
    assert invoice_row(app, invoice_id).total == 340_000

    response = api.post(f"{INVOICES}/{invoice_id}/pay", json={"phone_number": SUCCEEDS})

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "invoice_total_above_mpesa_limit"
    assert "250,000" in error["message"]


def test_an_invoice_stripe_collects_cannot_be_paid_by_mpesa(app, api, tenant, billing_tenant):
    invoice_id = open_invoice(app, tenant.id)
    with app.app_context():
        db.session.execute(
            text(
                "UPDATE public.subscriptions SET stripe_subscription_id = 'sub_x' "
                "WHERE tenant_id = :t"
            ),
            {"t": tenant.id},
        )
        db.session.commit()

    response = api.post(f"{INVOICES}/{invoice_id}/pay", json={"phone_number": SUCCEEDS})

    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "invoice_collected_by_stripe"


def test_paying_without_a_billing_tenant_is_unavailable(app, api, tenant):
    invoice_id = open_invoice(app, tenant.id)
    assert app.extensions["lango.settings"].BILLING_TENANT_ID == ""

    response = api.post(f"{INVOICES}/{invoice_id}/pay", json={"phone_number": SUCCEEDS})

    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "invoice_payment_unavailable"


def test_pay_needs_a_kenyan_phone_number(app, api, tenant, billing_tenant):
    invoice_id = open_invoice(app, tenant.id)

    missing = api.post(f"{INVOICES}/{invoice_id}/pay", json={})
    invalid = api.post(f"{INVOICES}/{invoice_id}/pay", json={"phone_number": "12345"})

    assert (missing.status_code, invalid.status_code) == (400, 400)
    assert missing.get_json()["error"]["param"] == "phone_number"


def test_a_retried_pay_request_with_its_idempotency_key_sends_one_push(
    platform, app, api, tenant, billing_tenant
):
    invoice_id = open_invoice(app, tenant.id)
    pay = f"{INVOICES}/{invoice_id}/pay"
    headers = {"Idempotency-Key": f"pay-{invoice_id}"}

    first = api.post(pay, json={"phone_number": SUCCEEDS}, headers=headers)
    again = api.post(pay, json={"phone_number": SUCCEEDS}, headers=headers)

    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json()["mpesa_stk_push_id"] == first.get_json()["mpesa_stk_push_id"]
    with app.app_context(), tenant_scope(billing_tenant.id):
        assert db.session.scalar(text("SELECT count(*) FROM stk_pushes")) == 1


# --- settling --------------------------------------------------------------------------


def test_only_a_matching_payment_settles_an_invoice(app, tenant, billing_tenant):
    invoice_id = open_invoice(app, tenant.id)

    with app.app_context():
        assert not invoice_service.mark_invoice_paid(invoice_id, amount=3099, livemode=False)
        assert not invoice_service.mark_invoice_paid("inv_missing", amount=3100, livemode=False)
        db.session.commit()
    assert invoice_row(app, invoice_id).status is InvoiceStatus.OPEN

    with app.app_context():
        assert invoice_service.mark_invoice_paid(invoice_id, amount=3100, livemode=False)
        db.session.commit()
        # A second payment for a paid invoice is reported, not applied.
        assert not invoice_service.mark_invoice_paid(invoice_id, amount=3100, livemode=False)
        db.session.rollback()
    assert invoice_row(app, invoice_id).status is InvoiceStatus.PAID


def test_a_test_mode_payment_cannot_settle_when_the_platform_takes_live_payments(
    app, tenant, billing_tenant
):
    invoice_id = open_invoice(app, tenant.id)
    with app.app_context():
        db.session.execute(
            text("UPDATE public.tenants SET live_enabled = true WHERE id = :t"),
            {"t": billing_tenant.id},
        )
        assert not invoice_service.mark_invoice_paid(invoice_id, amount=3100, livemode=False)
        assert invoice_service.mark_invoice_paid(invoice_id, amount=3100, livemode=True)
        db.session.commit()


def test_pushes_of_other_tenants_never_settle_invoices(platform, app, api, tenant, billing_tenant):
    """Only the billing tenant's pushes pay invoices, whatever their metadata says."""
    invoice_id = open_invoice(app, tenant.id)

    response = api.post(
        "/v1/stk-pushes",
        json={
            "phone_number": SUCCEEDS,
            "amount": 3100,
            "account_reference": "X",
            "metadata": {"lango_invoice_id": invoice_id},
        },
    )
    assert response.status_code == 202

    from tests.served import wait_for_status

    assert wait_for_status(api, response.get_json()["id"])["status"] == "succeeded"
    dispatch_events(app, tenant.id)
    assert invoice_row(app, invoice_id).status is InvoiceStatus.OPEN
