"""Webhooks: endpoints, signed event delivery with retries and replay, SSRF-safe sending."""

from flask import Flask


def init_app(app: Flask) -> None:
    """Register what webhooks brings: its API, the fan-out of every event to the tenant's
    endpoints (an outbox subscriber), and the sweeper of lost deliveries."""
    # Imported when the app is built, not with the package: importing `webhooks` for its
    # models then loads no web code.
    from core.events import subscribe
    from core.extensions import api
    from core.jobs import register_periodic
    from core.plan_limits import plan_limits
    from core.tenancy import require_tenant
    from webhooks import jobs
    from webhooks.api import event_log, webhook_endpoints
    from webhooks.endpoints import use_endpoint_limits
    from webhooks.service import fan_out

    for blueprint in (webhook_endpoints, event_log):
        api.register_blueprint(blueprint)
    subscribe(app, "webhooks", lambda event: fan_out(event, tenant_id=require_tenant().tenant_id))
    use_endpoint_limits(lambda tenant_id: plan_limits(tenant_id).max_webhook_endpoints)
    # Re-enqueues deliveries whose job was lost (Redis flushed, worker killed): no loss.
    register_periodic(
        app, jobs.sweep_due_deliveries, queue="webhooks", interval=30, timeout=300
    )
