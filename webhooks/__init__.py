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
    from webhooks import jobs, service
    from webhooks.api import event_log, webhook_endpoints

    for blueprint in (webhook_endpoints, event_log):
        api.register_blueprint(blueprint)
    # Every type but a ping, which goes to the one endpoint it was sent to (send_ping).
    subscribe(app, service.SUBSCRIBER, service.fan_out, types=service.FANNED_OUT_TYPES)
    # Re-enqueues deliveries whose job was lost (Redis flushed, worker killed): no loss.
    register_periodic(app, jobs.sweep_due_deliveries, queue="webhooks", interval=30, timeout=300)
