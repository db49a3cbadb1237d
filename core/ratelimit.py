"""Who a request counts against for rate limiting: its API key when it has one, else its IP."""

from flask import g, request


def rate_limit_key() -> str:
    caller = g.get("caller")
    if caller is not None:
        return f"key:{caller.key_id}"
    return f"ip:{client_ip()}"


def client_ip() -> str:
    # Behind a proxy, deployments wrap the app in werkzeug's ProxyFix so remote_addr is the
    # client's; trusting X-Forwarded-For blindly would let anyone pick their own bucket.
    return request.remote_addr or "unknown"
