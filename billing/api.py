"""HTTP endpoints for billing. Parse, call the service, serialise.

Sections: plans, subscription and usage; invoices; the Stripe webhook.
"""

from __future__ import annotations

from flask import request
from flask.views import MethodView

from billing import invoices as invoice_service
from billing import stripe_webhooks
from billing import subscriptions as subscription_service
from billing import usage as usage_service
from billing.dunning import SUSPENSION_REASON
from billing.schemas import (
    InvoiceListSchema,
    InvoicePaySchema,
    InvoiceSchema,
    PlanListSchema,
    StripeEventReceiptSchema,
    SubscriptionSchema,
    SubscriptionUpdateSchema,
    UsageSchema,
)
from core.api import Blueprint, ListQuerySchema, errors
from core.errors import PermissionDenied
from core.extensions import limiter
from core.idempotency import idempotent
from tenants.auth import current_caller

plans = Blueprint("plans", __name__, description="The plan catalog", authenticated=False)
subscription = Blueprint("subscription", __name__, description="Your plan, usage and billing")
invoices = Blueprint("invoices", __name__, description="What each period cost, and paying it")
stripe_callbacks = Blueprint(
    "stripe_callbacks", __name__, description="Where Stripe posts events", authenticated=False
)
limiter.exempt(stripe_callbacks)

# --- plans, subscription and usage -----------------------------------------------------


@plans.get("/v1/plans")
@plans.doc(security=[])
@plans.response(200, PlanListSchema)
@errors(plans, 429)
def list_plans():
    """The plans on offer, in catalog order (public: no API key needed).

    A plan sets the monthly price (KES), the live pushes it includes, the price of each push
    beyond them (`overage_price`; null makes the included pushes a hard cap), the API rate
    limit (per tenant, all its keys together), whether live mode is allowed, and the monthly
    test-mode allowance.
    """
    return {"object": "list", "data": subscription_service.list_plans(), "has_more": False}


@subscription.route("/v1/subscription")
class SubscriptionResource(MethodView):
    @subscription.response(200, SubscriptionSchema)
    @errors(subscription, 401, 403, 429)
    def get(self):
        """Your plan, the current billing period and any plan change waiting for its end."""
        return subscription_service.get_subscription(current_caller().tenant_id)

    @subscription.arguments(SubscriptionUpdateSchema)
    @idempotent
    @subscription.response(200, SubscriptionSchema)
    @errors(subscription, 400, 401, 402, 403, 409, 429, 503)
    def post(self, body):
        """Change plan, the overage spending cap, or cancellation at period end.

        A dearer plan is paid before it applies. Where Stripe billing is on, Stripe charges
        the card and the plan applies at once (this period's usage so far counts against its
        larger allowance; without a working card the subscription is `incomplete` and live
        mode stays off). Otherwise an `upgrade` invoice for its first month is issued, shown
        as `awaiting_payment_plan` and `awaiting_payment_invoice`; the current plan stays in
        force until that invoice is paid by M-Pesa (POST /v1/invoices/{id}/pay), which starts
        the new plan and its period. Any other plan is a downgrade, shown as `pending_plan`
        and applied when the period ends. The latest choice wins: choosing the current plan
        cancels a pending downgrade and voids an awaited upgrade's invoice (409
        `upgrade_payment_in_progress` while its M-Pesa prompt is pending). An unknown or
        retired plan is a 400 (param `plan`). Once live mode is on, only a live key may
        change the subscription.
        """
        caller = current_caller()
        if caller.live_enabled and not caller.livemode:
            raise PermissionDenied(
                "Live mode is on: change the subscription with a live key.", code="mode_mismatch"
            )
        return subscription_service.update_subscription(
            caller.tenant_id, actor_key_id=caller.key_id, **body
        )


@subscription.get("/v1/usage")
@subscription.response(200, UsageSchema)
@errors(subscription, 401, 403, 429)
def get_usage():
    """This period's usage: live pushes counted against the plan (`used`, `included`,
    `overage`), the charge so far (`projected_charge`, KES), test-mode pushes, and a per-day
    series (UTC days)."""
    return usage_service.current_usage(current_caller().tenant_id)


# --- invoices --------------------------------------------------------------------------

# A tenant suspended for non-payment keeps these endpoints (tenants.auth admits it here only),
# or it could never pay its way back.
invoices.admits_suspended_for = (SUSPENSION_REASON,)


@invoices.route("/v1/invoices")
class Invoices(MethodView):
    @invoices.arguments(ListQuerySchema, location="query")
    @invoices.response(200, InvoiceListSchema)
    @errors(invoices, 400, 401, 403)
    def get(self, query):
        """Your invoices, newest first (cursor pagination): one per closed billing period
        (`kind` `period`), and one per upgrade paid up front (`kind` `upgrade`)."""
        return invoice_service.list_invoices(current_caller().tenant_id, **query)


@invoices.get("/v1/invoices/<string:invoice_id>")
@invoices.response(200, InvoiceSchema)
@errors(invoices, 401, 403, 404)
def get_invoice(invoice_id):
    """One invoice, with its lines."""
    return invoice_service.get_invoice(current_caller().tenant_id, invoice_id)


@invoices.post("/v1/invoices/<string:invoice_id>/pay")
@invoices.arguments(InvoicePaySchema)
@idempotent
@invoices.response(202, InvoiceSchema)
@errors(invoices, 400, 401, 403, 404, 409, 429, 502, 503)
def pay_invoice(body, invoice_id):
    """Pay an open invoice by M-Pesa: sends a prompt for its total to the phone, from Lango's
    own shortcode. The invoice turns `paid` when the customer completes it; a failed or
    cancelled prompt leaves it `open` to try again. Works while the account is suspended
    for billing. Totals above 250,000 KES (M-Pesa's limit per payment) are refused (400).
    """
    return invoice_service.pay_invoice(current_caller().tenant_id, invoice_id, body["phone_number"])


# --- Stripe webhook --------------------------------------------------------------------


@stripe_callbacks.post("/callbacks/stripe")
@stripe_callbacks.doc(security=[])
@stripe_callbacks.response(200, StripeEventReceiptSchema)
@errors(stripe_callbacks, 400)
def receive_stripe_event():
    """Where Stripe posts billing events (configure this URL and its signing secret,
    STRIPE_WEBHOOK_SECRET, in Stripe). Verified by `Stripe-Signature`; each event id is
    applied once, and a redelivery answers 200 with `duplicate` true."""
    return stripe_webhooks.receive_event(
        request.get_data(cache=False), request.headers.get("Stripe-Signature")
    )
