"""Fixtures for the pages: browsers signed in as each kind of user, and CSRF tokens.

Roles, as the access tables name them:
  anonymous            nobody signed in
  owner / developer / viewer    a member of a freshly signed-up tenant
  admin / compliance   staff after password and TOTP, through the real sign-in pages
  staff_password_only  staff who passed the password step but not the TOTP step
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

import pytest

from tests.accounts import STAFF_PASSWORD, Clock, StaffAccount

MEMBER_PASSWORD = "s3cure-Passw0rd"
MEMBER_ROLES = ("owner", "developer", "viewer")
STAFF_ROLES = ("admin", "compliance", "staff_password_only")
ALL_ROLES = ("anonymous", *MEMBER_ROLES, *STAFF_ROLES)
HTML = {"Accept": "text/html"}


@dataclass
class Signed:
    """A test client and who it is signed in as."""

    client: object
    role: str
    tenant: object = None  # SignedUpTenant, for members
    member_id: str | None = None
    staff: StaffAccount | None = None


def csrf_token(client) -> str:
    """This session's CSRF token, as every page carries it in <meta name="csrf-token">."""
    page = client.get("/", headers=HTML).get_data(as_text=True)
    match = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
    assert match, "no CSRF token on the landing page"
    return match.group(1)


def post_form(client, path: str, data: dict | None = None, **kwargs):
    """POST a form the way a browser does, with this session's CSRF token."""
    return client.post(
        path, data={"csrf_token": csrf_token(client), **(data or {})}, headers=HTML, **kwargs
    )


class OpenStream:
    """A Server-Sent Events response left open, in an app context of its own: a server runs
    each stream on a thread of its own, while in one thread the test client would hand the
    next request the open stream's context (its `g`, with the signed-in user of a request
    whose unit of work has ended). Close them newest first."""

    def __init__(self, client, path: str):
        self._context = client.application.app_context()
        self._context.push()
        self.response = client.get(path, buffered=False)
        self.status_code = self.response.status_code

    def close(self) -> None:
        self.response.close()
        self._context.pop()


def staff_sign_in(client, account: StaffAccount, clock: Clock, *, second_factor: bool = True):
    """Through the real pages: password, then (unless told otherwise) the TOTP code."""
    clock.advance(30)
    response = post_form(
        client, "/staff/login", {"email": account.email, "password": STAFF_PASSWORD}
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    if second_factor:
        response = post_form(client, "/staff/login/totp", {"code": clock.code(account.secret)})
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
    return response


def add_member(app, tenant_id: str, role: str, email: str | None = None) -> str:
    """A member of `tenant_id` with `role` (as an accepted invite would make one)."""
    from core.extensions import db
    from core.ids import new_id
    from core.passwords import hash_password
    from tenants.models import Member, MemberRole

    with app.app_context():
        member = Member(
            id=new_id("mem"),
            tenant_id=tenant_id,
            email=email or f"{role}-{secrets.token_hex(4)}@example.co.ke",
            password_hash=hash_password(MEMBER_PASSWORD),
            role=MemberRole(role),
        )
        db.session.add(member)
        db.session.commit()
        member_id = member.id
        db.session.remove()
    return member_id


def member_sign_in(app, client, member_id: str) -> None:
    """Give `client` a session for the member (the sign-in page's own tests go through the
    form; here only the outcome matters)."""
    from core.extensions import db
    from tenants.models import Member

    with app.app_context():
        member = db.session.get(Member, member_id)
        if not member.session_nonce:
            member.session_nonce = secrets.token_urlsafe(24)
            db.session.commit()
        session_id = member.get_id()
        db.session.remove()
    with client.session_transaction() as session:
        session["_user_id"] = session_id
        session["_fresh"] = True


def owner_id(app, tenant_id: str) -> str:
    from sqlalchemy import select

    from core.extensions import db
    from tenants.models import Member, MemberRole

    with app.app_context():
        member_id = db.session.scalar(
            select(Member.id).where(Member.tenant_id == tenant_id, Member.role == MemberRole.OWNER)
        )
        db.session.remove()
    return member_id


@pytest.fixture
def sign_in(app, tenant_factory, staff_factory, clock):
    """sign_in(role, tenant=None) → Signed: a new test client signed in as `role` (members
    join `tenant`, or a new one)."""

    def make(role: str, tenant=None) -> Signed:
        client = app.test_client()
        if role == "anonymous":
            return Signed(client, role)
        if role in MEMBER_ROLES:
            tenant = tenant or tenant_factory()
            member_id = (
                owner_id(app, tenant.id) if role == "owner" else add_member(app, tenant.id, role)
            )
            member_sign_in(app, client, member_id)
            return Signed(client, role, tenant=tenant, member_id=member_id)
        if role == "staff_password_only":
            account = staff_factory("admin", "compliance")
            staff_sign_in(client, account, clock, second_factor=False)
            return Signed(client, role, staff=account)
        account = staff_factory(role)
        staff_sign_in(client, account, clock)
        return Signed(client, role, staff=account)

    return make


def expected_access(response) -> int:
    """The status an access table compares with: 200, 302 (sent to sign in) or 403."""
    return response.status_code


# Who may open which dashboard page (frontend.auth; README "Dashboard roles"):
#   all members: overview, payments, test console (viewers cannot send), webhooks (read),
#                billing (read), team (read), your account
#   developer:   + API keys, webhooks changes, test pushes
#   owner:       + settings (credentials, KYC, tenant audit trail), billing and team changes
MEMBER_PAGE = {"anonymous": 302, "staff_password_only": 302, "admin": 403, "compliance": 403}
ADMIN_PAGE = {
    "anonymous": 302,
    "staff_password_only": 302,
    "owner": 403,
    "developer": 403,
    "viewer": 403,
    "admin": 200,
    "compliance": 403,
}
COMPLIANCE_PAGE = {**ADMIN_PAGE, "admin": 403, "compliance": 200}


def member_page(owner: int = 200, developer: int = 200, viewer: int = 200) -> dict:
    """The expected statuses of a dashboard page, per role."""
    return {**MEMBER_PAGE, "owner": owner, "developer": developer, "viewer": viewer}


@pytest.fixture
def check_access(sign_in):
    """check_access(table): `table` is [(path, {role: status})]; every role in ALL_ROLES must
    be given. Signs each role in once, GETs every path, and reports every mismatch at once."""

    def run(table: list[tuple[str, dict[str, int]]]) -> None:
        owner = sign_in("owner")
        clients = {"owner": owner}
        for role in ALL_ROLES:
            if role in ("developer", "viewer"):
                clients[role] = sign_in(role, tenant=owner.tenant)
            elif role != "owner":
                clients[role] = sign_in(role)
        mismatches = []
        for path, expected in table:
            assert set(expected) == set(ALL_ROLES), f"{path}: give every role"
            for role, status in expected.items():
                got = clients[role].client.get(path, headers=HTML).status_code
                if got != status:
                    mismatches.append(f"{path} as {role}: {got}, expected {status}")
        assert not mismatches, "\n".join(mismatches)

    return run
