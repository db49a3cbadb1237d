"""`lango staff …`: staff accounts (registered on Lango's CLI)."""

from __future__ import annotations

import io

import click
import segno
from flask.cli import with_appcontext


@click.group("staff")
def staff() -> None:
    """Platform staff accounts (admin, compliance)."""


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
@with_appcontext
def create(email: str, name: str, roles: tuple[str, ...], password: str) -> None:
    """Create a staff user; print the TOTP provisioning URI (and a QR code when a QR
    library is installed) and 10 one-time recovery codes. Both are shown only now."""
    from core.errors import LangoError
    from staff.service import create_staff

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
@with_appcontext
def demo() -> None:
    """Development only: create (or reset) the demo staff user and print its sign-in."""
    from flask import current_app

    from staff.demo import ensure_demo_staff

    if not current_app.extensions["lango.settings"].is_development:
        raise click.ClickException("`lango staff demo` runs only with LANGO_ENV=development.")
    demo = ensure_demo_staff()
    click.echo(f"staff sign-in (admin + compliance): {demo.email} / {demo.password}")
    click.echo(f"  TOTP secret {demo.totp_secret} — add it to an authenticator app, or print")
    click.echo(f"  the current code: lango staff code {demo.email}")


@staff.command("code")
@click.argument("email")
@with_appcontext
def code(email: str) -> None:
    """Development only: print a staff user's current TOTP code."""
    import pyotp
    from flask import current_app
    from sqlalchemy import select

    from core.crypto import decrypt
    from core.extensions import db
    from staff.models import StaffUser

    if not current_app.extensions["lango.settings"].is_development:
        raise click.ClickException("`lango staff code` runs only with LANGO_ENV=development.")
    staff = db.session.scalar(select(StaffUser).where(StaffUser.email == email.lower()))
    if staff is None:
        raise click.ClickException(f"No staff user {email}.")
    click.echo(pyotp.TOTP(decrypt(staff.totp_secret)).now())


def _terminal_qr(data: str) -> str:
    """The provisioning URI as a QR code drawn with text, for an authenticator app to scan."""
    out = io.StringIO()
    segno.make(data).terminal(out=out, compact=True)
    return out.getvalue()
