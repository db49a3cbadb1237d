"""Operators' commands on tenants and stored secrets: `lango tenants demo|enable-live`,
`lango rotate-encryption`, and `lango up`'s hidden `demo-sign-ins`."""

from __future__ import annotations

import json
from pathlib import Path

import click
from flask import current_app
from sqlalchemy import select

from core.commands import command, group
from core.crypto import decrypt
from core.errors import LangoError
from core.extensions import db
from core.passwords import password_matches
from core.private_files import write_private
from core.unit_of_work import Checkpoint, checkpoint
from payments.credentials import get_credentials
from payments.credentials import rotate_encryption as rotate_credentials
from staff.demo import DEMO_STAFF_EMAIL, ensure_demo_staff
from staff.models import StaffUser
from tenants.models import Member
from tenants.service import authenticate, create_api_key, ensure_demo_tenant, get_tenant

tenants = group("tenants", help="Tenant operations.")


@tenants.command("demo")
def tenants_demo() -> None:
    """Create (or reuse) the demo tenant; print a fresh test key and dashboard sign-in."""
    demo = ensure_demo_tenant()
    click.echo(f"demo tenant {demo.tenant.id} ({demo.tenant.business_name})")
    click.echo(f"test key: {demo.issued.secret}")
    click.echo(f"dashboard sign-in: {demo.email} / {demo.password}")


@tenants.command("enable-live")
@click.argument("tenant_id")
def tenants_enable_live(tenant_id: str) -> None:
    """Turn live mode on for a tenant with credentials, and print its first live key.

    (An operator decides until compliance approval arrives.)"""
    tenant = get_tenant(tenant_id)
    if get_credentials(tenant_id) is None:
        raise click.ClickException("the tenant has no M-Pesa credentials yet")
    tenant.live_enabled = True
    issued = create_api_key(tenant_id, livemode=True, name="First live key")
    click.echo(f"live mode enabled for {tenant_id}")
    click.echo(f"live key (shown once): {issued.secret}")


@command("rotate-encryption")
def rotate_encryption() -> None:
    """Re-encrypt stored secrets with the newest ENCRYPTION_KEYS key."""
    click.echo(f"re-encrypted {rotate_credentials()} credential sets")


@command("demo-sign-ins", hidden=True)
@click.option("--keep", "keep", type=click.Path(path_type=Path), required=True)
def demo_sign_ins(keep: Path) -> None:
    """`lango up`'s demo sign-ins (tenant owner, test key and, in development, staff), kept
    in `--keep` (mode 0600) and reused across restarts while they still work; anything that
    no longer works (a revoked key, a changed password) is replaced and kept anew.

    The database holds only hashes of these secrets: the file is where the plaintext lives."""
    kept = _read_kept(keep)
    tenant, kept = _demo_tenant(kept)
    click.echo(f"demo tenant {tenant.id} ({tenant.business_name})")
    click.echo(f"test key: {kept['test_key']}")
    click.echo(f"dashboard sign-in: {kept['owner_email']} / {kept['owner_password']}")
    if current_app.extensions["lango.settings"].is_development:
        totp_secret, kept = _demo_staff(kept)
        click.echo(
            f"staff sign-in (admin + compliance): {kept['staff_email']} / {kept['staff_password']}"
        )
        click.echo(f"  TOTP secret {totp_secret} — add it to an authenticator app, or print")
        click.echo(f"  the current code: lango staff code {kept['staff_email']}")
    # The file must never name sign-ins the database does not hold.
    checkpoint(Checkpoint.DEMO_SIGN_INS)
    write_private(keep, json.dumps(kept, indent=2))


COMMANDS = (tenants, rotate_encryption, demo_sign_ins)


def _read_kept(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _demo_tenant(kept: dict):
    """The demo tenant, reusing the kept owner password and test key if both still work."""
    owner = None
    if kept.get("owner_email"):
        owner = db.session.scalar(select(Member).where(Member.email == kept["owner_email"]))
    if owner is not None and password_matches(owner.password_hash, kept.get("owner_password", "")):
        try:
            caller = authenticate(kept.get("test_key", ""))
        except LangoError:
            caller = None
        if caller is not None and caller.tenant_id == owner.tenant_id and not caller.livemode:
            return get_tenant(owner.tenant_id), kept
    demo = ensure_demo_tenant()
    kept = {
        **kept,
        "owner_email": demo.email,
        "owner_password": demo.password,
        "test_key": demo.issued.secret,
    }
    return demo.tenant, kept


def _demo_staff(kept: dict) -> tuple[str, dict]:
    """The demo staff user's TOTP secret, reusing the kept password if it still works."""
    staff = db.session.scalar(select(StaffUser).where(StaffUser.email == DEMO_STAFF_EMAIL))
    if staff is not None and password_matches(staff.password_hash, kept.get("staff_password", "")):
        return decrypt(staff.totp_secret), {**kept, "staff_email": staff.email}
    demo = ensure_demo_staff()
    return demo.totp_secret, {**kept, "staff_email": demo.email, "staff_password": demo.password}
