"""Billing: plans, subscriptions, quota, usage metering, invoices and Stripe."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register what billing brings: its API, a subscription for each new tenant, the plan's
    limits for core and webhooks, Stripe following plan changes, and the billing jobs."""
    # Imported when the app is built, not with the package: importing `billing` for its
    # models then loads no web code.
    from billing import jobs
    from billing.api import invoices, plans, stripe_callbacks, subscription
    from billing.stripe_subscriptions import follow_plan_change
    from billing.subscriptions import (
        current_subscription,
        plan_changed,
        plan_rate_limit,
        subscribe_new_tenant,
    )
    from core.extensions import api
    from core.jobs import register_periodic
    from core.plan_limits import PlanLimits, provide_plan_limits
    from core.ratelimit import use_tenant_limits
    from tenants.service import tenant_created

    for blueprint in (plans, subscription, invoices, stripe_callbacks):
        api.register_blueprint(blueprint)
    tenant_created.connect(subscribe_new_tenant)
    plan_changed.connect(follow_plan_change)
    use_tenant_limits(plan_rate_limit)
    provide_plan_limits(
        app,
        lambda tenant_id: PlanLimits(
            max_webhook_endpoints=current_subscription(tenant_id)[1].max_webhook_endpoints
        ),
    )
    # Both are safe to run twice or concurrently; every 5 minutes bills a period promptly.
    register_periodic(app, jobs.close_billing_periods, queue="billing", interval=300, timeout=600)
    register_periodic(
        app, jobs.suspend_overdue_tenants, queue="billing", interval=300, timeout=300
    )
    # Read-only: reports counters that disagree with their usage records, fixes nothing.
    register_periodic(app, jobs.check_usage_drift, queue="billing", interval=600, timeout=600)
