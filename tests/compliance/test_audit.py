"""The audit log: one entry per audited action with the right actor, target and tenant;
append-only in the database; tenants see only their own trail. The hash chains, their
anchors and `lango audit verify`: test_audit_chain.py."""

from __future__ import annotations

import pytest
from flask_login import login_user
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError

from billing.models import Subscription
from billing.subscriptions import apply_pending_plan_change
from compliance.audit import AuditAction, AuditEntry, record
from core.extensions import db
from staff.models import StaffUser
from tenants.models import Member
from tests.billing.test_subscription import upgrade
from tests.conftest import ApiClient

AUDIT_LOG = "/v1/audit-log"
CREDENTIALS = {
    "shortcode": "174379",
    "kind": "paybill",
    "consumer_key": "ck_abcdefghijklmnop1234",
    "consumer_secret": "cs_abcdefghijklmnop5678",
    "passkey": "pk_" + "x" * 40,
}


def entries(app, action: AuditAction | None = None, tenant_id: str | None = None) -> list:
    with app.app_context():
        statement = select(AuditEntry).order_by(AuditEntry.seq)
        if action is not None:
            statement = statement.where(AuditEntry.action == action.value)
        if tenant_id is not None:
            statement = statement.where(AuditEntry.tenant_id == tenant_id)
        rows = db.session.scalars(statement).all()
        db.session.expunge_all()
        db.session.remove()
        return rows


def only(app, action: AuditAction, tenant_id: str) -> AuditEntry:
    rows = entries(app, action, tenant_id)
    assert len(rows) == 1, [(row.action, row.target_id) for row in rows]
    return rows[0]


def assert_key_actor(entry: AuditEntry, tenant) -> None:
    assert (entry.actor_type, entry.actor_id) == ("api_key", tenant.key_id)
    assert entry.actor_label == tenant.secret[:12]
    assert entry.request_id.startswith("req_") and entry.source_ip


def test_signup_is_recorded_with_the_owner_as_actor(app, tenant):
    entry = only(app, AuditAction.TENANT_SIGNED_UP, tenant.id)
    assert (entry.target_type, entry.target_id) == ("tenant", tenant.id)
    assert entry.actor_type == "member" and entry.actor_label == tenant.email
    assert entry.diff["after"]["business_name"] == "Duka Ltd"
    # The default key comes with the signup: no separate api_key.created entry.
    assert entries(app, AuditAction.API_KEY_CREATED, tenant.id) == []


def test_api_key_create_roll_and_revoke_are_recorded_once_each(app, api, tenant):
    created = api.post("/v1/api-keys", json={"name": "server", "mode": "test"}).get_json()
    rolled = api.post(f"/v1/api-keys/{created['id']}/roll", json={}).get_json()
    assert api.delete(f"/v1/api-keys/{rolled['id']}").status_code == 200

    entry = only(app, AuditAction.API_KEY_CREATED, tenant.id)
    assert (entry.target_type, entry.target_id) == ("api_key", created["id"])
    assert_key_actor(entry, tenant)
    entry = only(app, AuditAction.API_KEY_ROLLED, tenant.id)
    assert entry.target_id == created["id"]
    assert entry.diff["after"]["key_id"] == rolled["id"]
    assert_key_actor(entry, tenant)
    entry = only(app, AuditAction.API_KEY_REVOKED, tenant.id)
    assert entry.target_id == rolled["id"]
    assert_key_actor(entry, tenant)


def test_credentials_change_is_recorded_without_secrets(app, api, tenant):
    assert api.put("/v1/mpesa-credentials", json=CREDENTIALS).status_code == 200
    entry = only(app, AuditAction.MPESA_CREDENTIALS_CHANGED, tenant.id)
    assert entry.target_type == "mpesa_credentials" and entry.diff["before"] is None
    assert entry.diff["after"]["consumer_key_last4"] == "1234"
    assert "cs_abcdefghijklmnop5678" not in str(entry.diff)
    assert_key_actor(entry, tenant)

    assert api.put("/v1/mpesa-credentials", json={**CREDENTIALS, "shortcode": "600000"})
    changes = entries(app, AuditAction.MPESA_CREDENTIALS_CHANGED, tenant.id)
    assert len(changes) == 2
    assert changes[1].diff["before"]["shortcode"] == "174379"
    assert changes[1].diff["after"]["shortcode"] == "600000"


def test_plan_change_is_recorded(app, api, tenant):
    # Both switches happen without a key acting: the upgrade when its invoice is paid, the
    # downgrade when the period ends.
    upgrade(app, api, "growth")
    assert api.post("/v1/subscription", json={"plan": "starter"}).status_code == 200
    with app.app_context():
        subscription = db.session.scalars(
            select(Subscription).where(Subscription.tenant_id == tenant.id)
        ).one()
        apply_pending_plan_change(subscription)
        db.session.commit()
    changes = entries(app, AuditAction.SUBSCRIPTION_PLAN_CHANGED, tenant.id)
    assert [entry.diff for entry in changes] == [
        {"before": {"plan": "sandbox"}, "after": {"plan": "growth"}},
        {"before": {"plan": "growth"}, "after": {"plan": "starter"}},
    ]
    assert all(entry.target_id.startswith("sub_") for entry in changes)


def test_webhook_endpoint_changes_are_recorded(app, api, tenant):
    url = "https://hooks.example.com/lango"
    endpoint = api.post("/v1/webhook-endpoints", json={"url": url}).get_json()
    path = f"/v1/webhook-endpoints/{endpoint['id']}"
    headers = {"Authorization": f"Bearer {tenant.secret}"}
    assert api.client.patch(path, headers=headers, json={"description": "shop"}).status_code == 200
    assert api.delete(path).status_code == 200

    for action in (
        AuditAction.WEBHOOK_ENDPOINT_CREATED,
        AuditAction.WEBHOOK_ENDPOINT_UPDATED,
        AuditAction.WEBHOOK_ENDPOINT_DELETED,
    ):
        entry = only(app, action, tenant.id)
        assert (entry.target_type, entry.target_id) == ("webhook_endpoint", endpoint["id"])
        assert_key_actor(entry, tenant)
    updated = only(app, AuditAction.WEBHOOK_ENDPOINT_UPDATED, tenant.id)
    assert updated.diff["before"]["description"] is None
    assert updated.diff["after"]["description"] == "shop"
    assert "secret" not in str(updated.diff)


def test_push_initiation_is_recorded(platform, app, api, tenant):
    response = api.post(
        "/v1/stk-pushes",
        json={
            "phone_number": "254708374149",
            "amount": 10,
            "account_reference": "INV1",
            "description": "Order",
        },
    )
    assert response.status_code == 202, response.get_json()
    entry = only(app, AuditAction.STK_PUSH_INITIATED, tenant.id)
    assert (entry.target_type, entry.target_id) == ("stk_push", response.get_json()["id"])
    assert entry.diff["after"]["amount"] == 10
    assert "254708374149" not in str(entry.diff)
    assert_key_actor(entry, tenant)


def test_record_outside_a_request_is_by_the_system(app, app_context):
    entry = record(
        AuditAction.TENANT_SUSPENDED, target_type="tenant", target_id="x", tenant_id=None
    )
    db.session.commit()
    assert (entry.actor_type, entry.actor_id, entry.source_ip) == ("system", None, None)


def test_an_entry_rolls_back_with_its_change(app, app_context):
    record(AuditAction.TENANT_SUSPENDED, target_type="tenant", target_id="x", tenant_id=None)
    db.session.rollback()
    assert entries(app) == []


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE public.audit_log SET action = 'tenant.reinstated'",
        "DELETE FROM public.audit_log",
        "TRUNCATE public.audit_log",
    ],
)
def test_the_table_refuses_update_delete_and_truncate(app, tenant, statement):
    with (
        app.app_context(),
        pytest.raises(DBAPIError, match="append-only"),
        db.engine.begin() as connection,
    ):
        connection.exec_driver_sql(statement)
    assert len(entries(app)) == 1


def test_tenants_see_only_their_own_trail(app, client, api, tenant, tenant_factory):
    other = ApiClient(client, tenant_factory("Other Ltd").secret)
    other.post("/v1/api-keys", json={"name": "theirs", "mode": "test"})
    api.post("/v1/api-keys", json={"name": "mine", "mode": "test"})
    api.post("/v1/api-keys", json={"name": "mine too", "mode": "test"})

    body = api.get(AUDIT_LOG).get_json()
    assert [item["action"] for item in body["data"]] == [
        "api_key.created",
        "api_key.created",
        "tenant.signed_up",
    ]
    assert body["has_more"] is False
    first = body["data"][0]
    assert first["object"] == "audit_log_entry"
    assert first["actor"] == {"type": "api_key", "id": tenant.key_id, "label": tenant.secret[:12]}
    assert first["target"]["type"] == "api_key"
    assert {item["action"] for item in other.get(AUDIT_LOG).get_json()["data"]} == {
        "tenant.signed_up",
        "api_key.created",
    }
    assert len(other.get(AUDIT_LOG).get_json()["data"]) == 2


def test_audit_log_pages_and_filters(app, api, tenant):
    for n in range(3):
        api.post("/v1/api-keys", json={"name": f"k{n}", "mode": "test"})

    page = api.get(AUDIT_LOG, query_string={"limit": 2}).get_json()
    assert page["has_more"] is True and len(page["data"]) == 2
    rest = api.get(
        AUDIT_LOG, query_string={"limit": 2, "starting_after": page["data"][-1]["id"]}
    ).get_json()
    assert [item["action"] for item in rest["data"]] == ["api_key.created", "tenant.signed_up"]

    filtered = api.get(AUDIT_LOG, query_string={"action": "tenant.signed_up"}).get_json()
    assert [item["action"] for item in filtered["data"]] == ["tenant.signed_up"]
    newest = page["data"][0]["occurred_at"]
    later = api.get(AUDIT_LOG, query_string={"occurred_gte": "2999-01-01T00:00:00Z"})
    assert later.get_json()["data"] == [] and newest.endswith("Z")
    bad = api.get(AUDIT_LOG, query_string={"action": "nope"})
    assert bad.status_code == 400


def test_a_signed_in_page_user_is_the_actor_when_no_key_acts(app, tenant, staff_factory):
    """A member (dashboard) or staff user (consoles) signed in with flask-login acts as
    themselves: receivers of other domains' signals record without naming an actor."""
    account = staff_factory("admin")
    with app.test_request_context(environ_base={"REMOTE_ADDR": "203.0.113.9"}):
        member = db.session.scalar(select(Member).where(Member.tenant_id == tenant.id))
        staff_user = db.session.get(StaffUser, account.id)
        for user, actor_type in ((member, "member"), (staff_user, "staff")):
            login_user(user)
            entry = record(
                AuditAction.TENANT_SUSPENDED, target_type="tenant", target_id="x", tenant_id=None
            )
            assert (entry.actor_type, entry.actor_id, entry.actor_label) == (
                actor_type,
                user.id,
                user.email,
            )
            assert entry.source_ip == "203.0.113.9"
        db.session.rollback()
        db.session.remove()
