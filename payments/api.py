"""HTTP endpoints: STK pushes (create, read, list, export, live status) and the callback
Daraja posts to. Parse, call the service, serialise."""

from __future__ import annotations

import json
import logging
import time

from flask import Response, current_app, g, request, stream_with_context
from flask.views import MethodView

from core.api import Blueprint, errors, paginate
from core.errors import NotFound, PermissionDenied
from core.extensions import db, limiter
from core.idempotency import current_claim, idempotent
from core.streams import capped_event_stream
from core.tenancy import tenant_scope
from core.unit_of_work import tenant_unit_of_work
from payments import credentials, reports, service
from payments.models import StkPush
from payments.schemas import (
    CallbackAckSchema,
    MpesaCredentialsSchema,
    MpesaCredentialsViewSchema,
    StkPushCreateSchema,
    StkPushFilterSchema,
    StkPushListQuerySchema,
    StkPushListSchema,
    StkPushSchema,
)
from tenants.auth import current_caller

logger = logging.getLogger("lango.payments.api")

stk_pushes = Blueprint("stk_pushes", __name__, description="Collect money with M-Pesa STK push")
mpesa_credentials = Blueprint(
    "mpesa_credentials", __name__, description="Your live Daraja (M-Pesa) credentials"
)
callbacks = Blueprint(
    "mpesa_callbacks", __name__, description="Where Daraja posts results", authenticated=False
)
limiter.exempt(callbacks)

# How long one status stream stays open, and how often it re-reads the database in case a
# Redis notification was missed.
STREAM_MAX_SECONDS = 600
STREAM_POLL_SECONDS = 2.0
STREAM_HEARTBEAT_SECONDS = 15.0
# Streams one API key may hold open at once: each holds a web thread for minutes.
STREAMS_PER_KEY = 3


@stk_pushes.route("/v1/stk-pushes")
class StkPushes(MethodView):
    @stk_pushes.arguments(StkPushCreateSchema)
    @idempotent
    @stk_pushes.response(202, StkPushSchema)
    @errors(stk_pushes, 400, 401, 402, 403, 409, 429, 502, 503)
    def post(self, body):
        """Ask a customer to pay: sends an M-Pesa prompt to their phone.

        Test mode (sk_test_ keys) uses Lango's Daraja sandbox, where the phone number picks
        the outcome: 254708374149 (and any number not listed) succeeds; 254700000001
        insufficient funds; 254700001032 cancelled; 254700001037 unreachable; 254700001019
        expired; 254700002001 wrong PIN; 254700001001 refused at once (lock error);
        254700000099 no callback (resolved by reconciliation); 254700000098 duplicate
        callback; 254700000097 callback after 60 s.
        """
        return service.initiate_push(
            current_caller(), service.PushRequest(**body), claim=current_claim()
        )

    @stk_pushes.arguments(StkPushListQuerySchema, location="query")
    @stk_pushes.response(200, StkPushListSchema)
    @errors(stk_pushes, 400, 401, 403)
    def get(self, query):
        """List pushes, newest first (cursor pagination; filter by status, phone, created)."""
        cursor = {
            k: query.pop(k) for k in ("limit", "starting_after", "ending_before") if k in query
        }
        statement = service.list_pushes_statement(livemode=current_caller().livemode, **query)
        return paginate(statement, StkPush.id, **cursor)


@stk_pushes.get("/v1/stk-pushes/export")
@stk_pushes.arguments(StkPushFilterSchema, location="query")
@stk_pushes.response(
    200, description="CSV, one row per push, newest first", content_type="text/csv"
)
@errors(stk_pushes, 400, 401, 403)
def export_stk_pushes(query):
    """Stream the pushes matching the filters as CSV."""
    statement = service.list_pushes_statement(livemode=current_caller().livemode, **query)
    return Response(
        stream_with_context(reports.pushes_csv(statement, current_caller().tenant_id)),
        mimetype="text/csv",
        headers={"Content-Disposition": 'attachment; filename="stk-pushes.csv"'},
    )


@stk_pushes.get("/v1/stk-pushes/<string:push_id>")
@stk_pushes.response(200, StkPushSchema)
@errors(stk_pushes, 401, 403, 404)
def get_stk_push(push_id):
    """One push, with its outcome once known."""
    return service.get_push(push_id, livemode=current_caller().livemode)


@stk_pushes.get("/v1/stk-pushes/<string:push_id>/stream")
@stk_pushes.response(
    200,
    description="Server-Sent Events: an `status` event with the push at each change; "
    "the stream ends at a final state",
    content_type="text/event-stream",
)
@errors(stk_pushes, 401, 403, 404, 429)
def stream_stk_push(push_id):
    """Follow a push live (Server-Sent Events) until it reaches a final state.

    One API key may hold 3 streams open at once; a fourth is answered 429 `too_many_streams`
    until one ends."""
    caller = current_caller()
    service.get_push(push_id, livemode=caller.livemode)  # 404 before the stream starts
    redis = current_app.extensions["lango.redis"]

    def events():
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(service.status_channel(push_id))
        try:
            last_status = None
            started = last_sent = time.monotonic()
            while time.monotonic() - started < STREAM_MAX_SECONDS:
                with tenant_scope(caller.tenant_id):
                    push = db.session.get(StkPush, push_id)
                    status, payload = push.status, StkPushSchema().dump(push)
                if status != last_status:
                    last_status = status
                    last_sent = time.monotonic()
                    yield f"event: status\ndata: {json.dumps(payload)}\n\n"
                    if status.is_final:
                        return
                elif time.monotonic() - last_sent > STREAM_HEARTBEAT_SECONDS:
                    last_sent = time.monotonic()
                    yield ": keep-alive\n\n"
                pubsub.get_message(timeout=STREAM_POLL_SECONDS)
        finally:
            pubsub.close()

    return capped_event_stream(f"key:{caller.key_id}", STREAMS_PER_KEY, events())


@callbacks.post("/callbacks/mpesa/stk/<string:token>")
@callbacks.doc(security=[])
@callbacks.response(200, CallbackAckSchema)
@errors(callbacks, 403, 404)
def receive_stk_callback(token):
    """Daraja's STK callback. The token in the URL is unguessable and bound to one push.

    A callback for a live push is accepted only from MPESA_CALLBACK_ALLOWED_IPS when that is
    set (403 otherwise; the body is still kept); test-mode callbacks come from Lango's own
    sandbox and are exempt. The client address is the connection's (`remote_addr`): behind
    a proxy, TRUSTED_PROXIES makes it the real one."""
    tenant_id = service.tenant_id_from_token(token)
    if tenant_id is None:
        raise _forged_token()
    # The token names the tenant (no API key does): its scope is entered here, as a unit of
    # work of its own, because a scope rolls back what is left uncommitted when it ends.
    with tenant_unit_of_work(tenant_id):
        if not service.tenant_exists(tenant_id):
            raise _forged_token()
        try:
            result = service.record_callback(token, request.get_data(), request.remote_addr)
        except NotFound:
            logger.warning("callback token bound to no push", extra={"ip": request.remote_addr})
            raise
    g.callback_outcome = result.outcome.value
    return {"ResultCode": 0, "ResultDesc": "Accepted"}


def _forged_token() -> NotFound:
    logger.warning("callback with a forged or unknown token", extra={"ip": request.remote_addr})
    return NotFound("No such callback.")


@mpesa_credentials.route("/v1/mpesa-credentials")
class MpesaCredentialsResource(MethodView):
    @mpesa_credentials.response(200, MpesaCredentialsViewSchema)
    @errors(mpesa_credentials, 401, 403, 404)
    def get(self):
        """The live Daraja credentials on file (secrets masked)."""
        stored = credentials.get_credentials(current_caller().tenant_id)
        if stored is None:
            raise NotFound("No M-Pesa credentials have been set.")
        return stored

    @mpesa_credentials.arguments(MpesaCredentialsSchema)
    @mpesa_credentials.response(200, MpesaCredentialsViewSchema)
    @errors(mpesa_credentials, 400, 401, 403)
    def put(self, body):
        """Set or replace the live Daraja credentials (stored encrypted).

        Any key may set them while live mode is off; once it is on, only a live key may
        change them, so a leaked test key can never redirect live money.
        """
        caller = current_caller()
        if caller.live_enabled and not caller.livemode:
            raise PermissionDenied(
                "Live mode is on: change M-Pesa credentials with a live key.", code="mode_mismatch"
            )
        till_number = body.pop("till_number", None)
        return credentials.save_credentials(caller.tenant_id, till_number=till_number, **body)
