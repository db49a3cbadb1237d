"""Webhook commands. `queues` is registered on Lango's CLI as `lango queues`."""

from __future__ import annotations

from datetime import UTC, datetime

import click
from flask import current_app
from flask.cli import with_appcontext

QUEUE_NAMES = ("webhooks", "default", "billing")


@click.command("queues")
@with_appcontext
def queues() -> None:
    """Queue depths, scheduled and failed jobs, and the oldest due webhook delivery."""
    from rq import Queue
    from sqlalchemy import select

    from core.extensions import db
    from core.tenancy import tenant_scope
    from tenants.models import Tenant
    from webhooks import service

    connection = current_app.extensions["lango.redis"]
    click.echo(f"{'queue':<10} {'queued':>8} {'started':>8} {'scheduled':>10} {'failed':>8}")
    for name in QUEUE_NAMES:
        queue = Queue(name, connection=connection)
        click.echo(
            f"{name:<10} {queue.count:>8} {queue.started_job_registry.count:>8} "
            f"{queue.scheduled_job_registry.count:>10} {queue.failed_job_registry.count:>8}"
        )
    now = datetime.now(UTC)
    tenant_ids = db.session.scalars(select(Tenant.id).order_by(Tenant.id)).all()
    db.session.rollback()
    oldest: tuple[datetime, str] | None = None
    for tenant_id in tenant_ids:
        with tenant_scope(tenant_id):
            due = service.oldest_due(now)
            db.session.rollback()
        if due is not None and (oldest is None or due < oldest[0]):
            oldest = (due, tenant_id)
    if oldest is None:
        click.echo("oldest due delivery: none")
    else:
        due, tenant_id = oldest
        age = (now - due).total_seconds()
        click.echo(
            f"oldest due delivery: {due.strftime('%Y-%m-%dT%H:%M:%SZ')} "
            f"({age:.0f} s overdue, tenant {tenant_id})"
        )
