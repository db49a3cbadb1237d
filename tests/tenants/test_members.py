"""tenants.members: member sign-in, TOTP, invites and the team's rules, at the service level."""

from __future__ import annotations

import hashlib
import secrets
import threading
from datetime import UTC, datetime, timedelta

import pyotp
import pytest
from sqlalchemy import select

from compliance.audit import AuditEntry
from core.errors import Conflict, NotFound, PermissionDenied, TenantSuspended, ValidationFailed
from core.extensions import db
from core.signin_throttle import SignInThrottled
from core.unit_of_work import unit_of_work
from tenants import members
from tenants.auth import load_member
from tenants.models import Member, MemberInvite, MemberRole
from tenants.service import EmailTaken
from tests.frontend.conftest import MEMBER_PASSWORD, add_member, owner_id

# Client addresses: the member's own, and a stranger's elsewhere.
HOME, ELSEWHERE = "192.0.2.10", "198.51.100.7"


def owner_of(app, tenant) -> Member:
    return db.session.get(Member, owner_id(app, tenant.id))


def email() -> str:
    return f"member-{secrets.token_hex(4)}@example.co.ke"


def test_wrong_password_and_unknown_email_fail_alike(app_context, tenant):
    with pytest.raises(members.MemberAuthFailed) as wrong:
        members.authenticate_member(tenant.email, "not-the-password", client_address=HOME)
    with pytest.raises(members.MemberAuthFailed) as unknown:
        members.authenticate_member("nobody@example.co.ke", "not-the-password", client_address=HOME)
    assert wrong.value.message == unknown.value.message == "Wrong email or password."
    assert members.authenticate_member(
        f"  {tenant.email.upper()} ", MEMBER_PASSWORD, client_address=HOME
    ).email == (tenant.email)


def test_twelve_wrong_passwords_make_that_address_wait_even_for_the_right_one(
    app_context, tenant, member_clock
):
    outcomes = []
    for _ in range(12):
        try:
            members.authenticate_member(tenant.email, "not-the-password", client_address=HOME)
        except (members.MemberAuthFailed, SignInThrottled) as error:
            outcomes.append(error.code)
    assert outcomes == ["member_credentials_invalid"] * 5 + ["sign_in_throttled"] * 7

    with pytest.raises(SignInThrottled) as throttled:
        members.authenticate_member(tenant.email, MEMBER_PASSWORD, client_address=HOME)
    assert throttled.value.status == 429
    assert throttled.value.headers == {"Retry-After": "60"}
    # Only that address waits: the member signs in from elsewhere at once.
    assert members.authenticate_member(tenant.email, MEMBER_PASSWORD, client_address=ELSEWHERE)
    member_clock.advance(60)
    assert members.authenticate_member(tenant.email, MEMBER_PASSWORD, client_address=HOME)


def test_a_completed_sign_in_clears_the_address_count(app_context, tenant, member_clock):
    for _ in range(4):
        with pytest.raises(members.MemberAuthFailed):
            members.authenticate_member(tenant.email, "not-the-password", client_address=HOME)
    members.authenticate_member(tenant.email, MEMBER_PASSWORD, client_address=HOME)
    for _ in range(4):
        with pytest.raises(members.MemberAuthFailed):
            members.authenticate_member(tenant.email, "not-the-password", client_address=HOME)
    assert members.authenticate_member(tenant.email, MEMBER_PASSWORD, client_address=HOME)


def test_wrong_totp_codes_count_and_the_right_password_does_not_clear_them(
    app, app_context, tenant, member_clock
):
    member = owner_of(app, tenant)
    secret = pyotp.random_base32()
    with unit_of_work():
        members.confirm_totp(member.id, secret, member_clock.code(secret))
    member_clock.advance(30)

    for _ in range(5):
        # The password step passes each time, but only the code step completes a sign-in.
        assert members.authenticate_member(tenant.email, MEMBER_PASSWORD, client_address=HOME)
        db.session.rollback()
        with pytest.raises(members.TotpInvalid):
            members.verify_member_totp(member.id, "000000", client_address=HOME)
    with pytest.raises(SignInThrottled):
        members.verify_member_totp(member.id, member_clock.code(secret), client_address=HOME)
    with pytest.raises(SignInThrottled):
        members.authenticate_member(tenant.email, MEMBER_PASSWORD, client_address=HOME)
    assert members.verify_member_totp(
        member.id, member_clock.code(secret), client_address=ELSEWHERE
    )


def test_unknown_emails_are_throttled_like_accounts(app_context):
    outcomes = []
    for _ in range(6):
        try:
            members.authenticate_member("nobody@example.co.ke", "guess", client_address=HOME)
        except (members.MemberAuthFailed, SignInThrottled) as error:
            outcomes.append(error.code)
    assert outcomes == ["member_credentials_invalid"] * 5 + ["sign_in_throttled"]


def test_a_session_id_works_until_the_session_ends(app, app_context, tenant):
    member = members.start_session(owner_of(app, tenant))
    session_id = member.get_id()
    assert load_member(session_id) is member
    members.end_session(member.id)
    assert load_member(session_id) is None
    # A new sign-in makes a new id; the old one stays dead.
    assert members.start_session(member).get_id() != session_id


def test_signing_in_on_a_second_device_keeps_the_first_signed_in(app, app_context, tenant):
    member = members.start_session(owner_of(app, tenant))
    laptop = member.get_id()
    phone = members.start_session(member).get_id()
    assert load_member(laptop) is member and load_member(phone) is member


def test_totp_accepts_one_step_of_drift_and_each_step_once(app, app_context, tenant, member_clock):
    member = owner_of(app, tenant)
    secret = pyotp.random_base32()
    members.confirm_totp(member.id, secret, member_clock.code(secret))
    totp = pyotp.TOTP(secret)

    with pytest.raises(members.TotpInvalid, match="already used"):
        members.verify_member_totp(member.id, member_clock.code(secret), client_address=HOME)
    member_clock.advance(60)
    members.verify_member_totp(
        member.id, totp.at(member_clock.now - 30), client_address=HOME
    )  # one step behind: fine
    with pytest.raises(members.TotpInvalid, match="already used"):
        members.verify_member_totp(member.id, totp.at(member_clock.now - 30), client_address=HOME)
    members.verify_member_totp(
        member.id, totp.at(member_clock.now + 30), client_address=HOME
    )  # one ahead: fine
    member_clock.advance(300)
    with pytest.raises(members.TotpInvalid, match="Wrong code"):
        members.verify_member_totp(member.id, totp.at(member_clock.now - 90), client_address=HOME)
    with pytest.raises(members.TotpInvalid, match="6-digit"):
        members.verify_member_totp(member.id, "12ab", client_address=HOME)


def test_the_totp_secret_is_stored_encrypted(app, app_context, tenant, member_clock):
    member = owner_of(app, tenant)
    secret = members.begin_totp_enrollment(member.id).secret
    assert db.session.get(Member, member.id).totp_secret is None  # nothing until confirmed
    members.confirm_totp(member.id, secret, member_clock.code(secret))
    stored = db.session.get(Member, member.id).totp_secret
    assert stored and secret not in stored
    with pytest.raises(Conflict):
        members.begin_totp_enrollment(member.id)
    with pytest.raises(members.WrongPassword):
        members.disable_totp(member.id, "wrong", client_address=HOME)
    assert members.disable_totp(member.id, MEMBER_PASSWORD, client_address=HOME).totp_secret is None


def test_an_invite_token_is_stored_as_its_hash_and_works_once(app, app_context, tenant):
    owner = owner_of(app, tenant)
    invite, token = members.invite_member(tenant.id, email(), "developer", owner)

    row = db.session.get(MemberInvite, invite.id)
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in row.token_hash
    assert row.expires_at - row.created_at == timedelta(days=7)
    assert members.get_invite_by_token(token).id == invite.id

    member = members.accept_invite(token, "joining-Passw0rd")
    assert (member.tenant_id, member.role, member.email) == (
        tenant.id,
        MemberRole.DEVELOPER,
        invite.email,
    )
    with pytest.raises(members.InviteInvalid):
        members.get_invite_by_token(token)
    with pytest.raises(members.InviteInvalid):
        members.accept_invite(token, "joining-Passw0rd")


def test_an_expired_or_revoked_invite_is_refused(app, app_context, tenant):
    owner = owner_of(app, tenant)
    expired, expired_token = members.invite_member(tenant.id, email(), "viewer", owner)
    db.session.get(MemberInvite, expired.id).expires_at = datetime.now(UTC) - timedelta(seconds=1)
    db.session.commit()
    revoked, revoked_token = members.invite_member(tenant.id, email(), "viewer", owner)
    members.revoke_invite(tenant.id, revoked.id, owner)

    for token in (expired_token, revoked_token, "nonsense"):
        with pytest.raises(members.InviteInvalid):
            members.accept_invite(token, "joining-Passw0rd")
    assert members.list_invites(tenant.id) == []


def test_an_invite_to_a_suspended_team_waits_for_reinstatement(app, app_context, tenant):
    from tenants.models import Tenant, TenantStatus

    owner = owner_of(app, tenant)
    _invite, token = members.invite_member(tenant.id, email(), "viewer", owner)
    db.session.get(Tenant, tenant.id).status = TenantStatus.SUSPENDED
    db.session.commit()

    with pytest.raises(TenantSuspended):
        members.accept_invite(token, "joining-Passw0rd")
    db.session.get(Tenant, tenant.id).status = TenantStatus.ACTIVE
    db.session.commit()
    assert members.accept_invite(token, "joining-Passw0rd").tenant_id == tenant.id


def test_inviting_again_replaces_the_earlier_link(app, app_context, tenant):
    owner = owner_of(app, tenant)
    address = email()
    _first, first_token = members.invite_member(tenant.id, address, "viewer", owner)
    second, _second_token = members.invite_member(tenant.id, address, "developer", owner)
    assert [invite.id for invite in members.list_invites(tenant.id)] == [second.id]
    with pytest.raises(members.InviteInvalid):
        members.get_invite_by_token(first_token)


def test_an_invite_for_an_existing_account_is_refused(app, app_context, tenant_factory):
    first, second = tenant_factory(), tenant_factory()
    owner = db.session.get(Member, owner_id(app, first.id))
    with pytest.raises(EmailTaken):
        members.invite_member(first.id, second.email, "viewer", owner)


def test_only_an_owner_of_the_team_may_change_it(app, app_context, tenant_factory):
    a, b = tenant_factory(), tenant_factory()
    developer = db.session.get(Member, add_member(app, a.id, "developer"))
    b_owner = db.session.get(Member, owner_id(app, b.id))
    with pytest.raises(PermissionDenied):
        members.invite_member(a.id, email(), "viewer", developer)
    # An owner of B is nobody in A's team.
    with pytest.raises(PermissionDenied):
        members.invite_member(a.id, email(), "owner", b_owner)
    with pytest.raises(PermissionDenied):
        members.change_role(a.id, developer.id, "owner", b_owner)


def test_another_tenants_ids_are_not_found(app, app_context, tenant_factory):
    a, b = tenant_factory(), tenant_factory()
    a_owner = db.session.get(Member, owner_id(app, a.id))
    b_viewer = add_member(app, b.id, "viewer")
    b_owner = db.session.get(Member, owner_id(app, b.id))
    b_invite, _token = members.invite_member(b.id, email(), "viewer", b_owner)

    with pytest.raises(NotFound):
        members.change_role(a.id, b_viewer, "owner", a_owner)
    with pytest.raises(NotFound):
        members.remove_member(a.id, b_viewer, a_owner)
    with pytest.raises(NotFound):
        members.revoke_invite(a.id, b_invite.id, a_owner)
    with pytest.raises(NotFound):
        members.get_member(a.id, b_viewer)
    assert db.session.get(Member, b_viewer).role is MemberRole.VIEWER
    assert db.session.get(MemberInvite, b_invite.id).revoked_at is None


def test_the_last_owner_stays(app, app_context, tenant):
    owner = owner_of(app, tenant)
    with pytest.raises(members.LastOwner):
        members.change_role(tenant.id, owner.id, "viewer", owner)
    with pytest.raises(members.LastOwner):
        members.remove_member(tenant.id, owner.id, owner)
    with pytest.raises(ValidationFailed):
        members.change_role(tenant.id, owner.id, "superuser", owner)
    assert db.session.get(Member, owner.id).role is MemberRole.OWNER


def test_two_owners_demoting_each_other_at_once_leave_one_owner(app, tenant):
    first = owner_id(app, tenant.id)
    second = add_member(app, tenant.id, "owner")
    barrier = threading.Barrier(2)
    outcomes = []

    def demote(actor_id: str, target_id: str) -> None:
        with app.app_context():
            actor = db.session.get(Member, actor_id)
            db.session.commit()
            barrier.wait()
            try:
                with unit_of_work():
                    members.change_role(tenant.id, target_id, "developer", actor)
                outcomes.append("demoted")
            except (members.LastOwner, PermissionDenied) as error:
                outcomes.append(type(error).__name__)
            finally:
                db.session.remove()

    threads = [
        threading.Thread(target=demote, args=(first, second)),
        threading.Thread(target=demote, args=(second, first)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    # The second change runs after the first commits: its actor is no longer an owner.
    assert sorted(outcomes) == ["PermissionDenied", "demoted"]
    with app.app_context():
        roles = db.session.scalars(select(Member.role).where(Member.tenant_id == tenant.id)).all()
        db.session.remove()
    assert roles.count(MemberRole.OWNER) == 1


def test_an_invite_accepted_twice_at_once_makes_one_member(app, tenant):
    with app.app_context():
        owner = db.session.get(Member, owner_id(app, tenant.id))
        with unit_of_work():
            invite, token = members.invite_member(tenant.id, email(), "viewer", owner)
            address = invite.email
        db.session.remove()
    barrier = threading.Barrier(4)
    outcomes = []

    def accept() -> None:
        with app.app_context():
            barrier.wait()
            try:
                with unit_of_work():
                    members.accept_invite(token, "joining-Passw0rd")
                outcomes.append("joined")
            except members.InviteInvalid:
                outcomes.append("refused")
            finally:
                db.session.remove()

    threads = [threading.Thread(target=accept) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(outcomes) == ["joined", "refused", "refused", "refused"]
    with app.app_context():
        assert len(db.session.scalars(select(Member).where(Member.email == address)).all()) == 1
        db.session.remove()


def test_removal_ends_the_members_sessions(app, app_context, tenant):
    owner = owner_of(app, tenant)
    viewer = members.start_session(db.session.get(Member, add_member(app, tenant.id, "viewer")))
    session_id = viewer.get_id()
    members.remove_member(tenant.id, viewer.id, owner)
    assert load_member(session_id) is None


def test_team_changes_are_audited_with_the_member_as_actor(app, app_context, tenant, member_clock):
    owner = owner_of(app, tenant)
    invite, token = members.invite_member(tenant.id, email(), "developer", owner)
    joined = members.accept_invite(token, "joining-Passw0rd")
    members.change_role(tenant.id, joined.id, "viewer", owner)
    secret = pyotp.random_base32()
    members.confirm_totp(joined.id, secret, member_clock.code(secret))
    members.change_password(joined.id, "joining-Passw0rd", "another-Passw0rd", client_address=HOME)
    members.remove_member(tenant.id, joined.id, owner)

    entries = db.session.scalars(
        select(AuditEntry)
        .where(AuditEntry.tenant_id == tenant.id, AuditEntry.action.like("member.%"))
        .order_by(AuditEntry.seq)
    ).all()
    assert [(e.action, e.actor_type, e.actor_id) for e in entries] == [
        ("member.invited", "member", owner.id),
        ("member.joined", "member", joined.id),
        ("member.role_changed", "member", owner.id),
        ("member.totp_enabled", "member", joined.id),
        ("member.password_changed", "member", joined.id),
        ("member.removed", "member", owner.id),
    ]
    assert entries[0].target_type == "member_invite" and entries[0].target_id == invite.id
    assert entries[2].diff["before"] == {"role": "developer"}
    assert entries[2].diff["after"] == {"role": "viewer"}
    # No secret reaches the audit log.
    assert all(
        secret not in str(entry.diff) and "Passw0rd" not in str(entry.diff) for entry in entries
    )
