"""Request and response schemas for STK pushes."""

import json
from datetime import UTC

from marshmallow import (
    EXCLUDE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates,
    validates_schema,
)

from core.api import ListQuerySchema, UtcDateTime, list_schema
from core.phone import PhoneNumber
from payments.daraja import result_code_text

MAX_AMOUNT = 250_000  # M-Pesa's per-transaction limit for customers (KES)
MAX_METADATA_BYTES = 2048
STATUSES = ("pending", "succeeded", "failed", "cancelled", "expired")


class StkPushCreateSchema(Schema):
    phone_number = PhoneNumber(required=True, metadata={"example": "0708374149"})
    amount = fields.Integer(
        required=True,
        strict=True,
        validate=validate.Range(min=1, max=MAX_AMOUNT),
        metadata={"description": "Whole Kenya shillings, 1 to 250,000", "example": 100},
    )
    account_reference = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=12), validate.Regexp(r"^[A-Za-z0-9 ._-]+$")],
        metadata={"description": "Shown to the customer (max 12)", "example": "INV0001"},
    )
    description = fields.String(
        load_default="Payment",
        validate=[validate.Length(min=1, max=13), validate.Regexp(r"^[A-Za-z0-9 ._-]+$")],
        metadata={"description": "Max 13 characters", "example": "Order 1001"},
    )
    metadata = fields.Dict(
        keys=fields.String(validate=validate.Length(max=40)),
        load_default=dict,
        metadata={"description": "Your own key/values (up to 2 KB as JSON)"},
    )

    @validates("metadata")
    def metadata_is_small(self, value, **kwargs):
        if len(json.dumps(value)) > MAX_METADATA_BYTES:
            raise ValidationError(f"Metadata must be at most {MAX_METADATA_BYTES} bytes as JSON.")


class StkPushSchema(Schema):
    id = fields.String(metadata={"example": "stk_01jd…"})
    object = fields.Constant("stk_push")
    status = fields.Function(lambda push: push.status.value, metadata={"enum": list(STATUSES)})
    livemode = fields.Boolean()
    phone_number = fields.String()
    amount = fields.Integer()
    account_reference = fields.String()
    description = fields.String()
    metadata = fields.Dict(attribute="metadata_")
    mpesa_receipt_number = fields.String(allow_none=True)
    result_code = fields.String(allow_none=True)
    result_description = fields.String(allow_none=True)
    checkout_request_id = fields.String(allow_none=True)
    transaction_date = UtcDateTime(allow_none=True)
    flagged_reason = fields.String(
        allow_none=True,
        metadata={
            "description": "Why Lango held a report from M-Pesa instead of applying it (a "
            "callback whose amount or phone disagreed, or a success reported after M-Pesa "
            "said the push failed or was cancelled); null when nothing was held"
        },
    )
    expired_at = UtcDateTime(
        allow_none=True,
        metadata={
            "description": "When Lango expired the push for want of an outcome; kept if "
            "M-Pesa then reports it paid (status succeeded: it succeeded late)"
        },
    )
    created = UtcDateTime(attribute="created_at")
    updated = UtcDateTime(attribute="updated_at")


class StkPushFilterSchema(Schema):
    status = fields.String(validate=validate.OneOf(STATUSES))
    phone_number = PhoneNumber()
    created_gte = fields.AwareDateTime(
        data_key="created[gte]",
        default_timezone=UTC,
        metadata={"description": "Created at or after (ISO 8601; UTC if no offset)"},
    )
    created_lte = fields.AwareDateTime(
        data_key="created[lte]",
        default_timezone=UTC,
        metadata={"description": "Created at or before (ISO 8601; UTC if no offset)"},
    )


class StkPushListQuerySchema(StkPushFilterSchema, ListQuerySchema):
    pass


StkPushListSchema = list_schema(StkPushSchema, "StkPushList")


class CallbackAckSchema(Schema):
    ResultCode = fields.Integer(metadata={"example": 0})
    ResultDesc = fields.String(metadata={"example": "Accepted"})


# Daraja's STK callback (daraja.md §3.1), checked strictly before anything is applied; fields
# Daraja may add later are ignored.
class DarajaResultCode(fields.Field):
    """A JSON number (0, 1032) or a code string ("1032", "SFC_IC0003"); loaded as text."""

    def _deserialize(self, value, attr, data, **kwargs):
        code = result_code_text(value)
        if code is None:
            raise ValidationError("Not a Daraja ResultCode.")
        return code


class CallbackItemSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    Name = fields.String(required=True)
    Value = fields.Raw(allow_none=True)  # absent on Balance


class CallbackMetadataSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    Item = fields.List(fields.Nested(CallbackItemSchema), required=True)


class StkCallbackSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    MerchantRequestID = fields.String(required=True)
    CheckoutRequestID = fields.String(required=True)
    ResultCode = DarajaResultCode(required=True)
    ResultDesc = fields.String(required=True)
    CallbackMetadata = fields.Nested(CallbackMetadataSchema)

    @validates_schema
    def success_has_metadata(self, data, **kwargs):
        if data.get("ResultCode") == "0" and "CallbackMetadata" not in data:
            raise ValidationError("A success carries CallbackMetadata.", "CallbackMetadata")


class StkCallbackBodySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    stkCallback = fields.Nested(StkCallbackSchema, required=True)


class DarajaCallbackSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    Body = fields.Nested(StkCallbackBodySchema, required=True)


class MpesaCredentialsSchema(Schema):
    """Live Daraja credentials. Secrets are write-only: answers show them masked."""

    shortcode = fields.String(
        required=True,
        validate=validate.Regexp(r"^\d{5,7}$", error="Must be 5 to 7 digits."),
        metadata={"description": "Paybill number, or the store/HO number for a till"},
    )
    kind = fields.String(required=True, validate=validate.OneOf(("paybill", "till")))
    till_number = fields.String(
        validate=validate.Regexp(r"^\d{5,7}$", error="Must be 5 to 7 digits."),
        metadata={"description": "Required for kind=till (Buy Goods)"},
    )
    consumer_key = fields.String(
        required=True, load_only=True, validate=validate.Length(min=8, max=200)
    )
    consumer_secret = fields.String(
        required=True, load_only=True, validate=validate.Length(min=8, max=200)
    )
    passkey = fields.String(required=True, load_only=True, validate=validate.Length(min=8, max=200))

    @validates_schema
    def till_needs_a_number(self, data, **kwargs):
        if data.get("kind") == "till" and not data.get("till_number"):
            raise ValidationError("A till needs its till number.", "till_number")


class MpesaCredentialsViewSchema(Schema):
    object = fields.Constant("mpesa_credentials")
    shortcode = fields.String()
    kind = fields.String()
    till_number = fields.String(allow_none=True)
    consumer_key = fields.Function(lambda row: "****" + row.consumer_key_last4)
    consumer_secret = fields.Constant("********")
    passkey = fields.Constant("********")
    updated = UtcDateTime(attribute="updated_at")
