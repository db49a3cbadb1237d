"""A fraud rule's dry run: exact counts over the last 7 days of pushes in every tenant, with
the attributes screening would have seen (velocity counters rebuilt from stored pushes)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import pytest

from compliance.dry_run import SAMPLE_SIZE, dry_run_rule
from core.errors import ValidationFailed
from core.extensions import db
from core.tenancy import tenant_scope
from payments.models import PushStatus, StkPush

# 12:00 in Nairobi: the days below are whole EAT days either side of noon.
NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
P1, P2, P3 = "254700000001", "254700000002", "254700000003"


def insert_pushes(app, tenant_id: str, *pushes: dict) -> list[str]:
    """Stored pushes as the API would have left them: phone, amount, created_at, status …"""
    ids = []
    with app.app_context(), tenant_scope(tenant_id):
        for push in pushes:
            created = push["created_at"]
            status = PushStatus(push.get("status", "succeeded"))
            resolved = push.get("resolved_at") or (created + timedelta(minutes=1))
            row = StkPush(
                id=f"stk_{secrets.token_hex(10)}",
                livemode=push.get("livemode", False),
                status=status,
                phone_number=push["phone"],
                amount=push["amount"],
                account_reference="INV1",
                description="Test",
                metadata_={},
                callback_token_hash=secrets.token_hex(32),
                created_at=created,
                updated_at=resolved,
                resolved_at=None if status is PushStatus.PENDING else resolved,
            )
            db.session.add(row)
            ids.append(row.id)
        db.session.commit()
    return ids


@pytest.fixture
def history(app, tenant_factory):
    """Two tenants' pushes over the last week, and one older push that must not count."""
    a, b = tenant_factory("Duka A"), tenant_factory("Duka B")
    ids = {}
    ids["a1"], ids["a2"], ids["a3"], ids["a_old"] = insert_pushes(
        app,
        a.id,
        {"phone": P1, "amount": 1000, "created_at": NOW - timedelta(days=1)},
        {"phone": P1, "amount": 60000, "created_at": NOW - timedelta(days=2)},
        {
            "phone": P2,
            "amount": 500,
            "created_at": NOW - timedelta(hours=3),
            "status": "cancelled",
            "resolved_at": NOW - timedelta(hours=3) + timedelta(minutes=1),
        },
        {"phone": P1, "amount": 70000, "created_at": NOW - timedelta(days=8)},
    )
    ids["b1"], ids["b2"], ids["b3"], ids["b4"] = insert_pushes(
        app,
        b.id,
        {
            "phone": P1,
            "amount": 2000,
            "created_at": NOW - timedelta(days=1) + timedelta(minutes=5),
            "status": "failed",
        },
        {
            "phone": P2,
            "amount": 80000,
            "created_at": NOW - timedelta(minutes=30),
            "status": "pending",
            "livemode": True,
        },
        {
            "phone": P2,
            "amount": 300,
            "created_at": NOW - timedelta(hours=3) + timedelta(minutes=12),
            "status": "pending",
        },
        {"phone": P3, "amount": 1500, "created_at": NOW - timedelta(days=1, hours=1)},
    )
    return a, b, ids


def matched_ids(app, expression: str) -> set[str]:
    with app.app_context():
        result = dry_run_rule(expression, now=NOW)
        db.session.remove()
    return {sample.stk_push_id for sample in result.samples}


def test_counts_matches_in_the_last_7_days_across_tenants(app, history):
    a, b, ids = history

    with app.app_context():
        result = dry_run_rule("amount >= 1000", now=NOW)
        db.session.remove()

    assert (result.matched, result.pushes, result.errors) == (5, 7, 0)
    by_tenant = {t.tenant_id: (t.matched, t.pushes, t.business_name) for t in result.tenants}
    assert by_tenant == {a.id: (2, 3, "Duka A"), b.id: (3, 4, "Duka B")}
    assert result.by_mode == {"test": 4, "live": 1}
    assert result.by_status == {"succeeded": 3, "failed": 1, "pending": 1}
    # Newest first; the 70,000 push eight days ago is outside the window.
    assert [s.stk_push_id for s in result.samples] == [
        ids["b2"],
        ids["b1"],
        ids["a1"],
        ids["b4"],
        ids["a2"],
    ]
    assert result.samples[0].phone == "2547******02"
    assert (result.since, result.until) == (NOW - timedelta(days=7), NOW)


def test_phone_velocity_is_rebuilt_across_tenants_per_mode(app, history):
    _, _, ids = history

    # B's push to P1 came 5 minutes after A's; the live push to P2 is counted apart.
    assert matched_ids(app, "phone_pushes_10m >= 2") == {ids["b1"]}
    assert matched_ids(app, "phone_pushes_1h >= 2") == {ids["b1"], ids["b3"]}
    # A's two P1 pushes are exactly 24 hours apart: the older one has left the window.
    assert matched_ids(app, "phone_tenants_24h >= 2") == {ids["b1"], ids["b3"]}
    # A's P2 push was cancelled a minute after it was sent, before B's push to P2.
    assert matched_ids(app, "phone_cancellations_1h >= 1") == {ids["b3"]}


def test_tenant_volume_and_time_attributes(app, history):
    _, _, ids = history

    # B asked 1,500 then 2,000 on the same EAT day: 3,500 by its second push.
    assert matched_ids(app, "tenant_volume_today >= 3500") == {ids["a2"], ids["b1"], ids["b2"]}
    # A1's 7 days before hold the 70,000 (8 days ago) and the 60,000 pushes: 130,000 / 7.
    assert matched_ids(app, "tenant_avg_daily_7d > 18000") == {ids["a1"]}
    assert matched_ids(app, "hour_eat == 12") == {ids["a1"], ids["a2"], ids["b1"]}
    assert matched_ids(app, "livemode") == {ids["b2"]}


def test_samples_are_the_newest_twenty(app, tenant_factory):
    tenant = tenant_factory()
    pushes = [
        {"phone": P1, "amount": 10 + n, "created_at": NOW - timedelta(hours=n + 1)}
        for n in range(SAMPLE_SIZE + 5)
    ]
    ids = insert_pushes(app, tenant.id, *pushes)

    with app.app_context():
        result = dry_run_rule("amount > 0", now=NOW)
        db.session.remove()

    assert (result.matched, result.pushes) == (SAMPLE_SIZE + 5, SAMPLE_SIZE + 5)
    assert [s.stk_push_id for s in result.samples] == ids[:SAMPLE_SIZE]


def test_nothing_to_check_is_an_empty_result(app, tenant):
    with app.app_context():
        result = dry_run_rule("amount > 0", now=NOW)
        db.session.remove()
    assert (result.matched, result.pushes, result.tenants, result.samples) == (0, 0, [], [])


@pytest.mark.parametrize("expression", ["amount >", "no_such_attribute > 1"])
def test_a_bad_expression_is_refused_on_expression(app, expression):
    with app.app_context(), pytest.raises(ValidationFailed) as refused:
        dry_run_rule(expression, now=NOW)
    assert refused.value.param == "expression"
