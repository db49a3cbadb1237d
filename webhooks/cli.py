"""Webhook commands. `queues` is registered on Lango's CLI as `lango queues`."""

from __future__ import annotations

from datetime import UTC, datetime

import click
from flask import current_app
from flask.cli import with_appcontext


@click.command("queues")
@with_appcontext
def queues() -> None:
    """Queue depths, scheduled and failed jobs, and the oldest due webhook delivery."""
    from staff.queues import oldest_due_delivery, queue_stats

    now = datetime.now(UTC)
    click.echo(f"{'queue':<10} {'queued':>8} {'started':>8} {'scheduled':>10} {'failed':>8}")
    for queue in queue_stats(current_app.extensions["lango.redis"]):
        click.echo(
            f"{queue.name:<10} {queue.queued:>8} {queue.started:>8} "
            f"{queue.scheduled:>10} {queue.failed:>8}"
        )
    oldest = oldest_due_delivery(now)
    if oldest is None:
        click.echo("oldest due delivery: none")
    else:
        age = (now - oldest.due_since).total_seconds()
        click.echo(
            f"oldest due delivery: {oldest.due_since.strftime('%Y-%m-%dT%H:%M:%SZ')} "
            f"({age:.0f} s overdue, tenant {oldest.tenant_id})"
        )
