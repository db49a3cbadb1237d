"""Dunning: an invoice unpaid past grace suspends the tenant (reason `billing`), which can
still read and pay its invoices; paying reinstates it; nothing in flight is lost."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from billing import dunning
from billing.invoices import mark_invoice_paid
from billing.jobs import suspend_overdue_tenants
from core.extensions import db
from core.tenancy import tenant_scope
from payments.models import MpesaCallback, StkPush
from tests.billing.test_invoices import (
    INVOICES,
    SUCCEEDS,
    billing_tenant_configured,
    dispatch_events,
)
from tests.billing.test_periods import bill_on, close
from tests.payments.test_stk_push import STKPUSHES, payment_events, push_body
from tests.served import LATE_CALLBACK

LATE_SUCCESS = "254700000097"  # the sandbox calls back after LATE_CALLBACK seconds


@pytest.fixture
def billing_tenant(app, tenant_factory):
    made = tenant_factory("Lango Billing")
    with billing_tenant_configured(app, made.id):
        yield made


def overdue_invoice(app, tenant_id, *, days_past_due=10, used=1_200) -> str:
    """An open invoice (starter plan, KES 3,100 with 1,200 pushes) due `days_past_due` ago."""
    start = datetime.now(UTC) - timedelta(days=days_past_due + 31)
    bill_on(app, tenant_id, "starter", used=used, start=start)
    invoice_id = close(app, tenant_id, now=datetime.now(UTC))
    with app.app_context():
        db.session.execute(
            text("UPDATE public.invoices SET due_at = :due WHERE id = :id"),
            {"due": datetime.now(UTC) - timedelta(days=days_past_due), "id": invoice_id},
        )
        db.session.commit()
    return invoice_id


def tenant_status(app, tenant_id) -> tuple[str, str | None]:
    with app.app_context():
        row = db.session.execute(
            text("SELECT status, suspended_reason FROM public.tenants WHERE id = :t"),
            {"t": tenant_id},
        ).one()
        db.session.rollback()
        return row.status, row.suspended_reason


def suspend(app, now=None) -> list[str]:
    with app.app_context():
        return dunning.suspend_overdue_tenants(now=now)


def test_an_invoice_unpaid_past_grace_suspends_the_tenant(app, tenant_factory):
    overdue, in_grace, paid_up = tenant_factory(), tenant_factory(), tenant_factory()
    overdue_invoice(app, overdue.id, days_past_due=8)
    overdue_invoice(app, in_grace.id, days_past_due=6)  # INVOICE_GRACE_DAYS is 7
    paid_invoice = overdue_invoice(app, paid_up.id, days_past_due=30)
    with app.app_context():
        mark_invoice_paid(paid_invoice, amount=3100, livemode=False)
        db.session.commit()

    with app.app_context():
        result = suspend_overdue_tenants()

    assert result == {"suspended": [overdue.id]}
    assert tenant_status(app, overdue.id) == ("suspended", "billing")
    assert tenant_status(app, in_grace.id) == ("active", None)
    assert tenant_status(app, paid_up.id) == ("active", None)
    # Running again changes nothing; the in-grace tenant's turn comes once its grace ends.
    assert suspend(app) == []
    assert suspend(app, now=datetime.now(UTC) + timedelta(days=2)) == [in_grace.id]


def test_a_tenant_suspended_for_billing_keeps_only_its_invoices(app, api, tenant):
    invoice_id = overdue_invoice(app, tenant.id)
    suspend(app)

    for refused in (
        api.get(STKPUSHES),
        api.get("/v1/tenant"),
        api.post(STKPUSHES, json=push_body()),
    ):
        assert refused.status_code == 403
        error = refused.get_json()["error"]
        assert error["code"] == "tenant_suspended"
        assert "/v1/invoices" in error["message"]  # it says how to get back
    assert api.get(INVOICES).status_code == 200
    assert api.get(f"{INVOICES}/{invoice_id}").get_json()["status"] == "open"


def test_a_tenant_suspended_for_another_reason_keeps_no_access(app, api, tenant):
    invoice_id = overdue_invoice(app, tenant.id)
    with app.app_context():
        db.session.execute(
            text(
                "UPDATE public.tenants SET status = 'suspended', suspended_reason = 'compliance' "
                "WHERE id = :t"
            ),
            {"t": tenant.id},
        )
        db.session.commit()

    assert api.get(INVOICES).status_code == 403
    assert api.get(INVOICES).get_json()["error"]["code"] == "tenant_suspended"
    # Dunning leaves it alone, and paying would not lift a suspension it did not impose.
    assert suspend(app) == []
    with app.app_context():
        mark_invoice_paid(invoice_id, amount=3100, livemode=False)
        db.session.commit()
    assert tenant_status(app, tenant.id) == ("suspended", "compliance")


def test_paying_by_mpesa_reinstates_a_suspended_tenant(
    platform,
    app,
    api,
    tenant,
    billing_tenant,
):
    invoice_id = overdue_invoice(app, tenant.id)
    suspend(app)
    assert api.get(STKPUSHES).status_code == 403

    response = api.post(f"{INVOICES}/{invoice_id}/pay", json={"phone_number": SUCCEEDS})

    assert response.status_code == 202, response.get_json()
    deadline = time.monotonic() + 20
    while tenant_status(app, tenant.id) != ("active", None) and time.monotonic() < deadline:
        dispatch_events(app, billing_tenant.id)
        time.sleep(0.1)
    assert tenant_status(app, tenant.id) == ("active", None)
    assert api.get(f"{INVOICES}/{invoice_id}").get_json()["status"] == "paid"
    assert api.get(STKPUSHES).status_code == 200


def test_reinstatement_waits_until_nothing_is_owed_past_grace(app, tenant):
    older = overdue_invoice(app, tenant.id, days_past_due=40)
    newer = overdue_invoice(app, tenant.id, days_past_due=9)
    suspend(app)

    with app.app_context():
        mark_invoice_paid(newer, amount=3100, livemode=False)
        db.session.commit()
    assert tenant_status(app, tenant.id) == ("suspended", "billing")

    with app.app_context():
        mark_invoice_paid(older, amount=3100, livemode=False)
        db.session.commit()
    assert tenant_status(app, tenant.id) == ("active", None)


def test_suspend_and_reinstate_helpers_touch_only_billing_suspensions(app, tenant):
    with app.app_context():
        assert dunning.suspend_for_billing(tenant.id) is True
        assert dunning.suspend_for_billing(tenant.id) is False  # already suspended
        db.session.commit()
        assert dunning.reinstate_after_payment(tenant.id) is True
        assert dunning.reinstate_after_payment(tenant.id) is False  # already active
        db.session.execute(
            text(
                "UPDATE public.tenants SET status = 'suspended', suspended_reason = 'admin' "
                "WHERE id = :t"
            ),
            {"t": tenant.id},
        )
        assert dunning.suspend_for_billing(tenant.id) is False
        assert dunning.reinstate_after_payment(tenant.id) is False
        db.session.commit()
    assert tenant_status(app, tenant.id) == ("suspended", "admin")


def test_a_callback_for_a_suspended_tenants_push_is_still_recorded(platform, app, api, tenant):
    created = api.post(STKPUSHES, json=push_body(LATE_SUCCESS))
    assert created.status_code == 202
    push_id = created.get_json()["id"]
    overdue_invoice(app, tenant.id)
    assert suspend(app) == [tenant.id]  # long before the callback arrives

    deadline = time.monotonic() + LATE_CALLBACK + 15
    with app.app_context(), tenant_scope(tenant.id):
        while time.monotonic() < deadline:
            push = db.session.get(StkPush, push_id)
            status = push.status.value
            db.session.rollback()
            if status != "pending":
                break
            time.sleep(0.1)
        outcomes = db.session.scalars(
            select(MpesaCallback.outcome).where(MpesaCallback.stk_push_id == push_id)
        ).all()
    assert status == "succeeded"
    assert outcomes == ["applied"]
    assert payment_events(app, tenant.id, push_id) == ["payment.succeeded"]
    assert tenant_status(app, tenant.id) == ("suspended", "billing")


def test_invoices_stripe_collects_are_left_to_stripes_dunning(app, tenant_factory):
    card_billed, linked, card_canceled = tenant_factory(), tenant_factory(), tenant_factory()
    for made in (card_billed, linked, card_canceled):
        overdue_invoice(app, made.id)
    with app.app_context():
        db.session.execute(
            text(
                "UPDATE public.subscriptions SET stripe_subscription_id = 'sub_x', "
                "status = CASE WHEN tenant_id = :canceled THEN 'canceled' ELSE 'active' END "
                "WHERE tenant_id IN (:card, :canceled)"
            ),
            {"card": card_billed.id, "canceled": card_canceled.id},
        )
        db.session.execute(
            text("UPDATE public.invoices SET stripe_invoice_id = 'in_x' WHERE tenant_id = :t"),
            {"t": linked.id},
        )
        db.session.commit()

    # Stripe charges the first two; the third's Stripe subscription has ended, so Lango
    # collects its invoice and duns it.
    assert suspend(app) == [card_canceled.id]
    with app.app_context():
        dunning.suspend_for_billing(card_billed.id)  # as Stripe's payment_failed would
        db.session.commit()
        # Its Lango invoice still open does not stand in the way once Stripe is paid.
        assert dunning.reinstate_after_payment(card_billed.id) is True
        db.session.commit()
