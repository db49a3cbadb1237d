"""Billing: plans, subscriptions, quota, usage metering, invoices and Stripe."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register what billing brings: its API, a subscription for each new tenant, the plan's
    limits for core and webhooks, Stripe following plan changes, settling invoices paid by
    M-Pesa, and the billing jobs."""
    # Imported when the app is built, not with the package: importing `billing` for its
    # models then loads no web code.
    from billing import jobs
    from billing.api import invoices, plans, stripe_callbacks, subscription
    from billing.invoices import settle_mpesa_payment
    from billing.stripe_subscriptions import follow_plan_change
    from billing.subscriptions import plan_limits, plan_rate_limit, subscribe_new_tenant
    from core.changes import plan_changed, tenant_created
    from core.events import EventType, subscribe
    from core.extensions import api
    from core.jobs import register_periodic
    from core.plan_limits import provide_plan_limits
    from core.ratelimit import use_tenant_limits

    for blueprint in (plans, subscription, invoices, stripe_callbacks):
        api.register_blueprint(blueprint)
    tenant_created.connect(subscribe_new_tenant)
    plan_changed.connect(follow_plan_change)
    use_tenant_limits(plan_rate_limit)
    provide_plan_limits(app, plan_limits)
    # The billing tenant's succeeded pushes pay the invoices they carry.
    subscribe(
        app,
        "billing.invoice_settlement",
        settle_mpesa_payment,
        types={EventType.PAYMENT_SUCCEEDED},
    )
    # Both are safe to run twice or concurrently; every 5 minutes bills a period promptly.
    register_periodic(app, jobs.close_billing_periods, queue="billing", interval=300, timeout=600)
    register_periodic(app, jobs.suspend_overdue_tenants, queue="billing", interval=300, timeout=300)
    # Read-only: reports counters that disagree with their usage ledger, fixes nothing.
    register_periodic(app, jobs.check_usage_drift, queue="billing", interval=600, timeout=600)
