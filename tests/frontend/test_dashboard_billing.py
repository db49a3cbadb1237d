"""Dashboard billing: plan, usage and invoices for every member; changing plan and paying an
invoice by M-Pesa (through the Daraja sandbox) for the owner only — also while the account
is suspended for that unpaid invoice."""

from __future__ import annotations

import json
import re
import time

import pytest

from billing.dunning import suspend_for_billing
from billing.models import Invoice, Subscription
from core.extensions import db
from core.outbox import dispatch
from tenants.models import Tenant
from tests.billing.test_invoices import billing_tenant_configured, open_invoice
from tests.frontend.conftest import HTML, OpenStream, member_page, post_form

ACCESS = [("/dashboard/billing", member_page())]
SUCCEEDS = "0708374149"


def test_access(check_access):
    check_access(ACCESS)


@pytest.fixture
def billing_tenant(app, tenant_factory):
    """Lango's own account, collecting invoice payments (as in tests/billing)."""
    made = tenant_factory("Lango Billing")
    with billing_tenant_configured(app, made.id):
        yield made


def page(client, path, status=200) -> str:
    response = client.get(path, headers=HTML)
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    return response.get_data(as_text=True)


def subscription(app, tenant_id) -> Subscription:
    with app.app_context():
        row = db.session.query(Subscription).filter_by(tenant_id=tenant_id).one()
        db.session.expunge_all()
        return row


def invoice_row(app, invoice_id) -> Invoice:
    with app.app_context():
        row = db.session.get(Invoice, invoice_id)
        db.session.expunge_all()
        return row


def tenant_row(app, tenant_id) -> Tenant:
    with app.app_context():
        row = db.session.get(Tenant, tenant_id)
        db.session.expunge_all()
        return row


def wait_for_invoice(app, invoice_id, status, billing_tenant_id, timeout=20.0) -> Invoice:
    """Poll the invoice, running the billing tenant's outbox dispatcher as an `events` worker
    would (its succeeded push settles the invoice in billing's subscriber)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with app.app_context():
            dispatch(billing_tenant_id)
        invoice = invoice_row(app, invoice_id)
        if invoice.status.value == status:
            return invoice
        time.sleep(0.1)
    raise AssertionError(f"invoice {invoice_id} not {status} after {timeout} s")


def stream_events(client, path) -> list[dict]:
    response = client.get(path, headers={"Accept": "text/event-stream"})
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    body = response.get_data(as_text=True)
    return [json.loads(line[len("data: ") :]) for line in body.splitlines() if line]


# --- reading -------------------------------------------------------------------------------


def test_the_billing_page_shows_plan_usage_and_invoices(app, sign_in):
    viewer = sign_in("viewer")
    invoice_id = open_invoice(app, viewer.tenant.id)  # starter, 1,200 pushes: KES 3,100

    billing = page(viewer.client, "/dashboard/billing")

    assert "Starter" in billing and "KES 2,500 a month" in billing
    assert "of 1,000 live pushes included" in billing
    assert 'role="meter"' in billing
    assert f"/dashboard/billing/invoices/{invoice_id}" in billing
    assert "KES 3,100" in billing and 'data-status="open"' in billing
    # A viewer reads; only the owner changes plan or pays.
    assert "Only the account owner can change the plan" in billing
    assert 'action="/dashboard/billing/plan"' not in billing
    invoice = page(viewer.client, f"/dashboard/billing/invoices/{invoice_id}")
    assert "Starter plan, 2026-01-31 to 2026-02-28" in invoice
    assert "200 live pushes beyond the 1000 included" in invoice
    for amount in ("KES 2,500", "KES 600", "KES 3", "KES 3,100"):
        assert f'<td class="num">{amount}</td>' in invoice or amount in invoice
    assert "EAT" in invoice
    assert "Only the account owner can pay invoices." in invoice


def test_a_new_account_has_no_invoices_yet(sign_in):
    billing = page(sign_in("owner").client, "/dashboard/billing")
    assert "Sandbox" in billing and "No invoices yet" in billing
    assert "KES 0" in billing
    # The sandbox plan is test-only: no "0 of 0 live pushes", but what a paid plan adds.
    assert "Live payments are not part of the Sandbox plan" in billing
    assert 'aria-label="Live pushes used"' not in billing


def test_invoices_paginate(app, sign_in):
    from datetime import timedelta

    from billing.periods import close_due_periods
    from billing.subscriptions import add_months
    from tests.billing.test_periods import PERIOD_END, bill_on

    owner = sign_in("owner")
    bill_on(app, owner.tenant.id, "starter")
    with app.app_context():
        for months in range(14):  # 14 closed periods, 12 to a page
            close_due_periods(now=add_months(PERIOD_END, months) + timedelta(hours=1))
        db.session.remove()

    first = page(owner.client, "/dashboard/billing")
    assert first.count("/dashboard/billing/invoices/inv_") >= 12 and "Older →" in first
    older_link = re.search(r'href="(/dashboard/billing\?starting_after=[^"]+)"', first).group(1)
    older = page(owner.client, older_link.replace("&amp;", "&"))
    assert len(set(re.findall(r"/dashboard/billing/invoices/(inv_\w+)", older))) == 2


# --- changing plan -------------------------------------------------------------------------


def test_the_owner_upgrades_once_paid_and_downgrades_at_period_end(app, sign_in):
    from billing.subscriptions import awaited_upgrade
    from tests.billing.test_subscription import pay_upgrade

    owner = sign_in("owner")
    client = owner.client
    form = page(client, "/dashboard/billing")
    assert "Upgrade: starts once paid" in form and 'value="sandbox" checked' in form

    upgraded = post_form(client, "/dashboard/billing/plan", {"plan": "growth"})

    # Without Stripe: still sandbox, sent to the new invoice to pay it by M-Pesa.
    assert upgraded.status_code == 302
    with app.app_context():
        invoice_id = awaited_upgrade(owner.tenant.id).id
    assert upgraded.headers["Location"].endswith(f"/dashboard/billing/invoices/{invoice_id}")
    assert subscription(app, owner.tenant.id).plan_code == "sandbox"
    assert tenant_row(app, owner.tenant.id).plan == "sandbox"
    invoice_page = page(client, f"/dashboard/billing/invoices/{invoice_id}")
    assert "The Growth plan starts once its first month is paid" in invoice_page
    assert "Waiting for payment: <strong>Growth</strong>" in page(client, "/dashboard/billing")
    pay_upgrade(app, invoice_id)
    assert subscription(app, owner.tenant.id).plan_code == "growth"
    assert tenant_row(app, owner.tenant.id).plan == "growth"

    post_form(client, "/dashboard/billing/plan", {"plan": "starter"})
    scheduled = subscription(app, owner.tenant.id)
    assert (scheduled.plan_code, scheduled.pending_plan_code) == ("growth", "starter")
    billing = page(client, "/dashboard/billing")
    assert "The Starter plan starts when this period ends" in billing
    assert "Plan change scheduled: <strong>Starter</strong>" in billing

    post_form(client, "/dashboard/billing/plan", {"plan": "growth"})
    assert subscription(app, owner.tenant.id).pending_plan_code is None
    assert "Plan change cancelled" in page(client, "/dashboard/billing")


def test_an_unknown_plan_is_a_field_error(app, sign_in):
    owner = sign_in("owner")
    response = post_form(owner.client, "/dashboard/billing/plan", {"plan": "platinum"})
    assert response.status_code == 400
    assert "Plan: Not a valid choice" in response.get_data(as_text=True)
    assert subscription(app, owner.tenant.id).plan_code == "sandbox"


def test_only_the_owner_changes_plan_or_pays(app, sign_in):
    owner = sign_in("owner")
    invoice_id = open_invoice(app, owner.tenant.id)
    for role in ("developer", "viewer"):
        member = sign_in(role, tenant=owner.tenant)
        assert (
            post_form(member.client, "/dashboard/billing/plan", {"plan": "growth"}).status_code
            == 403
        )
        paying = post_form(
            member.client,
            f"/dashboard/billing/invoices/{invoice_id}/pay",
            {"phone_number": SUCCEEDS},
        )
        assert paying.status_code == 403
    assert subscription(app, owner.tenant.id).plan_code == "starter"
    assert invoice_row(app, invoice_id).mpesa_stk_push_id is None


# --- paying --------------------------------------------------------------------------------


def test_a_suspended_owner_pays_an_invoice_by_mpesa(platform, app, sign_in, billing_tenant):
    owner = sign_in("owner")
    client = owner.client
    invoice_id = open_invoice(app, owner.tenant.id)
    with app.app_context():
        suspend_for_billing(owner.tenant.id)
        db.session.commit()
    billing = page(client, "/dashboard/billing")
    assert "suspended for an unpaid invoice" in billing
    path = f"/dashboard/billing/invoices/{invoice_id}"
    assert 'action="' + path + '/pay"' in page(client, path)

    response = post_form(client, f"{path}/pay", {"phone_number": SUCCEEDS})

    assert response.status_code == 302, response.get_data(as_text=True)[:2000]
    assert response.headers["Location"] == path
    sent = page(client, path)
    assert "We sent an M-Pesa prompt for this invoice to 2547•••••149" in sent
    paid = wait_for_invoice(app, invoice_id, "paid", billing_tenant.id)
    assert paid.mpesa_stk_push_id.startswith("stk_")
    assert tenant_row(app, owner.tenant.id).status.value == "active"
    after = page(client, path)
    assert 'data-status="paid"' in after and "Paid by M-Pesa" in after
    assert "Send M-Pesa prompt" not in after and "data-stream" not in after
    (event,) = stream_events(client, f"{path}/payment")
    assert event == {
        "status": "paid",
        "payment": "succeeded",
        "payment_text": "Paid by M-Pesa. Thank you!",
        "final": True,
    }


def test_a_pending_prompt_is_followed_live(platform, app, sign_in, billing_tenant):
    owner = sign_in("owner")
    invoice_id = open_invoice(app, owner.tenant.id)
    path = f"/dashboard/billing/invoices/{invoice_id}"

    post_form(owner.client, f"{path}/pay", {"phone_number": "0700000099"})  # never answered

    waiting = page(owner.client, path)
    assert f'data-stream="{path}/payment"' in waiting
    assert "Waiting for you to enter your M-Pesa PIN" in waiting
    again = post_form(owner.client, f"{path}/pay", {"phone_number": SUCCEEDS})
    assert again.status_code == 409
    assert "already waiting for the customer" in again.get_data(as_text=True)


def test_paying_needs_a_kenyan_mobile_number_and_a_billing_tenant(app, sign_in):
    owner = sign_in("owner")
    invoice_id = open_invoice(app, owner.tenant.id)
    path = f"/dashboard/billing/invoices/{invoice_id}/pay"

    invalid = post_form(owner.client, path, {"phone_number": "12345"})
    unavailable = post_form(owner.client, path, {"phone_number": SUCCEEDS})

    assert invalid.status_code == 400
    assert "M-Pesa phone number: Enter a Safaricom number" in invalid.get_data(as_text=True)
    assert unavailable.status_code == 503
    assert "not configured on this deployment" in unavailable.get_data(as_text=True)
    assert invoice_row(app, invoice_id).status.value == "open"


def test_a_paid_invoice_offers_no_payment(app, sign_in):
    from tests.billing.test_periods import bill_on, close

    owner = sign_in("owner")
    bill_on(app, owner.tenant.id, "sandbox")
    free = close(app, owner.tenant.id)  # a free period is paid at once

    shown = page(owner.client, f"/dashboard/billing/invoices/{free}")
    refused = post_form(
        owner.client, f"/dashboard/billing/invoices/{free}/pay", {"phone_number": SUCCEEDS}
    )

    assert 'data-status="paid"' in shown and "Send M-Pesa prompt" not in shown
    assert refused.status_code == 409
    assert "not open" in refused.get_data(as_text=True)


def test_another_tenants_invoices_are_not_found(app, sign_in):
    theirs = sign_in("owner")
    invoice_id = open_invoice(app, theirs.tenant.id)
    mine = sign_in("owner")
    path = f"/dashboard/billing/invoices/{invoice_id}"

    assert invoice_id not in page(mine.client, "/dashboard/billing")
    page(mine.client, path, status=404)
    assert mine.client.get(f"{path}/payment", headers=HTML).status_code == 404
    paying = post_form(mine.client, f"{path}/pay", {"phone_number": SUCCEEDS})
    assert paying.status_code == 404
    assert invoice_row(app, invoice_id).mpesa_stk_push_id is None


def test_the_invoice_stream_shares_the_members_stream_slots(app, sign_in):
    # Each stream holds a web thread: the payments pages' streams and this one count together.
    from frontend.dashboard.payments import STREAMS_PER_MEMBER
    from tests.frontend.test_dashboard_payments import insert_push

    owner = sign_in("owner")
    invoice_path = f"/dashboard/billing/invoices/{open_invoice(app, owner.tenant.id)}/payment"
    push_id = insert_push(app, owner.tenant.id, status="pending")
    opened = [
        OpenStream(owner.client, f"/dashboard/payments/{push_id}/stream")
        for _ in range(STREAMS_PER_MEMBER)
    ]
    assert [response.status_code for response in opened] == [200] * STREAMS_PER_MEMBER

    assert owner.client.get(invoice_path).status_code == 429
    opened.pop().close()
    opened.append(OpenStream(owner.client, invoice_path))
    assert opened[-1].status_code == 200
    for response in reversed(opened):
        response.close()
