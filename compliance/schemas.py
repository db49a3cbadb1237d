"""Marshmallow schemas for compliance's API: the audit log (tenants' and staff's), fraud
rules and review cases (KYC adds its own)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from compliance.audit import ActorType, AuditAction
from compliance.fraud import Outcome, ReviewStatus
from core.api import MAX_INTEGER, ListQuerySchema, StrictBoolean, UtcDateTime, list_schema


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


# --- /v1/admin: the compliance console ------------------------------------------------------


class AdminAuditEntrySchema(AuditEntrySchema):
    tenant_id = fields.String(allow_none=True)
    seq = fields.Integer()


AdminAuditEntryListSchema = list_schema(AdminAuditEntrySchema, "AdminAuditEntryList")


class AdminAuditExportQuerySchema(Schema):
    tenant_id = fields.String()
    actor_type = fields.String(validate=validate.OneOf([actor.value for actor in ActorType]))
    actor_id = fields.String()
    action = fields.String(validate=validate.OneOf([action.value for action in AuditAction]))
    occurred_gte = fields.AwareDateTime(default_timezone=None)
    occurred_lte = fields.AwareDateTime(default_timezone=None)


class AdminAuditQuerySchema(ListQuerySchema, AdminAuditExportQuerySchema):
    pass


_OUTCOMES = validate.OneOf([outcome.value for outcome in Outcome])


class FraudRuleSchema(Schema):
    id = fields.String(dump_only=True, metadata={"example": "frule_01j..."})
    object = fields.Constant("fraud_rule")
    position = fields.Integer(metadata={"description": "Rules match in ascending position"})
    expression = fields.String(metadata={"example": "phone_pushes_10m >= 5"})
    outcome = fields.String(metadata={"example": "block"})
    description = fields.String()
    enabled = fields.Boolean()
    created_at = UtcDateTime()
    updated_at = UtcDateTime()


class FraudRuleListSchema(Schema):
    object = fields.Constant("list")
    data = fields.List(fields.Nested(FraudRuleSchema))


class FraudRuleCreateSchema(Schema):
    expression = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    outcome = fields.String(required=True, validate=_OUTCOMES)
    description = fields.String(load_default="", validate=validate.Length(max=255))
    position = fields.Integer(
        required=True, strict=True, validate=validate.Range(min=0, max=MAX_INTEGER)
    )


class FraudRuleUpdateSchema(Schema):
    expression = fields.String(validate=validate.Length(min=1, max=2000))
    outcome = fields.String(validate=_OUTCOMES)
    description = fields.String(validate=validate.Length(max=255))
    position = fields.Integer(strict=True, validate=validate.Range(min=0, max=MAX_INTEGER))
    enabled = StrictBoolean()


class FraudCaseSchema(Schema):
    id = fields.String(metadata={"example": "frc_01j..."})
    object = fields.Constant("fraud_review_case")
    tenant_id = fields.String()
    stk_push_id = fields.String()
    rule_id = fields.String()
    status = fields.String(metadata={"example": "open"})
    notes = fields.String()
    phone = fields.String(
        allow_none=True,
        metadata={"description": "The push's phone, masked; reveal-phone shows it (audited)"},
    )
    created_at = UtcDateTime()


FraudCaseListSchema = list_schema(FraudCaseSchema, "FraudCaseList")


class FraudCaseQuerySchema(ListQuerySchema):
    status = fields.String(validate=validate.OneOf([status.value for status in ReviewStatus]))


class ResolveFraudCaseSchema(Schema):
    resolution = fields.String(
        required=True,
        validate=validate.OneOf([ReviewStatus.LEGITIMATE.value, ReviewStatus.FRAUDULENT.value]),
    )
    note = fields.String(load_default="", validate=validate.Length(max=2000))
    block_phone = StrictBoolean(
        load_default=False,
        metadata={"description": "With `fraudulent`: add the phone to the tenant's blocklist"},
    )
    suspend_tenant = StrictBoolean(
        load_default=False,
        metadata={"description": "With `fraudulent`: suspend the tenant (reason 'compliance')"},
    )


class AssignFraudCaseSchema(Schema):
    staff_id = fields.String(
        validate=validate.Length(max=40),
        metadata={"description": "The assignee; the signed-in staff user when left out"},
    )


class RevealedPhoneSchema(Schema):
    case_id = fields.String()
    stk_push_id = fields.String()
    phone = fields.String(metadata={"example": "254708374149"})
