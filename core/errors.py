"""Domain errors and the one place that turns any failure into Lango's error shape.

    {"error": {"type", "code", "message", "param"?, "errors"?, "request_id"}}

Services raise `LangoError` subclasses and never know about HTTP; this module maps them,
werkzeug's HTTP errors (404/405/413 …), validation failures and unexpected exceptions to
that shape. An unexpected exception is logged with its request id and answered 500 with the
same id and no detail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import quote, urlsplit

from flask import Flask, g, jsonify, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import RequestRedirect

from core.logs import redact

logger = logging.getLogger("lango.errors")

# The longest URL (path and query string, as sent) the API answers. gunicorn refuses request
# lines beyond its own `limit_request_line` with an HTML page before the app sees them; with
# that set higher (core's gunicorn config), anything between gets this JSON 414 instead.
MAX_URL_BYTES = 4096


class LangoError(Exception):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"
    message = "The request is invalid."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        param: str | None = None,
        errors: dict | None = None,
        headers: dict | None = None,
        **details,
    ):
        super().__init__(message or self.message)
        self.message = message or self.message
        self.code = code or self.code
        self.param = param
        self.errors = errors
        self.headers = headers or {}
        self.details = details


class ValidationFailed(LangoError):
    code = "parameter_invalid"
    message = "The request has invalid parameters."


class AuthenticationFailed(LangoError):
    status = 401
    type = "authentication_error"
    code = "api_key_invalid"
    message = "Invalid API key."


class PermissionDenied(LangoError):
    status = 403
    type = "permission_error"
    code = "permission_denied"
    message = "This key may not do that."


class TenantSuspended(PermissionDenied):
    code = "tenant_suspended"
    message = "This account is suspended; contact support."


class NotFound(LangoError):
    status = 404
    code = "resource_missing"
    message = "No such object."


class Conflict(LangoError):
    status = 409
    code = "conflict"


class RateLimited(LangoError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limited"
    message = "Too many requests; slow down and retry after the Retry-After interval."


class UriTooLong(LangoError):
    status = 414
    code = "uri_too_long"
    message = f"The URL is too long: at most {MAX_URL_BYTES} bytes, path and query together."


class ServiceUnavailable(LangoError):
    status = 503
    type = "api_error"
    code = "service_unavailable"
    message = "The service is temporarily unavailable."


# werkzeug's HTTP errors by status: (type, code, message)
_HTTP_ERRORS = {
    400: ("invalid_request_error", "invalid_request", "The request could not be understood."),
    401: ("authentication_error", "api_key_invalid", "Authentication is required."),
    403: ("permission_error", "permission_denied", "Forbidden."),
    404: ("invalid_request_error", "resource_missing", "No such route."),
    405: ("invalid_request_error", "method_not_allowed", "That method is not allowed here."),
    406: ("invalid_request_error", "not_acceptable", "This endpoint answers JSON only."),
    413: ("invalid_request_error", "body_too_large", "The request body is too large."),
    414: ("invalid_request_error", "uri_too_long", UriTooLong.message),
    415: ("invalid_request_error", "unsupported_media_type", "Send JSON (application/json)."),
}


def error_body(
    status: int,
    type_: str,
    code: str,
    message: str,
    *,
    param: str | None = None,
    errors: dict | None = None,
    **details,
) -> dict:
    error = {"type": type_, "code": code, "message": message}
    if param:
        error["param"] = param
    if errors:
        error["errors"] = errors
    error.update(details)
    error["request_id"] = getattr(g, "request_id", None)
    return {"error": error}


def _respond(status: int, body: dict, headers: dict | None = None):
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


# Renders an error as a page for browsers (the frontend plugs it in; None means "answer
# JSON"), so that core never imports the frontend.
_html_error_page: Callable[[int, str | None], object | None] | None = None


def use_html_errors(renderer: Callable[[int, str | None], object | None]) -> None:
    global _html_error_page
    _html_error_page = renderer


def _page(status: int, message: str | None):
    return _html_error_page(status, message) if _html_error_page is not None else None


def _fail_request_unit() -> None:
    # Whatever the failed request wrote is rolled back by its unit of work (core.unit_of_work;
    # the key is spelled here because that module builds on this one).
    g.lango_request_failed = True


def handle_lango_error(error: LangoError):
    _fail_request_unit()
    page = _page(error.status, error.message)
    if page is not None:
        return page
    body = error_body(
        error.status,
        error.type,
        error.code,
        error.message,
        param=error.param,
        errors=error.errors,
        **error.details,
    )
    return _respond(error.status, body, error.headers)


def handle_http_exception(error: HTTPException):
    _fail_request_unit()
    status = error.code or 500
    page = _page(status, error.description if status < 500 else None)
    if page is not None:
        return page
    if status == 429:
        return _rate_limited(error)
    type_, code, message = _HTTP_ERRORS.get(
        status, ("invalid_request_error" if status < 500 else "api_error", "http_error", None)
    )
    headers = {}
    if status == 405 and error.valid_methods:
        headers["Allow"] = ", ".join(error.valid_methods)
    return _respond(status, error_body(status, type_, code, message or error.description), headers)


def _rate_limited(error: HTTPException):
    limit = getattr(error, "limit", None)
    described = f" ({limit.limit})" if limit is not None else ""
    response = _respond(
        429, error_body(429, RateLimited.type, RateLimited.code, RateLimited.message + described)
    )
    # Flask-Limiter injects Retry-After and X-RateLimit-* onto this response afterwards.
    return response


def handle_unexpected(error: Exception):
    _fail_request_unit()
    if isinstance(error, HTTPException):
        return handle_http_exception(error)
    # The path is redacted as in the request log: callback and invite URLs carry a secret.
    logger.exception(
        "unhandled error",
        extra={"error_class": type(error).__name__, "path": redact(request.path)},
    )
    page = _page(500, None)
    if page is not None:
        return page
    return _respond(
        500,
        error_body(
            500,
            "api_error",
            "internal_error",
            "Something went wrong on our side; quote the request_id if you contact us.",
        ),
    )


def refuse_routing_redirect() -> None:
    """Werkzeug answers a path like `/v1//tenant` with a 308 redirect and an HTML page, before
    any error handler could see it. The API never redirects: such a path is a 404 in the
    error shape, naming the path that exists."""
    redirect = request.routing_exception
    if isinstance(redirect, RequestRedirect):
        raise NotFound(f"No such route; did you mean {urlsplit(redirect.new_url).path}?")


def refuse_long_url() -> None:
    """No id or filter needs a URL longer than MAX_URL_BYTES: refused in the error shape."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    if raw is None:  # servers that do not pass the request line on (the test client)
        raw = quote(request.path) + ("?" if request.query_string else "")
        length = len(raw.encode()) + len(request.query_string)
    else:
        length = len(raw.encode("latin-1", "replace"))
    if length > MAX_URL_BYTES:
        raise UriTooLong()


def register_error_handlers(app: Flask) -> None:
    app.before_request(refuse_long_url)
    app.before_request(refuse_routing_redirect)
    app.register_error_handler(LangoError, handle_lango_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(Exception, handle_unexpected)
