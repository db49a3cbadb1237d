"""payments' side of billing's invoice collector port: STK pushes of the billing tenant,
found again by the invoice id their metadata carries."""

import pytest

from billing.ports import InvoiceCollectionRefused, InvoicePush, invoice_collector
from core.unit_of_work import tenant_unit_of_work
from payments import invoice_collection
from payments.schemas import MAX_AMOUNT
from tests.payments.test_stk_push import STKPUSHES
from tests.served import wait_for_status


def invoice_push(invoice_id: str, *, phone="254700000099", livemode=False) -> InvoicePush:
    return InvoicePush(
        phone_number=phone,
        amount=1500,
        account_reference=invoice_id.removeprefix("inv_")[-12:].upper(),
        description="Lango invoice",
        metadata={"lango_invoice_id": invoice_id, "lango_tenant_id": "ten_payer"},
        livemode=livemode,
    )


def test_payments_provides_the_collector(app):
    with app.app_context():
        assert invoice_collector() is invoice_collection
    assert invoice_collection.max_amount == MAX_AMOUNT


def test_a_push_collecting_an_invoice_is_found_by_its_invoice_id(platform, app, api, tenant):
    with app.app_context(), tenant_unit_of_work(tenant.id):
        push_id = invoice_collection.start_push(invoice_push("inv_01jdcollect"))

    pushed = api.get(f"{STKPUSHES}/{push_id}").get_json()
    assert pushed["metadata"] == invoice_push("inv_01jdcollect").metadata
    assert pushed["checkout_request_id"]  # Daraja was asked
    with app.app_context(), tenant_unit_of_work(tenant.id):
        assert invoice_collection.pending_push("inv_01jdcollect") == push_id
        assert invoice_collection.pending_push("inv_01jdother") is None
        assert invoice_collection.push_status("inv_01jdcollect", push_id) == "pending"
        assert invoice_collection.push_status("inv_01jdother", push_id) is None


def test_a_finished_push_is_no_longer_pending_and_says_how_it_ended(platform, app, api, tenant):
    with app.app_context(), tenant_unit_of_work(tenant.id):
        push_id = invoice_collection.start_push(invoice_push("inv_01jdpaid", phone="254708374149"))

    assert wait_for_status(api, push_id)["status"] == "succeeded"
    with app.app_context(), tenant_unit_of_work(tenant.id):
        assert invoice_collection.pending_push("inv_01jdpaid") is None
        assert invoice_collection.push_status("inv_01jdpaid", push_id) == "succeeded"


def test_a_billing_tenant_without_live_mode_is_refused(app, tenant):
    with app.app_context(), tenant_unit_of_work(tenant.id):
        with pytest.raises(InvoiceCollectionRefused):
            invoice_collection.start_push(invoice_push("inv_01jdlive", livemode=True))
        assert invoice_collection.pending_push("inv_01jdlive") is None
