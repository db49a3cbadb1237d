"""Stripe behind one small interface: the only module that imports `stripe`.

Stripe's vocabulary stops here. Callers pass and get Lango's: plans, KES amounts, tenant ids,
`SubscriptionStatus`; Stripe's failures arrive as Lango's domain errors (`StripeUnavailable`
503, `PaymentMethodDeclined` 402, `PaymentMethodInvalid` 400, `StripeSignatureInvalid` 400).

Settings are read on every call (STRIPE_API_KEY, STRIPE_API_BASE, STRIPE_WEBHOOK_SECRET):
without STRIPE_API_KEY `configured()` is False and billing runs on Lango's own invoices.

Base fees use the legacy Plan API and overage uses invoice items, because that is what both
Stripe and localstripe (the fake Stripe the tests run) speak. localstripe ignores
Idempotency-Key, so callers also dedupe on Lango's side by storing the ids returned here.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import stripe
from flask import current_app

from billing.models import Plan, SubscriptionStatus
from core.errors import LangoError, ServiceUnavailable, ValidationFailed

logger = logging.getLogger("lango.billing.stripe")

# Stripe treats KES as a two-decimal currency: amounts are in cents (KES * 100).
CURRENCY = "kes"
_CENTS_PER_KES = 100
# Connect and read timeouts: a slow Stripe fails the request instead of hanging a worker.
_TIMEOUT_SECONDS = (5, 20)
# The library retries connection failures and 5xx, adding an idempotency key to each POST.
_NETWORK_RETRIES = 2

_STATUSES = {
    "trialing": SubscriptionStatus.TRIALING,
    "active": SubscriptionStatus.ACTIVE,
    "incomplete": SubscriptionStatus.INCOMPLETE,
    "past_due": SubscriptionStatus.PAST_DUE,
    "unpaid": SubscriptionStatus.PAST_DUE,
    "paused": SubscriptionStatus.PAST_DUE,
    "incomplete_expired": SubscriptionStatus.CANCELED,
    "canceled": SubscriptionStatus.CANCELED,
}


class StripeUnavailable(ServiceUnavailable):
    code = "stripe_unavailable"
    message = "Billing (Stripe) is unavailable right now; nothing was charged. Retry later."


class StripeFailed(LangoError):
    """Stripe refused a request Lango thought valid: a bug or a misconfiguration, logged."""

    status = 502
    type = "api_error"
    code = "stripe_error"
    message = "Billing (Stripe) refused the request; nothing was charged."


class PaymentMethodDeclined(LangoError):
    status = 402
    type = "card_error"
    code = "card_declined"
    message = "The card was declined; use another payment method."


class PaymentMethodInvalid(ValidationFailed):
    code = "payment_method_invalid"
    message = "No such payment method."


class StripeSignatureInvalid(LangoError):
    code = "signature_invalid"
    message = "The Stripe-Signature header does not match this payload."


def configured() -> bool:
    return bool(_settings().STRIPE_API_KEY)


def subscription_status(stripe_status: str) -> SubscriptionStatus:
    """Lango's status for one of Stripe's subscription statuses."""
    return _STATUSES.get(stripe_status, SubscriptionStatus.PAST_DUE)


def plan_id_for(plan: Plan) -> str:
    """The Stripe plan for a Lango plan at its current price. A Stripe plan's amount cannot
    change, so a new price gets a new id (and subscriptions move to it on their next change)."""
    return f"lango_{plan.code}_{plan.monthly_price}_{CURRENCY}"


def ensure_plan(plan: Plan) -> str:
    """The id of the Stripe plan billing `plan`'s monthly fee, creating it (and its product)
    when missing. Idempotent; safe under concurrent callers."""
    plan_id = plan_id_for(plan)
    if plan.stripe_plan_id == plan_id:
        return plan_id
    client = _client()
    with _translated_errors():
        if _exists(client.v1.plans.retrieve, plan_id):
            return plan_id
        product_id = f"lango_{plan.code}"
        if not _exists(client.v1.products.retrieve, product_id):
            _create_once(
                client.v1.products.create,
                {"id": product_id, "name": f"Lango {plan.name}", "metadata": {"plan": plan.code}},
            )
        _create_once(
            client.v1.plans.create,
            {
                "id": plan_id,
                "product": product_id,
                "amount": plan.monthly_price * _CENTS_PER_KES,
                "currency": CURRENCY,
                "interval": "month",
                "nickname": plan.name,
                "metadata": {"plan": plan.code},
            },
        )
    return plan_id


def ensure_customer(tenant_id: str, email: str, business_name: str) -> str:
    """Create the tenant's Stripe customer; returns its id (the caller stores it). Stripe
    dedupes a retry by the per-tenant idempotency key; localstripe does not."""
    with _translated_errors():
        customer = _client().v1.customers.create(
            params={"email": email, "name": business_name, "metadata": {"tenant_id": tenant_id}},
            options={"idempotency_key": f"lango-customer-{tenant_id}"},
        )
    return customer.id


def attach_payment_method(customer_id: str, payment_method_id: str) -> str:
    """Attach a payment method (a `pm_…` id made by Stripe.js) to the customer and make it the
    default for its invoices. Returns the attached method's id — a test id such as
    `pm_card_visa` becomes a new one. Raises PaymentMethodDeclined or PaymentMethodInvalid."""
    client = _client()
    with _translated_errors(payment_method=True):
        attached = client.v1.payment_methods.attach(
            payment_method_id, params={"customer": customer_id}
        )
        client.v1.customers.update(
            customer_id, params={"invoice_settings": {"default_payment_method": attached.id}}
        )
    return attached.id


def has_default_payment_method(customer_id: str) -> bool:
    with _translated_errors():
        customer = _client().v1.customers.retrieve(customer_id).to_dict()
    return bool((customer.get("invoice_settings") or {}).get("default_payment_method"))


def subscribe(
    customer_id: str, stripe_plan_id: str, payment_method_id: str | None = None
) -> tuple[str, SubscriptionStatus]:
    """Subscribe the customer to the plan, charging the first period now with the given (or
    else the default) payment method. A declined first payment still creates the
    subscription, `incomplete`. Returns its id and Lango status."""
    if payment_method_id is not None:
        attach_payment_method(customer_id, payment_method_id)
    with _translated_errors():
        subscription = _client().v1.subscriptions.create(
            params={
                "customer": customer_id,
                "items": [{"plan": stripe_plan_id}],
                "payment_behavior": "allow_incomplete",
            }
        )
    return subscription.id, subscription_status(subscription.status)


def change_plan(stripe_subscription_id: str, stripe_plan_id: str) -> SubscriptionStatus:
    """Move the subscription's one item to another plan (Stripe prorates); returns the status."""
    client = _client()
    with _translated_errors():
        current = client.v1.subscriptions.retrieve(stripe_subscription_id).to_dict()
        item_id = current["items"]["data"][0]["id"]
        updated = client.v1.subscriptions.update(
            stripe_subscription_id, params={"items": [{"id": item_id, "plan": stripe_plan_id}]}
        )
    return subscription_status(updated.status)


def cancel_subscription(stripe_subscription_id: str) -> None:
    """Cancel at once (a move to a free plan); an already canceled one is left as it is."""
    with _translated_errors():
        _client().v1.subscriptions.cancel(stripe_subscription_id)


def add_invoice_item(
    customer_id: str, amount_kes: int, description: str, idempotency_key: str
) -> str:
    """Add a charge to the customer's next invoice; returns the item id. Stripe dedupes on
    `idempotency_key`; localstripe does not, so the caller stores the id and never calls
    twice for the same key."""
    with _translated_errors():
        item = _client().v1.invoice_items.create(
            params={
                "customer": customer_id,
                "amount": amount_kes * _CENTS_PER_KES,
                "currency": CURRENCY,
                "description": description,
            },
            options={"idempotency_key": idempotency_key},
        )
    return item.id


def construct_event(payload: bytes, signature_header: str | None) -> dict[str, Any]:
    """Verify a webhook's Stripe-Signature (HMAC-SHA256 of `t.payload` with
    STRIPE_WEBHOOK_SECRET, timestamp within 5 minutes) and return the event as a dict.
    Raises StripeSignatureInvalid."""
    secret = _settings().STRIPE_WEBHOOK_SECRET
    if not secret:
        raise StripeSignatureInvalid("Stripe webhooks are not configured on this deployment.")
    try:
        event = stripe.Webhook.construct_event(payload, signature_header, secret)
    except stripe.SignatureVerificationError as error:
        raise StripeSignatureInvalid(f"Invalid Stripe-Signature: {error.user_message}") from None
    except ValueError:  # the signature matched but the body is not a JSON event
        raise StripeSignatureInvalid("The payload is not a Stripe event.") from None
    return event.to_dict()


def _settings():
    return current_app.extensions["lango.settings"]


def _client() -> stripe.StripeClient:
    settings = _settings()
    return _client_for(settings.STRIPE_API_KEY, settings.STRIPE_API_BASE)


@functools.lru_cache(maxsize=4)
def _client_for(api_key: str, api_base: str) -> stripe.StripeClient:
    return stripe.StripeClient(
        api_key,
        base_addresses={"api": api_base} if api_base else {},
        max_network_retries=_NETWORK_RETRIES,
        http_client=stripe.RequestsClient(timeout=_TIMEOUT_SECONDS),
    )


def _exists(retrieve, object_id: str) -> bool:
    try:
        retrieve(object_id)
    except stripe.InvalidRequestError as error:
        if error.http_status == 404:
            return False
        raise
    return True


def _create_once(create, params: dict) -> None:
    """Create an object with a fixed id; losing a race to another creator is fine."""
    try:
        create(params=params)
    except stripe.StripeError as error:
        # Stripe answers 400 resource_already_exists, localstripe 409.
        if error.http_status == 409 or error.code == "resource_already_exists":
            return
        raise


@contextmanager
def _translated_errors(*, payment_method: bool = False) -> Iterator[None]:
    try:
        yield
    except stripe.CardError as error:
        raise PaymentMethodDeclined(
            error.user_message or PaymentMethodDeclined.message, param="payment_method"
        ) from None
    except stripe.InvalidRequestError as error:
        if payment_method:
            raise PaymentMethodInvalid(
                error.user_message or PaymentMethodInvalid.message, param="payment_method"
            ) from None
        logger.error("stripe refused a request", extra={"stripe_error": str(error)})
        raise StripeFailed() from None
    except (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError) as error:
        logger.warning("stripe unavailable", extra={"stripe_error": str(error)})
        raise StripeUnavailable() from None
    except stripe.StripeError as error:  # authentication, permission: the operator's keys
        logger.error("stripe error", extra={"stripe_error": str(error)})
        raise StripeFailed() from None
