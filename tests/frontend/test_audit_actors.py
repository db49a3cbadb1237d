"""Who the audit trail names for what is done in the pages: the signed-in member or staff
user, and the address they came from (through the API it names the key:
tests/compliance/test_audit.py)."""

from __future__ import annotations

from sqlalchemy import select

from compliance.audit import AuditAction, AuditEntry
from core.extensions import db
from tenants.models import Member
from tests.frontend.conftest import post_form


def audited(app, action: AuditAction, **where) -> list[AuditEntry]:
    with app.app_context():
        statement = select(AuditEntry).where(AuditEntry.action == action.value)
        for column, value in where.items():
            statement = statement.where(getattr(AuditEntry, column) == value)
        rows = db.session.scalars(statement.order_by(AuditEntry.seq)).all()
        db.session.expunge_all()
        db.session.remove()
        return rows


def member_email(app, member_id: str) -> str:
    with app.app_context():
        email = db.session.get(Member, member_id).email
        db.session.remove()
        return email


def test_keys_and_endpoints_made_in_the_dashboard_name_the_member_and_address(app, sign_in):
    developer = sign_in("developer")
    created = post_form(developer.client, "/dashboard/keys", {"name": "Checkout server"})
    assert created.status_code == 201
    endpoint = post_form(
        developer.client,
        "/dashboard/webhooks",
        {"url": "https://hooks.example.com/lango", "description": "Orders", "enabled_events": "*"},
    )
    assert endpoint.status_code == 200, endpoint.get_data(as_text=True)[:500]

    email = member_email(app, developer.member_id)
    for action in (AuditAction.API_KEY_CREATED, AuditAction.WEBHOOK_ENDPOINT_CREATED):
        (entry,) = audited(app, action, tenant_id=developer.tenant.id)
        assert (entry.actor_type, entry.actor_id, entry.actor_label) == (
            "member",
            developer.member_id,
            email,
        ), action
        assert entry.source_ip == "127.0.0.1" and entry.request_id.startswith("req_")


def test_a_key_revoked_in_the_dashboard_names_the_member(app, sign_in):
    owner = sign_in("owner")
    response = post_form(owner.client, f"/dashboard/keys/{owner.tenant.key_id}/revoke")
    assert response.status_code == 302

    (entry,) = audited(app, AuditAction.API_KEY_REVOKED, tenant_id=owner.tenant.id)
    assert (entry.actor_type, entry.actor_id) == ("member", owner.member_id)
    assert entry.actor_label == owner.tenant.email and entry.source_ip == "127.0.0.1"


def test_staff_sign_in_through_the_pages_names_the_staff_user_and_address(app, sign_in):
    admin = sign_in("admin")

    (entry,) = audited(app, AuditAction.STAFF_LOGIN_SUCCEEDED, target_id=admin.staff.id)
    assert (entry.actor_type, entry.actor_id, entry.actor_label) == (
        "staff",
        admin.staff.id,
        admin.staff.email,
    )
    assert entry.source_ip == "127.0.0.1"
