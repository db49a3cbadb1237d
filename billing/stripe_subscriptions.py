"""A subscription's Stripe side, outbound: the tenant's Stripe customer, the Stripe
subscription that charges its plan's monthly fee, and following plan changes and new payment
methods there. Stripe's news comes back through the webhook (billing.stripe_webhooks).

Each function runs in the caller's transaction and calls Stripe before the caller commits:
when Stripe fails (StripeUnavailable 503, PaymentMethodDeclined 402, PaymentMethodInvalid
400) the caller rolls back and Lango has changed nothing. Without Stripe configured, or on a
free plan, nothing here calls Stripe.

A paid plan whose first payment has not succeeded — no payment method yet, or the card was
declined — leaves the subscription `incomplete`, and live mode stays off (billing.quota)
until a payment method that works is added (POST /v1/subscription with `payment_method`).
"""

from __future__ import annotations

from sqlalchemy import select

from billing import stripe_gateway
from billing.models import Plan, Subscription, SubscriptionStatus
from core.extensions import db
from tenants.models import Member, MemberRole, Tenant

# Stripe subscriptions that charge every period: a plan change moves them to the new plan.
_CHARGING = {SubscriptionStatus.ACTIVE, SubscriptionStatus.TRIALING, SubscriptionStatus.PAST_DUE}


def billed_by_stripe() -> bool:
    """Stripe charges paid plans here (else Lango invoices them up front, for M-Pesa)."""
    return stripe_gateway.configured()


def open_in_stripe(subscription: Subscription, plan: Plan, payment_method: str | None) -> None:
    """Sign-up: a new subscription on a paid plan gets its Stripe customer and, given a
    payment method, a Stripe subscription charging the first month now."""
    if not stripe_gateway.configured() or plan.monthly_price == 0:
        return
    subscription.status = SubscriptionStatus.INCOMPLETE
    _bill(subscription, plan, payment_method)


def use_payment_method(subscription: Subscription, plan: Plan, payment_method: str) -> None:
    """Make `payment_method` the one Stripe charges from now on; an `incomplete`
    subscription on a paid plan starts again with it (and is `active` if the charge works)."""
    if not stripe_gateway.configured():
        return
    _bill(subscription, plan, payment_method)


def follow_plan_change(
    subscription: Subscription, *, from_plan: Plan, to_plan: Plan, **_signal_data
) -> None:
    """Receiver of billing.subscriptions.plan_changed: Stripe bills the new plan from now (a
    move to a free plan cancels the Stripe subscription)."""
    if not stripe_gateway.configured():
        return
    if to_plan.monthly_price == 0:
        _stop_billing(subscription)
        return
    _bill(subscription, to_plan, None)


def _bill(subscription: Subscription, plan: Plan, payment_method: str | None) -> None:
    customer_id = subscription.stripe_customer_id or _create_customer(subscription)
    if payment_method is not None:
        stripe_gateway.attach_payment_method(customer_id, payment_method)
    if plan.monthly_price == 0:
        return  # kept on file for a later upgrade
    stripe_plan_id = stripe_gateway.ensure_plan(plan)
    if plan.stripe_plan_id != stripe_plan_id:
        plan.stripe_plan_id = stripe_plan_id  # once per plan and price
    canceled = subscription.status is SubscriptionStatus.CANCELED
    if subscription.stripe_subscription_id and subscription.status in _CHARGING:
        subscription.status = stripe_gateway.change_plan(
            subscription.stripe_subscription_id, stripe_plan_id
        )
        return
    first_time = subscription.stripe_subscription_id is None
    if payment_method is None and not (
        first_time and stripe_gateway.has_default_payment_method(customer_id)
    ):
        # Nothing (new) to charge: wait for a payment method.
        if not canceled:
            subscription.status = SubscriptionStatus.INCOMPLETE
        return
    if subscription.stripe_subscription_id and not canceled:
        # An incomplete one (its first charge declined) is replaced, not retried.
        stripe_gateway.cancel_subscription(subscription.stripe_subscription_id)
    subscription.stripe_subscription_id, subscription.status = stripe_gateway.subscribe(
        customer_id, stripe_plan_id
    )


def _stop_billing(subscription: Subscription) -> None:
    canceled = subscription.status is SubscriptionStatus.CANCELED
    if subscription.stripe_subscription_id and not canceled:
        stripe_gateway.cancel_subscription(subscription.stripe_subscription_id)
    subscription.stripe_subscription_id = None
    # A free plan owes nothing; invoices already unpaid are dunning's business.
    subscription.status = SubscriptionStatus.ACTIVE


def _create_customer(subscription: Subscription) -> str:
    business_name, email = db.session.execute(
        select(Tenant.business_name, Member.email)
        .join(Member, Member.tenant_id == Tenant.id)
        .where(Tenant.id == subscription.tenant_id, Member.role == MemberRole.OWNER)
        .order_by(Member.created_at)
        .limit(1)
    ).one()
    subscription.stripe_customer_id = stripe_gateway.ensure_customer(
        subscription.tenant_id, email, business_name
    )
    return subscription.stripe_customer_id
