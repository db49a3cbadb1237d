"""Error pages in the product's look for browsers (the API keeps its JSON errors), and how a
page that shows a refusal itself still rolls its request back."""

from __future__ import annotations

from flask import current_app, g, render_template, request

from core.unit_of_work import REQUEST_FAILED

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
    body = render_template(
        "errors/error.html",
        status=status,
        title=_TITLES.get(status, "Something went wrong"),
        message=message,
        request_id=g.get("request_id"),
    )
    return body, status


def roll_back_request() -> None:
    """A page that shows a service's refusal itself returns normally, so its request would
    commit. Most such pages run the service in a savepoint; where the service ends
    transactions of its own (a checkpoint before Daraja is called, a read in another
    tenant's schema), no savepoint can hold it, and this makes the request's edge roll back
    instead — what the API does when the same service raises."""
    setattr(g, REQUEST_FAILED, True)
