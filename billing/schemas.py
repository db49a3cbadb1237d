"""Request and response schemas for billing."""

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from core.api import MAX_BIG_INTEGER, StrictBoolean, UtcDateTime, list_schema
from core.phone import PhoneNumber

# --- plans, subscription and usage -----------------------------------------------------

SUBSCRIPTION_STATUSES = ("trialing", "active", "incomplete", "past_due", "canceled")


class PlanSchema(Schema):
    object = fields.Constant("plan")
    code = fields.String(metadata={"example": "starter"})
    name = fields.String(metadata={"example": "Starter"})
    monthly_price = fields.Integer(metadata={"description": "KES per month", "example": 2500})
    included_pushes = fields.Integer(
        metadata={"description": "Live pushes included each month", "example": 1000}
    )
    overage_price = fields.Integer(
        allow_none=True,
        metadata={
            "description": "KES per live push beyond the included ones; null: the included "
            "pushes are a hard cap (402 quota_exceeded beyond them)",
            "example": 3,
        },
    )
    rate_limit = fields.String(
        metadata={
            "description": "API requests allowed per tenant, all its keys together",
            "example": "50 per second",
        }
    )
    livemode_allowed = fields.Boolean()
    max_webhook_endpoints = fields.Integer()
    test_allowance = fields.Integer(
        metadata={"description": "Test-mode pushes per month (never billed; a hard cap)"}
    )


PlanListSchema = list_schema(PlanSchema, "PlanList")


class SubscriptionSchema(Schema):
    object = fields.Constant("subscription")
    id = fields.String(metadata={"example": "sub_01jd…"})
    plan = fields.Nested(PlanSchema)
    status = fields.Function(
        lambda subscription: subscription.status.value,
        metadata={"enum": list(SUBSCRIPTION_STATUSES)},
    )
    current_period_start = UtcDateTime()
    current_period_end = UtcDateTime()
    cancel_at_period_end = fields.Boolean()
    pending_plan = fields.String(
        attribute="pending_plan_code",
        allow_none=True,
        metadata={"description": "The plan a downgrade switches to at period end"},
    )
    awaiting_payment_plan = fields.String(
        attribute="awaiting_plan_code",
        allow_none=True,
        metadata={
            "description": "The dearer plan chosen without Stripe billing: it starts when its "
            "upgrade invoice (`awaiting_payment_invoice`) is paid (POST "
            "/v1/invoices/{id}/pay); until then the current plan applies",
            "example": "growth",
        },
    )
    awaiting_payment_invoice = fields.String(
        attribute="awaiting_invoice_id",
        allow_none=True,
        metadata={"description": "The open upgrade invoice of `awaiting_payment_plan`"},
    )
    overage_spending_cap = fields.Integer(
        allow_none=True,
        metadata={"description": "Most overage may cost per period (KES); null: no cap"},
    )


class SubscriptionUpdateSchema(Schema):
    plan = fields.String(
        validate=validate.Length(min=1, max=40),
        metadata={
            "description": "A dearer plan applies once paid (at once when Stripe charges a "
            "card; else when its upgrade invoice is paid by M-Pesa); any other at period end; "
            "the current plan cancels a pending or awaited change",
            "example": "growth",
        },
    )
    overage_spending_cap = fields.Integer(
        strict=True,
        allow_none=True,
        validate=validate.Range(min=0, max=MAX_BIG_INTEGER),
        metadata={"description": "KES per period; null removes the cap"},
    )
    cancel_at_period_end = StrictBoolean()
    payment_method = fields.String(
        validate=validate.Regexp(r"^pm_[A-Za-z0-9_]{1,250}$", error="Expected a pm_… id."),
        metadata={
            "description": "A Stripe payment method id (pm_…, made by Stripe.js) to charge "
            "from now on, where Stripe billing is on; an `incomplete` subscription is "
            "started again with it",
            "example": "pm_card_visa",
        },
    )

    @validates_schema
    def something_to_change(self, data, **kwargs):
        if not data:
            raise ValidationError(
                "Give plan, overage_spending_cap, cancel_at_period_end or payment_method to change."
            )


class UsageDaySchema(Schema):
    date = fields.Date(metadata={"example": "2026-11-21"})
    live = fields.Integer()
    test = fields.Integer()


class UsageSchema(Schema):
    object = fields.Constant("usage")
    plan = fields.String(metadata={"example": "starter"})
    period_start = UtcDateTime()
    period_end = UtcDateTime()
    used = fields.Integer(metadata={"description": "Live pushes counted this period"})
    included = fields.Integer(metadata={"description": "Live pushes the plan includes"})
    overage = fields.Integer(metadata={"description": "Live pushes billed beyond the included"})
    projected_charge = fields.Integer(
        metadata={
            "description": "KES the period's invoice will bill at its close: the monthly price "
            "(unless an upgrade invoice paid it in advance) plus overage so far"
        }
    )
    test_mode_used = fields.Integer()
    test_allowance = fields.Integer()
    daily = fields.List(
        fields.Nested(UsageDaySchema),
        metadata={"description": "Counted pushes per UTC day, from the period's start to today"},
    )


# --- invoices --------------------------------------------------------------------------


class InvoiceLineSchema(Schema):
    type = fields.String(metadata={"enum": ["base_fee", "overage"]})
    description = fields.String()
    quantity = fields.Integer()
    unit_amount = fields.Integer(metadata={"description": "KES"})
    amount = fields.Integer(metadata={"description": "KES"})


class InvoiceSchema(Schema):
    object = fields.Constant("invoice")
    id = fields.String(metadata={"example": "inv_01jd…"})
    kind = fields.Function(
        lambda invoice: invoice.kind.value,
        metadata={
            "enum": ["period", "upgrade"],
            "description": "`period`: what a closed billing period cost. `upgrade`: a dearer "
            "plan's first month, paid up front; paying it starts that plan and its period "
            "(whose own `period` invoice then bills only overage). Voided when another plan "
            "is chosen first.",
        },
    )
    status = fields.Function(
        lambda invoice: invoice.status.value, metadata={"enum": ["open", "paid", "void"]}
    )
    period_start = UtcDateTime()
    period_end = UtcDateTime()
    plan = fields.String(attribute="plan_code", metadata={"example": "growth"})
    base_fee = fields.Integer(
        metadata={
            "description": "The plan's fee for the period, KES: its monthly price; pro rata "
            "for a period cut short by a paid upgrade; 0 when an upgrade invoice paid it"
        }
    )
    included_pushes = fields.Integer()
    used_pushes = fields.Integer(metadata={"description": "Live pushes counted in the period"})
    overage_pushes = fields.Integer()
    overage_amount = fields.Integer(metadata={"description": "KES"})
    total = fields.Integer(metadata={"description": "KES"})
    currency = fields.Constant("KES")
    lines = fields.List(fields.Nested(InvoiceLineSchema))
    due_at = UtcDateTime()
    paid_at = UtcDateTime(allow_none=True)
    stripe_invoice_id = fields.String(allow_none=True)
    mpesa_stk_push_id = fields.String(
        allow_none=True,
        metadata={"description": "The latest M-Pesa push paying this invoice, if any"},
    )


InvoiceListSchema = list_schema(InvoiceSchema, "InvoiceList")


class InvoicePaySchema(Schema):
    phone_number = PhoneNumber(
        required=True,
        metadata={"description": "The M-Pesa phone that pays", "example": "0708374149"},
    )


# --- Stripe webhook --------------------------------------------------------------------


class StripeEventReceiptSchema(Schema):
    id = fields.String(metadata={"example": "evt_1Q…"})
    type = fields.String(metadata={"example": "invoice.payment_succeeded"})
    status = fields.String(
        metadata={"enum": ["applied", "ignored", "failed"], "description": "How it was handled"}
    )
    duplicate = fields.Boolean(
        metadata={"description": "True when this event id was received before (not re-applied)"}
    )
