"""The dashboard's figures about pushes (payments/reports.py): a day's volume and success
rate in East Africa Time, the latest pushes, the detail of one push and the CSV export."""

from __future__ import annotations

import csv
import io
import secrets
from datetime import UTC, date, datetime, timedelta

import pytest

from core.errors import NotFound
from core.extensions import db
from core.ids import new_id
from core.tenancy import tenant_scope
from payments import reports
from payments.models import MpesaCallback, PushStatus, StkPush

# A fixed EAT day for deterministic figures: 20 Nov 2026 00:00 EAT is 19 Nov 21:00 UTC.
DAY = date(2026, 11, 20)
DAY_START = datetime(2026, 11, 19, 21, 0, tzinfo=UTC)


def insert_push(
    app,
    tenant_id: str,
    *,
    status: str = "succeeded",
    amount: int = 100,
    created_at: datetime | None = None,
    livemode: bool = False,
    phone: str = "254708374149",
    **fields,
) -> str:
    """A push row written straight into the tenant's schema (no Daraja, no quota), for
    figures that must come out exact."""
    created_at = created_at or datetime.now(UTC)
    with app.app_context(), tenant_scope(tenant_id):
        push = StkPush(
            id=new_id("stk"),
            livemode=livemode,
            status=PushStatus(status),
            phone_number=phone,
            amount=amount,
            account_reference="INV1",
            description="Order",
            metadata_={},
            callback_token_hash=secrets.token_hex(32),
            created_at=created_at,
            updated_at=created_at,
            resolved_at=None if status == "pending" else created_at,
            **fields,
        )
        db.session.add(push)
        db.session.commit()
        push_id = push.id
        db.session.remove()
    return push_id


def test_eat_day_is_midnight_to_midnight_in_nairobi():
    assert reports.eat_day(DAY) == (DAY_START, DAY_START + timedelta(days=1))


def test_day_summary_counts_one_eat_day_of_one_mode(app, tenant):
    at = DAY_START + timedelta(hours=10)
    insert_push(app, tenant.id, status="succeeded", amount=1500, created_at=at)
    insert_push(app, tenant.id, status="succeeded", amount=250, created_at=at)
    insert_push(app, tenant.id, status="failed", amount=999, created_at=at)
    insert_push(app, tenant.id, status="cancelled", amount=10, created_at=at)
    insert_push(app, tenant.id, status="pending", amount=70, created_at=at)
    # 23:30 EAT the day before, and 00:00 EAT the day after: neither is that day's.
    insert_push(app, tenant.id, amount=5000, created_at=DAY_START - timedelta(minutes=30))
    insert_push(app, tenant.id, amount=6000, created_at=DAY_START + timedelta(days=1))
    insert_push(app, tenant.id, amount=7000, created_at=at, livemode=True)

    with app.app_context(), tenant_scope(tenant.id):
        start, end = reports.eat_day(DAY)
        summary = reports.day_summary(livemode=False, start=start, end=end)
        live = reports.day_summary(livemode=True, start=start, end=end)
        db.session.remove()

    assert summary == reports.DaySummary(created=5, succeeded=2, volume=1750, finished=4)
    assert summary.success_rate == 0.5
    assert live == reports.DaySummary(created=1, succeeded=1, volume=7000, finished=1)


def test_day_summary_of_a_quiet_day_has_no_rate(app, tenant):
    with app.app_context(), tenant_scope(tenant.id):
        summary = reports.day_summary(livemode=False, start=DAY_START, end=DAY_START)
        db.session.remove()
    assert summary == reports.DaySummary(0, 0, 0, 0)
    assert summary.success_rate is None


def test_recent_pushes_are_newest_first_and_of_one_mode(app, tenant):
    base = datetime.now(UTC) - timedelta(hours=1)
    ids = [insert_push(app, tenant.id, created_at=base + timedelta(minutes=n)) for n in range(4)]
    insert_push(app, tenant.id, created_at=base + timedelta(minutes=30), livemode=True)
    with app.app_context(), tenant_scope(tenant.id):
        recent = [push.id for push in reports.recent_pushes(livemode=False, limit=3)]
        db.session.remove()
    assert recent == ids[::-1][:3]


def test_filtered_statement_adds_an_amount_range(app, tenant):
    for amount in (10, 100, 1000):
        insert_push(app, tenant.id, amount=amount)
    with app.app_context(), tenant_scope(tenant.id):
        statement = reports.filtered_pushes_statement(livemode=False, amount_gte=50, amount_lte=500)
        amounts = [push.amount for push in db.session.scalars(statement)]
        db.session.remove()
    assert amounts == [100]


def test_pushes_csv_has_the_api_columns(app, tenant):
    first = insert_push(app, tenant.id, amount=42, mpesa_receipt_number="SGX1")
    second = insert_push(app, tenant.id, status="failed", amount=7, result_code="1")
    with app.app_context():
        with tenant_scope(tenant.id):
            statement = reports.filtered_pushes_statement(livemode=False)
        text = "".join(reports.pushes_csv(statement, tenant.id))
        db.session.remove()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == reports.EXPORT_COLUMNS
    assert [row["id"] for row in rows] == [second, first]
    assert rows[1]["amount"] == "42" and rows[1]["mpesa_receipt_number"] == "SGX1"
    assert rows[0]["status"] == "failed" and rows[0]["result_code"] == "1"


def test_pushes_csv_writes_booleans_as_the_json_api_does(app, tenant):
    # Python's `False` in a CSV is read as the text "False" by every tool downstream.
    insert_push(app, tenant.id, livemode=False)
    insert_push(app, tenant.id, livemode=True)
    with app.app_context():
        texts = {}
        for livemode in (False, True):
            with tenant_scope(tenant.id):
                statement = reports.filtered_pushes_statement(livemode=livemode)
            texts[livemode] = "".join(reports.pushes_csv(statement, tenant.id))
        db.session.remove()
    for livemode, expected in ((False, "false"), (True, "true")):
        rows = list(csv.DictReader(io.StringIO(texts[livemode])))
        assert [row["livemode"] for row in rows] == [expected]


def test_push_detail_has_raw_callbacks_and_refuses_the_other_mode(app, tenant):
    push_id = insert_push(app, tenant.id)
    with app.app_context(), tenant_scope(tenant.id):
        db.session.add(
            MpesaCallback(
                id=new_id("cb"), stk_push_id=push_id, body='{"Body": {}}', outcome="applied"
            )
        )
        db.session.commit()
        detail = reports.push_detail(push_id, livemode=False)
        assert [callback.body for callback in detail.callbacks] == ['{"Body": {}}']
        assert detail.review_case is None
        with pytest.raises(NotFound):
            reports.push_detail(push_id, livemode=True)
        db.session.remove()


def test_status_message_says_whether_it_is_final(app, tenant):
    pending = insert_push(app, tenant.id, status="pending")
    done = insert_push(
        app, tenant.id, result_code="0", result_description="ok", mpesa_receipt_number="R1"
    )
    with app.app_context(), tenant_scope(tenant.id):
        first = reports.status_message(db.session.get(StkPush, pending))
        second = reports.status_message(db.session.get(StkPush, done))
        db.session.remove()
    assert first == {
        "id": pending,
        "status": "pending",
        "result_code": None,
        "result_desc": None,
        "mpesa_receipt_number": None,
        "final": False,
    }
    assert second["final"] and second["mpesa_receipt_number"] == "R1"
    assert second["result_desc"] == "ok"
