"""`lango audit …`: operator commands for the audit log."""

from __future__ import annotations

import sys

import click
from flask.cli import with_appcontext


@click.group()
def audit() -> None:
    """The tamper-evident audit log."""


@audit.command("verify")
@with_appcontext
def audit_verify() -> None:
    """Walk the hash chain; name the first edited, deleted or reordered entry (exit 1)."""
    from compliance.audit import verify_chain

    report = verify_chain()
    if report.ok:
        click.echo(f"ok, {report.entries} entries")
        return
    entry = report.first_bad
    click.echo(
        f"BROKEN at entry {entry.id} (seq {entry.seq}, {entry.action}): {report.problem}",
        err=True,
    )
    sys.exit(1)
