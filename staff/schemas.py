"""Request and response schemas for staff login and the admin tenant console."""

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from core.api import (
    MAX_BIG_INTEGER,
    MAX_INTEGER,
    ListQuerySchema,
    StrictBoolean,
    UtcDateTime,
    list_schema,
)


class StaffLoginSchema(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(required=True, load_only=True, validate=validate.Length(max=256))


class StaffLoginStepSchema(Schema):
    step = fields.String(metadata={"example": "totp"})


class StaffSecondFactorSchema(Schema):
    code = fields.String(
        validate=validate.Length(max=12), metadata={"description": "The 6-digit TOTP code"}
    )
    recovery_code = fields.String(
        validate=validate.Length(max=40), metadata={"description": "A one-time recovery code"}
    )

    @validates_schema
    def one_factor(self, data, **kwargs):
        if ("code" in data) == ("recovery_code" in data):
            raise ValidationError("Send exactly one of code or recovery_code.")


class StaffUserSchema(Schema):
    id = fields.String()
    email = fields.String()
    name = fields.String()
    roles = fields.List(fields.String())
    last_login_at = UtcDateTime(allow_none=True)


class StaffSessionSchema(Schema):
    staff = fields.Nested(StaffUserSchema)
    csrf_token = fields.String(
        metadata={
            "description": "Send it as `X-CSRF-Token` on every POST/PUT/PATCH/DELETE under "
            "/v1/admin for this session."
        }
    )


class AdminTenantSchema(Schema):
    id = fields.String()
    business_name = fields.String()
    owner_email = fields.String(allow_none=True)
    status = fields.String()
    suspended_reason = fields.String(allow_none=True)
    suspension_note = fields.String(
        allow_none=True, metadata={"description": "The reason an admin gave when suspending"}
    )
    plan = fields.String()
    live_enabled = fields.Boolean()
    pushes_this_period = fields.Integer(metadata={"description": "Live pushes counted this period"})
    test_pushes_this_period = fields.Integer()
    created_at = UtcDateTime()


AdminTenantListSchema = list_schema(AdminTenantSchema, "AdminTenantList")


class AdminTenantQuerySchema(ListQuerySchema):
    status = fields.String(validate=validate.OneOf(["active", "suspended"]))
    plan = fields.String(validate=validate.Length(max=40))
    email = fields.String(
        validate=validate.Length(min=1, max=254),
        metadata={"description": "A fragment of any member's email"},
    )


class SuspendTenantSchema(Schema):
    reason = fields.String(
        required=True,
        validate=validate.Length(min=3, max=2000),
        metadata={"description": "Why; kept with the suspension"},
    )


class AdminPlanSchema(Schema):
    code = fields.String(metadata={"example": "growth"})
    object = fields.Constant("plan")
    name = fields.String()
    monthly_price = fields.Integer()
    included_pushes = fields.Integer()
    overage_price = fields.Integer(allow_none=True)
    rate_limit = fields.String(metadata={"example": "50 per second"})
    max_webhook_endpoints = fields.Integer()
    livemode_allowed = fields.Boolean()
    test_allowance = fields.Integer()
    position = fields.Integer()
    active = fields.Boolean()


class AdminPlanListSchema(Schema):
    object = fields.Constant("list")
    data = fields.List(fields.Nested(AdminPlanSchema))


# Each within its column: monthly_price is a bigint, the others integers.
_PRICE = validate.Range(min=0, max=MAX_BIG_INTEGER)
_COUNT = validate.Range(min=0, max=MAX_INTEGER)


class AdminPlanUpdateSchema(Schema):
    name = fields.String(validate=validate.Length(min=1, max=100))
    monthly_price = fields.Integer(strict=True, validate=_PRICE)
    included_pushes = fields.Integer(strict=True, validate=_COUNT)
    overage_price = fields.Integer(strict=True, allow_none=True, validate=_COUNT)
    rate_limit = fields.String(validate=validate.Length(min=1, max=40))
    max_webhook_endpoints = fields.Integer(strict=True, validate=_COUNT)
    livemode_allowed = StrictBoolean()
    test_allowance = fields.Integer(strict=True, validate=_COUNT)
    position = fields.Integer(strict=True, validate=_COUNT)


class AdminPlanCreateSchema(AdminPlanUpdateSchema):
    code = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=40), validate.Regexp(r"^[a-z0-9_-]+$")],
    )
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    monthly_price = fields.Integer(required=True, strict=True, validate=_PRICE)
    included_pushes = fields.Integer(required=True, strict=True, validate=_COUNT)
    overage_price = fields.Integer(required=True, strict=True, allow_none=True, validate=_COUNT)
    rate_limit = fields.String(required=True, validate=validate.Length(min=1, max=40))
    max_webhook_endpoints = fields.Integer(required=True, strict=True, validate=_COUNT)
    livemode_allowed = StrictBoolean(required=True)
    test_allowance = fields.Integer(required=True, strict=True, validate=_COUNT)
    position = fields.Integer(load_default=0, strict=True, validate=_COUNT)
