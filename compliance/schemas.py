"""Marshmallow schemas for compliance's API: the audit log (tenants' and staff's), fraud
rules and review cases, KYC (tenants' and staff's). Staff's endpoints (staff.compliance_api,
staff.kyc_api) use them too."""

from __future__ import annotations

from flask_smorest.fields import Upload
from marshmallow import Schema, fields, validate

from compliance import kyc
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


# --- KYC ----------------------------------------------------------------------------------


def _text(max_length: int, **metadata):
    return fields.String(
        required=True, validate=validate.Length(min=1, max=max_length), metadata=metadata
    )


class KycSubmissionCreateSchema(Schema):
    legal_name = _text(200, example="Duka Traders Limited")
    registration_number = _text(60, example="PVT-AAA1234")
    kra_pin = fields.String(
        required=True,
        validate=validate.Regexp(
            kyc.KRA_PIN.pattern,
            error="A KRA PIN is a letter, nine digits and a letter (e.g. P051234567X).",
        ),
        metadata={"example": "P051234567X"},
    )
    director_name = _text(200, example="Achieng Otieno")
    director_id_number = _text(40, example="12345678")
    contact_email = fields.Email(required=True, validate=validate.Length(max=254))
    contact_phone = fields.String(
        required=True,
        validate=validate.Regexp(r"^\+?[0-9]{9,15}$", error="A phone number, e.g. 254712345678."),
        metadata={"example": "254712345678"},
    )


class KycDocumentSchema(Schema):
    id = fields.String(metadata={"example": "kycdoc_01jd7ab0c3xyz…"})
    object = fields.Constant("kyc_document")
    filename = fields.String()
    content_type = fields.String()
    size = fields.Integer()
    sha256 = fields.String()
    uploaded = UtcDateTime(attribute="uploaded_at")


class KycSubmissionSchema(Schema):
    id = fields.String(metadata={"example": "kyc_01jd7ab0c3xyz…"})
    object = fields.Constant("kyc_submission")
    tenant_id = fields.String()
    status = fields.String(metadata={"example": "submitted"})
    rejection_reason = fields.String(
        allow_none=True, metadata={"description": "Why compliance rejected it, when it did"}
    )
    legal_name = fields.String()
    registration_number = fields.String()
    kra_pin = fields.String()
    director_name = fields.String()
    director_id_number = fields.String()
    contact_email = fields.String()
    contact_phone = fields.String()
    documents = fields.List(fields.Nested(KycDocumentSchema))
    submitted = UtcDateTime(attribute="submitted_at")
    reviewed = UtcDateTime(attribute="reviewed_at", allow_none=True)


class AdminKycSubmissionSchema(KycSubmissionSchema):
    reviewed_by = fields.String(allow_none=True)


class KycDocumentUploadSchema(Schema):
    file = Upload(required=True, metadata={"description": "A PDF, PNG or JPEG (up to 1 MB)"})


class KycQueueQuerySchema(ListQuerySchema):
    status = fields.String(validate=validate.OneOf([s.value for s in kyc.KycStatus]))


class KycRejectSchema(Schema):
    reason = fields.String(
        required=True,
        validate=validate.Length(min=1, max=2000),
        metadata={"description": "Shown to the tenant"},
    )


AdminKycSubmissionListSchema = list_schema(AdminKycSubmissionSchema, "AdminKycSubmissionList")
