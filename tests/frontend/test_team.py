"""The team page: members and pending invites for every member; owners invite by link,
revoke, change roles and remove — never leaving the team without an owner, and never
touching another tenant's members or invites."""

from __future__ import annotations

import re
import secrets

import pytest
from sqlalchemy import select

from compliance.audit import AuditEntry
from core.extensions import db
from tenants.models import Member, MemberInvite, MemberRole
from tests.frontend.conftest import HTML, add_member, member_page, post_form

ACCESS = [("/dashboard/team", member_page())]


def test_access(check_access):
    check_access(ACCESS)


def new_email() -> str:
    return f"teammate-{secrets.token_hex(4)}@example.co.ke"


def invite(client, email: str, role: str = "developer"):
    return post_form(client, "/dashboard/team/invites", {"email": email, "role": role})


def invite_link(response) -> str:
    match = re.search(
        r"<code data-copy-source>(http://[^<]+/invite/[^<]+)</code>",
        response.get_data(as_text=True),
    )
    assert match, response.get_data(as_text=True)[:3000]
    return match.group(1)


def role_of(app, member_id: str) -> MemberRole | None:
    with app.app_context():
        member = db.session.get(Member, member_id)
        role = member.role if member else None
        db.session.remove()
    return role


def actions(app, tenant_id: str) -> list[str]:
    with app.app_context():
        found = db.session.scalars(
            select(AuditEntry.action)
            .where(AuditEntry.tenant_id == tenant_id, AuditEntry.action.like("member.%"))
            .order_by(AuditEntry.seq)
        ).all()
        db.session.remove()
    return list(found)


def test_the_team_lists_members_with_role_and_two_step_sign_in(app, sign_in):
    owner = sign_in("owner")
    developer_email = new_email()
    add_member(app, owner.tenant.id, "developer", email=developer_email)

    page = owner.client.get("/dashboard/team", headers=HTML).get_data(as_text=True)

    assert owner.tenant.email in page and developer_email in page
    assert "(you)" in page
    assert '<span class="role">developer</span>' in page
    assert "No pending invites" in page
    assert "Create invite link" in page


@pytest.mark.parametrize("role", ["developer", "viewer"])
def test_other_roles_read_the_team_without_controls(sign_in, role):
    owner = sign_in("owner")
    invite(owner.client, new_email())
    reader = sign_in(role, tenant=owner.tenant)

    page = reader.client.get("/dashboard/team", headers=HTML).get_data(as_text=True)

    assert owner.tenant.email in page
    assert "Pending invites" in page and "teammate-" in page
    assert "Create invite link" not in page and "Change role" not in page
    assert "Revoke" not in page and ">Remove<" not in page
    assert "Only owners can invite people" in page


@pytest.mark.parametrize("role", ["developer", "viewer"])
def test_other_roles_cannot_change_the_team(app, sign_in, role):
    owner = sign_in("owner")
    invite(owner.client, new_email())
    with app.app_context():
        invite_id = db.session.scalar(select(MemberInvite.id))
        db.session.remove()
    other = sign_in(role, tenant=owner.tenant)
    client = other.client

    assert invite(client, new_email()).status_code == 403
    assert post_form(client, f"/dashboard/team/invites/{invite_id}/revoke").status_code == 403
    path = f"/dashboard/team/members/{owner.member_id}"
    assert post_form(client, f"{path}/role", {"role": "viewer"}).status_code == 403
    assert post_form(client, f"{path}/remove").status_code == 403
    assert role_of(app, owner.member_id) is MemberRole.OWNER
    with app.app_context():
        assert db.session.get(MemberInvite, invite_id).revoked_at is None
        db.session.remove()


def test_invite_accept_and_sign_in_with_the_role(app, sign_in):
    owner = sign_in("owner")
    email = new_email()

    response = invite(owner.client, email, "viewer")

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    page = response.get_data(as_text=True)
    assert "Invite link" in page and "data-copy" in page
    assert f"Invite link made for {email} (viewer)" in page
    assert "Lango does not email invites yet" in page
    link = invite_link(response)
    # Shown once: the team page lists the invite, not its link.
    again = owner.client.get("/dashboard/team", headers=HTML).get_data(as_text=True)
    assert email in again and link not in again

    newcomer = app.test_client()
    path = link.split("localhost", 1)[1]
    joined = post_form(
        newcomer, path, {"password": "viewer-Passw0rd", "confirm": "viewer-Passw0rd"}
    )
    assert joined.status_code == 302
    signed_in = app.test_client()
    assert (
        post_form(signed_in, "/login", {"email": email, "password": "viewer-Passw0rd"}).status_code
        == 302
    )
    team = signed_in.get("/dashboard/team", headers=HTML).get_data(as_text=True)
    assert "Only owners can invite people" in team and "You are a viewer" in team
    assert invite(signed_in, new_email()).status_code == 403
    # The accepted invite is no longer pending.
    assert "No pending invites" in owner.client.get("/dashboard/team", headers=HTML).get_data(
        as_text=True
    )
    assert actions(app, owner.tenant.id) == ["member.invited", "member.joined"]


def test_inviting_an_existing_account_is_a_409(sign_in, tenant_factory):
    owner = sign_in("owner")
    elsewhere = tenant_factory("Other Ltd")

    response = invite(owner.client, elsewhere.email)

    assert response.status_code == 409
    page = response.get_data(as_text=True)
    assert "Email: Someone with this email already has a Lango account." in page
    assert f'value="{elsewhere.email}"' in page


def test_invite_form_errors_name_the_field(sign_in):
    owner = sign_in("owner")
    response = invite(owner.client, "not-an-email", "superuser")
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "Email: Enter an email address" in page and "Role: Not a valid choice" in page


def test_a_revoked_invite_link_stops_working(app, sign_in):
    owner = sign_in("owner")
    link = invite_link(invite(owner.client, new_email()))
    with app.app_context():
        invite_id = db.session.scalar(select(MemberInvite.id))
        db.session.remove()

    response = post_form(owner.client, f"/dashboard/team/invites/{invite_id}/revoke")

    assert response.status_code == 302
    page = owner.client.get("/dashboard/team", headers=HTML).get_data(as_text=True)
    assert "revoked; its link no longer works" in page and "No pending invites" in page
    assert app.test_client().get(link.split("localhost", 1)[1], headers=HTML).status_code == 404
    assert post_form(owner.client, f"/dashboard/team/invites/{invite_id}/revoke").status_code == 404


def test_owner_changes_a_role(app, sign_in):
    owner = sign_in("owner")
    developer = sign_in("developer", tenant=owner.tenant)

    response = post_form(
        owner.client,
        f"/dashboard/team/members/{developer.member_id}/role",
        {"role": "viewer"},
    )

    assert response.status_code == 302
    assert role_of(app, developer.member_id) is MemberRole.VIEWER
    page = owner.client.get("/dashboard/team", headers=HTML).get_data(as_text=True)
    assert "is now viewer" in page
    # The change applies to the member's next request.
    assert "You are a viewer" in developer.client.get("/dashboard/team", headers=HTML).get_data(
        as_text=True
    )
    assert "member.role_changed" in actions(app, owner.tenant.id)


def test_the_last_owner_cannot_be_demoted_or_removed(app, sign_in):
    owner = sign_in("owner")
    path = f"/dashboard/team/members/{owner.member_id}"

    demoted = post_form(owner.client, f"{path}/role", {"role": "developer"})
    assert demoted.status_code == 409
    assert "A team needs at least one owner" in demoted.get_data(as_text=True)
    removed = post_form(owner.client, f"{path}/remove")
    assert removed.status_code == 409
    assert "the last owner cannot be removed" in removed.get_data(as_text=True)
    assert role_of(app, owner.member_id) is MemberRole.OWNER


def test_with_a_second_owner_an_owner_may_step_down(app, sign_in):
    owner = sign_in("owner")
    second = add_member(app, owner.tenant.id, "owner")

    response = post_form(
        owner.client, f"/dashboard/team/members/{owner.member_id}/role", {"role": "developer"}
    )

    assert response.status_code == 302
    assert role_of(app, owner.member_id) is MemberRole.DEVELOPER
    assert role_of(app, second) is MemberRole.OWNER
    assert invite(owner.client, new_email()).status_code == 403


def test_removing_a_member_ends_their_sessions(app, sign_in):
    owner = sign_in("owner")
    viewer = sign_in("viewer", tenant=owner.tenant)
    assert viewer.client.get("/dashboard", headers=HTML).status_code == 200

    response = post_form(owner.client, f"/dashboard/team/members/{viewer.member_id}/remove")

    assert response.status_code == 302
    assert "was removed from the team" in owner.client.get(
        "/dashboard/team", headers=HTML
    ).get_data(as_text=True)
    assert role_of(app, viewer.member_id) is None
    assert viewer.client.get("/dashboard", headers=HTML).status_code == 302
    assert "member.removed" in actions(app, owner.tenant.id)


def test_an_owner_may_leave_when_another_owner_stays(app, sign_in):
    owner = sign_in("owner")
    add_member(app, owner.tenant.id, "owner")

    response = post_form(owner.client, f"/dashboard/team/members/{owner.member_id}/remove")

    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert owner.client.get("/dashboard", headers=HTML).status_code == 302


def test_an_owner_cannot_touch_another_tenants_team(app, sign_in):
    a = sign_in("owner")
    b = sign_in("owner")
    b_viewer = sign_in("viewer", tenant=b.tenant)
    invite(b.client, new_email())
    with app.app_context():
        b_invite = db.session.scalar(
            select(MemberInvite.id).where(MemberInvite.tenant_id == b.tenant.id)
        )
        db.session.remove()

    for path, data in [
        (f"/dashboard/team/members/{b_viewer.member_id}/role", {"role": "owner"}),
        (f"/dashboard/team/members/{b.member_id}/role", {"role": "viewer"}),
        (f"/dashboard/team/members/{b_viewer.member_id}/remove", {}),
        (f"/dashboard/team/invites/{b_invite}/revoke", {}),
    ]:
        response = post_form(a.client, path, data)
        assert response.status_code == 404, path

    assert role_of(app, b_viewer.member_id) is MemberRole.VIEWER
    assert role_of(app, b.member_id) is MemberRole.OWNER
    with app.app_context():
        assert db.session.get(MemberInvite, b_invite).revoked_at is None
        db.session.remove()
    page = a.client.get("/dashboard/team", headers=HTML).get_data(as_text=True)
    assert b.tenant.email not in page and "teammate-" not in page
    assert b_viewer.client.get("/dashboard", headers=HTML).status_code == 200
