"""The sandbox's HTTP surface: Daraja's paths, methods and error envelopes.

Each view authenticates, parses, calls one service function and serialises. Every failure,
including unknown paths, wrong methods and crashes, is answered in Daraja's envelope
(errors.py), never with an HTML page.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from payments.sandbox import errors, service
from payments.sandbox.validation import parse_push, parse_query

logger = logging.getLogger("lango.sandbox")

blp = Blueprint("sandbox", __name__)


def _sandbox():
    return current_app.extensions["lango.sandbox"]


@blp.before_app_request
def start_callback_delivery() -> None:
    # Lazily, per process: a gunicorn worker is forked after the app is built, and threads do
    # not survive a fork.
    _sandbox().dispatcher.ensure_running()


@blp.route("/oauth/v1/generate", methods=["GET"], provide_automatic_options=False)
def generate_token():
    sandbox = _sandbox()
    body = service.issue_token(
        sandbox.config,
        sandbox.store,
        request.headers.get("Authorization"),
        request.args.get("grant_type"),
    )
    return jsonify(body)


@blp.route("/mpesa/stkpush/v1/processrequest", methods=["POST"], provide_automatic_options=False)
def process_request():
    sandbox = _sandbox()
    service.authenticate(sandbox.store, request.headers.get("Authorization"))
    push = service.accept_push(sandbox.config, sandbox.store, parse_push(_json_body()))
    sandbox.dispatcher.wake()
    return jsonify(service.push_accepted_response(push))


@blp.route("/mpesa/stkpushquery/v1/query", methods=["POST"], provide_automatic_options=False)
def query():
    sandbox = _sandbox()
    service.authenticate(sandbox.store, request.headers.get("Authorization"))
    return jsonify(service.query_push(sandbox.config, sandbox.store, parse_query(_json_body())))


@blp.route(
    "/sandbox/stk-pushes/<checkout_request_id>",
    methods=["GET"],
    provide_automatic_options=False,
)
def show_push(checkout_request_id: str):
    """Debugging aid (not a Daraja API): what the sandbox holds for one push."""
    sandbox = _sandbox()
    service.authenticate(sandbox.store, request.headers.get("Authorization"))
    described = service.describe_push(sandbox.store, checkout_request_id)
    if described is None:
        raise errors.resource_not_found()
    return jsonify(described)


def _json_body():
    # Daraja parses nothing without a JSON content type, so the first field it checks looks
    # missing: `requests.post(data=...)` famously gets "Invalid BusinessShortCode" (§0).
    if not request.is_json:
        raise errors.bad_request("BusinessShortCode")
    body = request.get_json(silent=True)
    if body is None:
        raise errors.invalid_payload()
    return body


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(errors.DarajaError)
    def daraja_error(error: errors.DarajaError):
        return error.response()

    @app.errorhandler(service.InvalidClient)
    def invalid_client(error: service.InvalidClient):
        # Daraja's answer to a wrong key or secret: a 400 with no body at all.
        response = Response(status=400)
        del response.headers["Content-Type"]
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        if error.code == 404:
            return errors.resource_not_found().response()
        if error.code == 405:
            return errors.method_not_allowed().response()
        if error.code is not None and 400 <= error.code < 500:
            return errors.invalid_payload().response()  # e.g. body too large
        return errors.internal_error().response()

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        logger.exception("sandbox request failed", extra={"path": request.path})
        return errors.internal_error().response()
