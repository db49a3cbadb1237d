"""`lango staff …` (staff accounts) and `lango queues` (queue, worker and outbox health),
registered on Lango's CLI by staff's `init_app`. Each command is one unit of work
(core.commands): what it writes commits when it returns."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import click
import pyotp
import segno
from flask import current_app
from sqlalchemy import select

from core.commands import command, group
from core.crypto import decrypt
from core.errors import LangoError
from core.extensions import db
from core.outbox import subscriber_lag
from staff.demo import ensure_demo_staff
from staff.models import StaffUser
from staff.queues import oldest_due_delivery, queue_stats
from staff.service import create_staff

staff = group("staff", help="Platform staff accounts (admin, compliance).")


@staff.command("create")
@click.argument("email")
@click.option("--name", required=True, help="The person's name.")
@click.option(
    "--role",
    "roles",
    multiple=True,
    required=True,
    type=click.Choice(["admin", "compliance"]),
    help="Repeat for several roles.",
)
@click.option(
    "--password",
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    envvar="LANGO_STAFF_PASSWORD",
    help="Prompted for when not given (or LANGO_STAFF_PASSWORD).",
)
def create(email: str, name: str, roles: tuple[str, ...], password: str) -> None:
    """Create a staff user; print the TOTP provisioning URI (and a QR code when a QR
    library is installed) and 10 one-time recovery codes. Both are shown only now."""
    try:
        provisioned = create_staff(email, name, password, list(roles))
    except LangoError as error:
        raise click.ClickException(error.message) from None
    click.echo(
        f"staff user {provisioned.staff.id} ({provisioned.staff.email}) roles: "
        f"{', '.join(provisioned.staff.roles)}"
    )
    click.echo("Add this to an authenticator app (shown once):")
    click.echo(provisioned.provisioning_uri)
    click.echo(_terminal_qr(provisioned.provisioning_uri))
    click.echo("Recovery codes (each works once; store them offline):")
    for code in provisioned.recovery_codes:
        click.echo(f"  {code}")


@staff.command("demo")
def demo() -> None:
    """Development only: create (or reset) the demo staff user and print its sign-in."""
    if not current_app.extensions["lango.settings"].is_development:
        raise click.ClickException("`lango staff demo` runs only with LANGO_ENV=development.")
    demo = ensure_demo_staff()
    click.echo(f"staff sign-in (admin + compliance): {demo.email} / {demo.password}")
    click.echo(f"  TOTP secret {demo.totp_secret} — add it to an authenticator app, or print")
    click.echo(f"  the current code: lango staff code {demo.email}")


@staff.command("code")
@click.argument("email")
def code(email: str) -> None:
    """Development only: print a staff user's current TOTP code."""
    if not current_app.extensions["lango.settings"].is_development:
        raise click.ClickException("`lango staff code` runs only with LANGO_ENV=development.")
    staff = db.session.scalar(select(StaffUser).where(StaffUser.email == email.lower()))
    if staff is None:
        raise click.ClickException(f"No staff user {email}.")
    click.echo(pyotp.TOTP(decrypt(staff.totp_secret)).now())


@command("queues")
def queues() -> None:
    """Queue depths, scheduled and failed jobs, the oldest due webhook delivery, and what
    each outbox subscriber still owes."""
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
    click.echo(f"{'subscriber':<24} {'pending':>8} {'retrying':>9} {'oldest':>10}")
    for lag in subscriber_lag(now):
        oldest_age = "-" if lag.oldest_seconds is None else f"{lag.oldest_seconds:.0f} s"
        click.echo(f"{lag.subscriber:<24} {lag.pending:>8} {lag.retrying:>9} {oldest_age:>10}")


COMMANDS = (staff, queues)


def _terminal_qr(data: str) -> str:
    """The provisioning URI as a QR code drawn with text, for an authenticator app to scan."""
    out = io.StringIO()
    segno.make(data).terminal(out=out, compact=True)
    return out.getvalue()
