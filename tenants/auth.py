"""API key authentication for `/v1`: `Authorization: Bearer sk_…` → the calling tenant.

The key is resolved on a short platform transaction that ends before the request's tenant
binding is set, so the request's own transactions all run in the tenant's schema.
"""

from __future__ import annotations

import hmac

from flask import current_app, g, request

from core.errors import AuthenticationFailed
from core.extensions import db, login_manager
from core.tenancy import enter_tenant
from core.unit_of_work import Checkpoint, checkpoint
from tenants.models import Member
from tenants.service import Caller, authenticate


@login_manager.user_loader
def load_member(member_id: str):
    """Flask-Login's session user: a tenant member (`<id>:<nonce>`, Member.get_id; the
    dashboard signs them in), or a staff user (`staff:<id>:<nonce>`, StaffUser.get_id).
    A session whose nonce is no longer the member's (signed out elsewhere, password
    changed, removed from the team) loads nobody."""
    if member_id.startswith("staff:"):
        from staff.service import load_session_user

        return load_session_user(member_id)
    member_id, _, nonce = member_id.partition(":")
    member = db.session.get(Member, member_id)
    if member is None or not member.session_nonce or not nonce:
        return None
    return member if hmac.compare_digest(member.session_nonce, nonce) else None


def authenticate_request() -> Caller:
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise AuthenticationFailed(
            "No API key provided. Send it as `Authorization: Bearer sk_test_…`.",
            code="api_key_missing",
        )
    # A blueprint may admit keys of tenants suspended for a given reason (billing's invoices
    # admit "billing", so a suspended tenant can still pay); every other route refuses them.
    blueprint = current_app.blueprints.get(request.blueprint or "")
    caller = authenticate(
        secret.strip(), admit_suspended_for=getattr(blueprint, "admits_suspended_for", ())
    )
    # The platform transaction that resolved the key (and noted its use) ends here: the
    # request's own transactions must begin bound to the tenant's schema.
    checkpoint(Checkpoint.CALLER_RESOLVED)
    g.caller = caller
    g.tenant_token = enter_tenant(caller.tenant_id)
    return caller


def current_caller() -> Caller:
    return g.caller
