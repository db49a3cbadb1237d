"""Error pages in the product's look for browsers; the API keeps its JSON errors."""

from __future__ import annotations

from flask import render_template, request

# Paths that always answer JSON, whoever asks.
_API_PREFIXES = ("/v1/", "/callbacks/", "/healthz", "/readyz", "/openapi.json", "/docs")

_TITLES = {
    400: "That request could not be handled",
    401: "Please sign in",
    403: "You don't have access to this page",
    404: "Page not found",
    405: "That action is not allowed here",
    413: "That upload is too large",
    429: "Too many requests",
    500: "Something went wrong on our side",
    503: "Temporarily unavailable",
}


def wants_html() -> bool:
    """Pages answer errors as pages; anything else only when the client names HTML outright
    (browsers do; `curl` and API clients, sending */* or nothing, get the JSON error)."""
    if request.path.startswith(_API_PREFIXES):
        return False
    from flask import current_app

    blueprint = current_app.blueprints.get(request.blueprint or "")
    if getattr(blueprint, "is_page", False):
        return True
    return any(
        value in ("text/html", "application/xhtml+xml") for value, _ in request.accept_mimetypes
    )


def html_error_page(status: int, message: str | None = None):
    """The error page for `status`, or None when the request should get JSON."""
    if not wants_html():
        return None
    from flask import g

    body = render_template(
        "errors/error.html",
        status=status,
        title=_TITLES.get(status, "Something went wrong"),
        message=message,
        request_id=g.get("request_id"),
    )
    return body, status
