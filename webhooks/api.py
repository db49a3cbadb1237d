"""HTTP endpoints: webhook endpoints (create, list, read, change, delete, rotate the secret,
send a test ping) and the event log (list, read with deliveries, redeliver). Parse, call the
service, serialise."""

from __future__ import annotations

from datetime import timedelta

from flask.views import MethodView

from core.api import Blueprint, ListQuerySchema, errors, paginate
from core.events import Event
from core.idempotency import idempotent
from tenants.auth import current_caller
from webhooks import endpoints, events
from webhooks.models import WebhookEndpoint
from webhooks.schemas import (
    DeletedWebhookEndpointSchema,
    EventDetailSchema,
    EventListQuerySchema,
    EventListSchema,
    EventRedeliverSchema,
    EventSchema,
    IssuedWebhookEndpointSchema,
    WebhookDeliveryListSchema,
    WebhookEndpointCreateSchema,
    WebhookEndpointListSchema,
    WebhookEndpointSchema,
    WebhookEndpointUpdateSchema,
    WebhookSecretRotateSchema,
)

webhook_endpoints = Blueprint(
    "webhook_endpoints", __name__, description="Where Lango sends your events (webhooks)"
)
event_log = Blueprint("events", __name__, description="Events and their webhook deliveries")

_CURSOR = ("limit", "starting_after", "ending_before")


def _split_cursor(query: dict) -> dict:
    return {k: query.pop(k) for k in _CURSOR if k in query}


@webhook_endpoints.route("/v1/webhook-endpoints")
class WebhookEndpoints(MethodView):
    @webhook_endpoints.arguments(WebhookEndpointCreateSchema)
    @idempotent(secret_in_response=True)
    @webhook_endpoints.response(201, IssuedWebhookEndpointSchema)
    @errors(webhook_endpoints, 400, 401, 403, 409, 429)
    def post(self, body):
        """Add an endpoint in the key's mode. Its signing secret (`whsec_…`) is in this
        answer only. Live endpoints need an https URL; the plan caps how many there are
        (403 `endpoint_limit_reached`)."""
        return endpoints.create_endpoint(livemode=current_caller().livemode, **body)

    @webhook_endpoints.arguments(ListQuerySchema, location="query")
    @webhook_endpoints.response(200, WebhookEndpointListSchema)
    @errors(webhook_endpoints, 400, 401, 403)
    def get(self, query):
        """List the key's mode's endpoints, newest first (cursor pagination)."""
        statement = endpoints.list_endpoints_statement(livemode=current_caller().livemode)
        return paginate(statement, WebhookEndpoint.id, **query)


@webhook_endpoints.route("/v1/webhook-endpoints/<string:endpoint_id>")
class WebhookEndpointById(MethodView):
    @webhook_endpoints.response(200, WebhookEndpointSchema)
    @errors(webhook_endpoints, 401, 403, 404)
    def get(self, endpoint_id):
        """One endpoint (never its secret)."""
        return endpoints.get_endpoint(endpoint_id, livemode=current_caller().livemode)

    @webhook_endpoints.arguments(WebhookEndpointUpdateSchema)
    @webhook_endpoints.response(200, WebhookEndpointSchema)
    @errors(webhook_endpoints, 400, 401, 403, 404)
    def patch(self, body, endpoint_id):
        """Change an endpoint. Re-enabling a disabled one redelivers the events it missed."""
        return endpoints.update_endpoint(endpoint_id, livemode=current_caller().livemode, **body)

    @webhook_endpoints.response(200, DeletedWebhookEndpointSchema)
    @errors(webhook_endpoints, 401, 403, 404)
    def delete(self, endpoint_id):
        """Delete an endpoint; deliveries still pending to it are marked failed."""
        return endpoints.delete_endpoint(endpoint_id, livemode=current_caller().livemode)


@webhook_endpoints.post("/v1/webhook-endpoints/<string:endpoint_id>/rotate-secret")
@webhook_endpoints.arguments(WebhookSecretRotateSchema, required=False)  # no body: 24 h
@idempotent(secret_in_response=True)
@webhook_endpoints.response(200, IssuedWebhookEndpointSchema)
@errors(webhook_endpoints, 400, 401, 403, 404, 409, 429)
def rotate_endpoint_secret(body, endpoint_id):
    """Issue a new signing secret (in this answer only). The old one keeps signing alongside
    it for `grace_period_seconds` (default 24 h), so receivers can switch without a gap."""
    return endpoints.rotate_secret(
        endpoint_id,
        livemode=current_caller().livemode,
        grace=timedelta(seconds=body["grace_period_seconds"]),
    )


@webhook_endpoints.post("/v1/webhook-endpoints/<string:endpoint_id>/test")
@idempotent
@webhook_endpoints.response(202, EventSchema)
@errors(webhook_endpoints, 401, 403, 404, 409, 429)
def test_webhook_endpoint(endpoint_id):
    """Send the endpoint a `ping` event, delivered (and signed) like any other."""
    return endpoints.send_test_event(endpoint_id, livemode=current_caller().livemode)


@event_log.get("/v1/events")
@event_log.arguments(EventListQuerySchema, location="query")
@event_log.response(200, EventListSchema)
@errors(event_log, 400, 401, 403)
def list_events(query):
    """List the key's mode's events, newest first (cursor pagination; filter by `type`, and
    by `delivery_status` for events with at least one delivery in that status)."""
    cursor = _split_cursor(query)
    statement = events.list_events_statement(livemode=current_caller().livemode, **query)
    return paginate(statement, Event.id, **cursor)


@event_log.get("/v1/events/<string:event_id>")
@event_log.response(200, EventDetailSchema)
@errors(event_log, 401, 403, 404)
def get_event(event_id):
    """One event, with its deliveries and every attempt made (time, status code, duration,
    the first bytes of the answer, error)."""
    return events.get_event(event_id, livemode=current_caller().livemode)


@event_log.post("/v1/events/<string:event_id>/redeliver")
@event_log.arguments(EventRedeliverSchema, required=False)  # no body: every endpoint
@idempotent
@event_log.response(202, WebhookDeliveryListSchema)
@errors(event_log, 400, 401, 403, 404, 409, 429)
def redeliver_event(body, event_id):
    """Send the event again to every endpoint it was for, or to `endpoint_id` only; the
    deliveries restart as pending with a fresh schedule."""
    deliveries = events.redeliver_event(
        event_id, livemode=current_caller().livemode, endpoint_id=body.get("endpoint_id")
    )
    return {"object": "list", "data": deliveries, "has_more": False}
