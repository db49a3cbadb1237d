"""Marshmallow schemas for compliance's API: the audit log (fraud and KYC add theirs)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from compliance.audit import AuditAction
from core.api import ListQuerySchema, UtcDateTime, list_schema


class AuditActorSchema(Schema):
    type = fields.String(attribute="actor_type", metadata={"example": "api_key"}, dump_only=True)
    id = fields.String(attribute="actor_id", allow_none=True, dump_only=True)
    label = fields.String(
        attribute="actor_label",
        allow_none=True,
        dump_only=True,
        metadata={"description": "e.g. the API key's prefix"},
    )


class AuditTargetSchema(Schema):
    type = fields.String(attribute="target_type", dump_only=True)
    id = fields.String(attribute="target_id", allow_none=True, dump_only=True)


class AuditEntrySchema(Schema):
    id = fields.String(metadata={"example": "aud_01j..."})
    object = fields.Constant("audit_log_entry")
    occurred_at = UtcDateTime()
    action = fields.String(metadata={"example": AuditAction.API_KEY_CREATED.value})
    actor = fields.Function(lambda entry: AuditActorSchema().dump(entry))
    target = fields.Function(lambda entry: AuditTargetSchema().dump(entry))
    source_ip = fields.String(allow_none=True)
    request_id = fields.String(allow_none=True)
    diff = fields.Dict(allow_none=True, metadata={"description": "before/after, where it applies"})


AuditEntryListSchema = list_schema(AuditEntrySchema, "AuditEntryList")


class AuditLogQuerySchema(ListQuerySchema):
    action = fields.String(validate=validate.OneOf([action.value for action in AuditAction]))
    occurred_gte = fields.AwareDateTime(default_timezone=None)
    occurred_lte = fields.AwareDateTime(default_timezone=None)
