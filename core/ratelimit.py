"""Who a request counts against for rate limiting (its tenant when it has an API key, else its
IP), and how much it may send: the limit of the caller's plan, else RATELIMIT_API_KEY."""

from collections.abc import Callable

from flask import current_app, g, request

# Tells a tenant's limit (billing, from the plan); plugged in by create_app, so core
# never imports a domain.
_tenant_limit: Callable[[str], str | None] | None = None


def use_tenant_limits(resolver: Callable[[str], str | None]) -> None:
    """Have the per-tenant limit come from `resolver(tenant_id)` (None: use the default)."""
    global _tenant_limit
    _tenant_limit = resolver


def api_key_limit() -> str:
    """The application-wide limit of this request, for Flask-Limiter (called on every
    request, after authentication has set g.caller)."""
    caller = g.get("caller")
    if caller is not None and _tenant_limit is not None:
        limit = _tenant_limit(caller.tenant_id)
        if limit:
            return limit
    return current_app.extensions["lango.settings"].RATELIMIT_API_KEY


def rate_limit_key() -> str:
    caller = g.get("caller")
    if caller is not None:
        # The plan's limit is the tenant's, shared by all its keys (both modes): counted per
        # key, a tenant could multiply it by minting keys.
        return f"tenant:{caller.tenant_id}"
    return f"ip:{client_ip()}"


def client_ip() -> str:
    # Behind proxies, TRUSTED_PROXIES makes remote_addr the client's (ProxyFix, core.create_app);
    # trusting X-Forwarded-For blindly would let anyone pick their own bucket.
    return request.remote_addr or "unknown"
