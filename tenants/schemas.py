"""Request and response schemas for signup, the tenant and API keys."""

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from core.api import UtcDateTime, list_schema

# A few of the passwords every credential-stuffing list starts with.
_COMMON_PASSWORDS = {
    "password123",
    "password1234",
    "1234567890",
    "12345678910",
    "qwertyuiop",
    "123456789a",
    "iloveyou123",
    "letmein1234",
    "welcome1234",
    "passw0rd123",
    "administrator",
}


class SignupRequestSchema(Schema):
    business_name = fields.String(
        required=True,
        validate=validate.Length(min=2, max=100),
        metadata={"example": "Mama Mboga Ltd"},
    )
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(
        required=True,
        load_only=True,
        validate=validate.Length(min=10, max=128),
        metadata={"description": "At least 10 characters"},
    )
    plan = fields.String(
        validate=validate.Length(min=1, max=40),
        metadata={"description": "Plan code (GET /v1/plans); defaults to `sandbox`"},
    )
    payment_method = fields.String(
        validate=validate.Regexp(r"^pm_[A-Za-z0-9_]{1,250}$", error="Expected a pm_… id."),
        metadata={
            "description": "A Stripe payment method id (pm_…, made by Stripe.js) paying a "
            "paid plan, where Stripe billing is on. Without one, or if its first charge is "
            "declined, the subscription is `incomplete` and live mode stays off.",
            "example": "pm_card_visa",
        },
    )

    @validates_schema
    def password_is_not_weak(self, data, **kwargs):
        password = data.get("password")
        if not password:
            return
        lowered = password.lower()
        email = (data.get("email") or "").lower()
        if lowered in _COMMON_PASSWORDS or len(set(password)) < 4:
            raise ValidationError("This password is too easy to guess.", "password")
        if email and (lowered == email or lowered == email.split("@")[0]):
            raise ValidationError("The password must not be your email address.", "password")
        if not data.get("business_name", "").strip():
            raise ValidationError("Business name must not be blank.", "business_name")


class TenantSchema(Schema):
    id = fields.String(metadata={"example": "ten_01jd7ab0c3xyz…"})
    object = fields.Constant("tenant")
    business_name = fields.String()
    status = fields.Function(lambda tenant: tenant.status.value, metadata={"example": "active"})
    plan = fields.String()
    live_enabled = fields.Boolean(
        metadata={"description": "Whether live mode is enabled (after compliance approval)"}
    )
    created = UtcDateTime(attribute="created_at")


class CurrentTenantSchema(Schema):
    tenant = fields.Nested(TenantSchema)
    livemode = fields.Boolean(metadata={"description": "The calling key's mode"})


class ApiKeySchema(Schema):
    id = fields.String(metadata={"example": "key_01jd7ab0c3xyz…"})
    object = fields.Constant("api_key")
    name = fields.String()
    livemode = fields.Boolean()
    prefix = fields.String(metadata={"example": "sk_test_4eC3"})
    last4 = fields.String()
    created = UtcDateTime(attribute="created_at")
    last_used = UtcDateTime(attribute="last_used_at", allow_none=True)
    expires_at = UtcDateTime(allow_none=True)


class IssuedApiKeySchema(ApiKeySchema):
    secret = fields.String(
        metadata={"description": "The secret key. Shown only in this response; store it now."}
    )


class SignupResponseSchema(Schema):
    tenant = fields.Nested(TenantSchema)
    api_key = fields.Nested(IssuedApiKeySchema)


class ApiKeyCreateSchema(Schema):
    mode = fields.String(required=True, validate=validate.OneOf(("test", "live")))
    name = fields.String(load_default="API key", validate=validate.Length(min=1, max=100))


class ApiKeyRollSchema(Schema):
    grace_period_seconds = fields.Integer(
        load_default=0,
        strict=True,
        validate=validate.Range(min=0, max=86400),
        metadata={"description": "How long the old key keeps working (0 to 86400 s)"},
    )


ApiKeyListSchema = list_schema(ApiKeySchema, "ApiKeyList")
