"""Request and response schemas for webhook endpoints and events."""

from marshmallow import Schema, fields, validate

from core.api import ListQuerySchema, StrictBoolean, UtcDateTime, list_schema
from webhooks.endpoints import ALL_EVENTS, EVENT_TYPES
from webhooks.models import DeliveryStatus

MAX_GRACE_SECONDS = 24 * 3600


def _url_field(**kwargs) -> fields.Url:
    # No TLD required: whether a host is acceptable is webhooks.ssrf's call.
    return fields.Url(
        schemes={"http", "https"},
        require_tld=False,
        validate=validate.Length(max=2048),
        metadata={
            "description": "Where events are POSTed; live endpoints need https",
            "example": "https://example.co.ke/webhooks/lango",
        },
        **kwargs,
    )


def _events_field(**kwargs) -> fields.List:
    return fields.List(
        fields.String(validate=validate.OneOf((ALL_EVENTS, *EVENT_TYPES))),
        validate=validate.Length(min=1, max=len(EVENT_TYPES) + 1),
        metadata={
            "description": 'Event types to send; ["*"] for all (the default)',
            "example": ["payment.succeeded", "payment.failed"],
        },
        **kwargs,
    )


class WebhookEndpointUpdateSchema(Schema):
    url = _url_field()
    enabled_events = _events_field()
    description = fields.String(allow_none=True, validate=validate.Length(max=255))
    enabled = StrictBoolean()


class WebhookEndpointCreateSchema(WebhookEndpointUpdateSchema):
    url = _url_field(required=True)
    enabled_events = _events_field(load_default=lambda: [ALL_EVENTS])
    enabled = StrictBoolean(load_default=True)


class WebhookEndpointSchema(Schema):
    id = fields.String(metadata={"example": "we_01jd…"})
    object = fields.Constant("webhook_endpoint")
    url = fields.String()
    enabled_events = fields.List(fields.String())
    description = fields.String(allow_none=True)
    enabled = fields.Boolean()
    disabled_reason = fields.String(
        allow_none=True,
        metadata={"description": "gone (the receiver answered 410), failing (5 days), manual"},
    )
    livemode = fields.Boolean()
    created = UtcDateTime(attribute="created_at")
    updated = UtcDateTime(attribute="updated_at")


class IssuedWebhookEndpointSchema(WebhookEndpointSchema):
    secret = fields.String(
        metadata={
            "description": "The signing secret, shown in this answer only",
            "example": "whsec_…",
        }
    )


WebhookEndpointListSchema = list_schema(WebhookEndpointSchema, "WebhookEndpointList")


class DeletedWebhookEndpointSchema(Schema):
    id = fields.String()
    object = fields.Constant("webhook_endpoint")
    deleted = fields.Constant(True)


class WebhookSecretRotateSchema(Schema):
    grace_period_seconds = fields.Integer(
        load_default=MAX_GRACE_SECONDS,
        strict=True,
        validate=validate.Range(min=0, max=MAX_GRACE_SECONDS),
        metadata={"description": "How long the old secret keeps signing too (0 to 86400)"},
    )


class EventSchema(Schema):
    id = fields.String(metadata={"example": "evt_01jd…"})
    object = fields.Constant("event")
    type = fields.String(metadata={"example": "payment.succeeded"})
    created = UtcDateTime(attribute="created_at")
    livemode = fields.Boolean()
    data = fields.Dict(metadata={"description": '{"object": {…the object it is about…}}'})


class WebhookAttemptSchema(Schema):
    attempted_at = UtcDateTime()
    status_code = fields.Integer(allow_none=True)
    duration_ms = fields.Integer()
    response_excerpt = fields.String(allow_none=True)
    error = fields.String(allow_none=True)


class WebhookDeliverySchema(Schema):
    id = fields.String()
    endpoint_id = fields.String()
    status = fields.Enum(DeliveryStatus, by_value=True)
    attempts = fields.Integer()
    next_attempt_at = UtcDateTime(allow_none=True)
    delivered_at = UtcDateTime(allow_none=True)
    attempts_log = fields.List(fields.Nested(WebhookAttemptSchema))


class EventDetailSchema(EventSchema):
    deliveries = fields.List(fields.Nested(WebhookDeliverySchema))


EventListSchema = list_schema(EventSchema, "EventList")
WebhookDeliveryListSchema = list_schema(WebhookDeliverySchema, "WebhookDeliveryList")


class EventListQuerySchema(ListQuerySchema):
    type = fields.String(validate=validate.OneOf(EVENT_TYPES))
    delivery_status = fields.String(
        validate=validate.OneOf([status.value for status in DeliveryStatus]),
        metadata={"description": "Events with at least one delivery in this status"},
    )


class EventRedeliverSchema(Schema):
    endpoint_id = fields.String(
        metadata={"description": "Only this endpoint (default: every endpoint it was for)"}
    )
