"""The payload of payments' events is built by payments (payments.events.push_object), and is
exactly the API's STK push object: webhook bodies do not change with it."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from core.extensions import db
from core.tenancy import tenant_scope
from payments.events import push_object
from payments.models import PushStatus, StkPush
from payments.schemas import StkPushSchema
from tests.payments.test_stk_push import STKPUSHES, push_body
from tests.served import wait_for_status

CREATED = datetime(2026, 11, 22, 7, 10, 10, 123456, tzinfo=UTC)
# Daraja's TransactionDate is East Africa Time: the object shows it in UTC.
PAID_AT_EAT = datetime(2026, 11, 22, 13, 10, 42, tzinfo=ZoneInfo("Africa/Nairobi"))


def a_push(status: PushStatus, **fields) -> StkPush:
    final = status is not PushStatus.PENDING
    values = {
        "id": "stk_01jdtest",
        "livemode": False,
        "status": status,
        "phone_number": "254708374149",
        "amount": 250_000,
        "account_reference": "INV0001",
        "description": "Order 1001",
        "metadata_": {"order": "1001", "nested": {"n": [1, 2]}},
        "callback_token_hash": "0" * 64,
        "merchant_request_id": "29115-34620561-1",
        "checkout_request_id": "ws_CO_191220191020363925",
        "result_code": {
            PushStatus.PENDING: None,
            PushStatus.SUCCEEDED: "0",
            PushStatus.FAILED: "1",
            PushStatus.CANCELLED: "1032",
            PushStatus.EXPIRED: "expired",
        }[status],
        "result_description": "The service request is processed successfully." if final else None,
        "mpesa_receipt_number": "UKL1ABCDEF" if status is PushStatus.SUCCEEDED else None,
        "transaction_date": PAID_AT_EAT if status is PushStatus.SUCCEEDED else None,
        "flagged_reason": None,
        "expired_at": None,
        "created_at": CREATED,
        "updated_at": CREATED + timedelta(seconds=31, microseconds=999_999),
        "resolved_at": CREATED + timedelta(seconds=31) if final else None,
        "last_queried_at": None,
        **fields,
    }
    return StkPush(**values)


PUSHES = {
    **{status.value: a_push(status) for status in PushStatus},
    "flagged while pending": a_push(
        PushStatus.PENDING, flagged_reason="callback amount 1.0 differs from 500"
    ),
    "flagged after a cancel": a_push(
        PushStatus.CANCELLED,
        flagged_reason="M-Pesa reported this push paid (receipt UKL1ABCDEF) after reporting "
        "it cancelled (ResultCode 1032); the payment is held, not applied",
    ),
    "expired by lango": a_push(PushStatus.EXPIRED, expired_at=CREATED + timedelta(minutes=5)),
    "expired with m-pesa's answer": a_push(
        PushStatus.EXPIRED, result_code="1032", expired_at=CREATED + timedelta(minutes=5)
    ),
    "succeeded late": a_push(PushStatus.SUCCEEDED, expired_at=CREATED + timedelta(minutes=5)),
    "never acknowledged": a_push(
        PushStatus.FAILED,
        merchant_request_id=None,
        checkout_request_id=None,
        result_code="daraja_unavailable",
    ),
    "live, no metadata": a_push(PushStatus.PENDING, livemode=True, metadata_={}),
    "description with odd text": a_push(PushStatus.FAILED, result_description='Ünïcode ✓ "q"'),
}


@pytest.mark.parametrize("push", PUSHES.values(), ids=PUSHES.keys())
def test_push_object_is_the_api_schema_dump(push):
    assert push_object(push) == StkPushSchema().dump(push)
    assert list(push_object(push)) == list(StkPushSchema().dump(push))  # and in its order


def test_each_event_carries_the_push_as_the_api_shows_it(platform, app, api, tenant):
    pushes = [
        wait_for_status(api, api.post(STKPUSHES, json=push_body(phone)).get_json()["id"])
        for phone in ("254708374149", "254700001032")
    ]
    with app.app_context(), tenant_scope(tenant.id):
        for shown in pushes:
            [(type_, data)] = db.session.execute(
                text("SELECT type, data FROM events WHERE data->'object'->>'id' = :id"),
                {"id": shown["id"]},
            ).all()
            stored = db.session.get(StkPush, shown["id"])

            assert type_ == f"payment.{shown['status']}"
            assert data == {"object": shown}
            assert push_object(stored) == StkPushSchema().dump(stored) == shown
