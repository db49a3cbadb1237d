"""payments' side of compliance's push reader port: the facts of a tenant's pushes, streamed
in the tenant's own scope or read one at a time from a platform transaction."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import text

from compliance.ports import PushFacts, push_facts, recent_pushes
from core.extensions import db
from tests.payments.test_reports import insert_push

NOW = datetime.now(UTC).replace(microsecond=0)


def test_recent_pushes_are_the_tenants_own_in_the_window_oldest_first(app, tenant_factory):
    tenant, other = tenant_factory("Alpha Ltd"), tenant_factory("Beta Ltd")
    too_old = insert_push(app, tenant.id, created_at=NOW - timedelta(days=8))
    first = insert_push(app, tenant.id, created_at=NOW - timedelta(days=2), livemode=True)
    second = insert_push(
        app, tenant.id, status="cancelled", amount=700, created_at=NOW - timedelta(hours=1)
    )
    insert_push(app, other.id, created_at=NOW - timedelta(hours=2))

    with app.app_context():
        facts = list(recent_pushes(tenant.id, NOW - timedelta(days=7), NOW))
        assert not db.session().in_transaction()  # the tenant's scope ended with the stream

    assert [push.id for push in facts] == [first, second]
    assert too_old not in [push.id for push in facts]
    assert facts[0].livemode is True
    assert facts[1] == PushFacts(
        id=second,
        livemode=False,
        phone_number="254708374149",
        amount=700,
        status="cancelled",
        account_reference="INV1",
        created_at=NOW - timedelta(hours=1),
        resolved_at=NOW - timedelta(hours=1),
        updated_at=NOW - timedelta(hours=1),
    )


def test_one_push_is_read_from_a_platform_transaction(app, tenant_factory):
    tenant, other = tenant_factory("Alpha Ltd"), tenant_factory("Beta Ltd")
    push_id = insert_push(app, tenant.id, amount=4200, created_at=NOW)

    with app.app_context():
        db.session.execute(text("SELECT 1 FROM public.tenants LIMIT 1"))  # a platform one
        found = push_facts(tenant.id, push_id)
        assert push_facts(other.id, push_id) is None
        assert push_facts(tenant.id, "stk_missing") is None

    assert (found.id, found.amount, found.status, found.created_at) == (
        push_id,
        4200,
        "succeeded",
        NOW,
    )
