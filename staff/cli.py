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


def _terminal_qr(data: str) -> str:
    """The provisioning URI as a QR code drawn with text, for an authenticator app to scan."""
    out = io.StringIO()
    segno.make(data).terminal(out=out, compact=True)
    return out.getvalue()
