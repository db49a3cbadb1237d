"""Who is calling: API keys for `/v1` (`Authorization: Bearer sk_…` → the calling tenant), and
the signed-in user a session cookie names (Flask-Login).

The key is resolved on a short platform transaction that ends before the request's tenant
binding is set, so the request's own transactions all run in the tenant's schema.

Session ids are `<member id>:<nonce>` for tenant members (Member.get_id); a package above
tenants with users of its own (staff: `staff:<id>:<nonce>`) registers a loader for its
prefix with `register_session_user_loader`, so tenants never imports it.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

from flask import Flask, current_app, g, request

from core.errors import AuthenticationFailed
from core.extensions import db
from core.tenancy import enter_tenant
from core.unit_of_work import Checkpoint, checkpoint
from tenants.models import Member
from tenants.service import Caller, authenticate

_SESSION_USER_LOADERS = "lango.session_user_loaders"


def register_session_user_loader(
    app: Flask, prefix: str, loader: Callable[[str], object | None]
) -> None:
    """Have session ids `<prefix>:…` loaded by `loader(session_id)` (given the whole id; it
    returns the user, or None when the session is no longer valid)."""
    loaders: dict[str, Callable] = app.extensions.setdefault(_SESSION_USER_LOADERS, {})
    if prefix in loaders:
        raise ValueError(f"a session user loader for {prefix!r} is registered twice")
    loaders[prefix] = loader


def load_session_user(session_id: str):
    """Flask-Login's user loader: the loader registered for the id's prefix, else a member."""
    prefix, _, _ = session_id.partition(":")
    loader = current_app.extensions.get(_SESSION_USER_LOADERS, {}).get(prefix)
    return loader(session_id) if loader is not None else load_member(session_id)


def load_member(session_id: str) -> Member | None:
    """The tenant member a session id (`<id>:<nonce>`, Member.get_id; the dashboard signs
    them in) names. A session whose nonce is no longer the member's (signed out elsewhere,
    password changed, removed from the team) loads nobody."""
    member_id, _, nonce = session_id.partition(":")
    member = db.session.get(Member, member_id)
    if member is None or not member.session_nonce or not nonce:
        return None
    return member if hmac.compare_digest(member.session_nonce, nonce) else None


def authenticate_request() -> Caller:
    """Core's authenticator (core.auth) for blueprints marked `authenticated`: sets
    `g.caller` and binds the request to the caller's tenant."""
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
