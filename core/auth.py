"""Who is calling: core runs the authentication a package provides, before Flask-Limiter
counts the request (limits are per tenant, core.ratelimit).

Tenants knows API keys and provides `authenticate(request)` in its `init_app`; core calls it
for every request to a blueprint marked `authenticated`, never importing tenants.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask, current_app, request

_AUTHENTICATOR = "lango.authenticator"


def provide_authenticator(app: Flask, authenticate: Callable[[], None]) -> None:
    """`authenticate()` sets `g.caller` (and the tenant binding) or raises a LangoError."""
    app.extensions[_AUTHENTICATOR] = authenticate


def authenticate_if_needed() -> None:
    blueprint = current_app.blueprints.get(request.blueprint or "")
    if getattr(blueprint, "authenticated", False):
        current_app.extensions[_AUTHENTICATOR]()
