"""`lango audit …`: operator commands for the audit log."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask.cli import with_appcontext

CHECKPOINT_DIR_HELP = "Where the signed checkpoints are (default: AUDIT_CHECKPOINT_DIR)."


@click.group()
def audit() -> None:
    """The tamper-evident audit log."""


def _checkpoint_dir(option: str | None) -> Path:
    from compliance.audit_chain import configured_checkpoint_dir

    return Path(option) if option else configured_checkpoint_dir()


@audit.command("verify")
@click.option("--checkpoint-dir", default=None, help=CHECKPOINT_DIR_HELP)
@with_appcontext
def audit_verify(checkpoint_dir: str | None) -> None:
    """Walk the keyed hash chain and hold it against the checkpoints; name the first
    edited, deleted or reordered entry, or the deleted newest ones (exit 1)."""
    from compliance.audit_chain import verify_chain
    from compliance.audit_keys import current_key_ring

    directory = _checkpoint_dir(checkpoint_dir)
    report = verify_chain(current_key_ring(), directory)
    if not report.ok:
        entry = report.first_bad
        where = f" at entry {entry.id} (seq {entry.seq}, {entry.action})" if entry else ""
        click.echo(f"BROKEN{where}: {report.problem}", err=True)
        sys.exit(1)
    click.echo(f"ok, {report.entries} entries")
    last = report.last_checkpoint
    if last is None:
        click.echo(
            f"no checkpoint in {directory}: deleting the newest entries would not be detected"
        )
    else:
        click.echo(
            f"last checkpoint: seq {last.seq} at {last.written_at}; {report.unanchored} "
            "entries after it (deleting those would not be detected)"
        )


@audit.command("checkpoint")
@click.option("--checkpoint-dir", default=None, help=CHECKPOINT_DIR_HELP)
@with_appcontext
def audit_checkpoint(checkpoint_dir: str | None) -> None:
    """Anchor the chain's head now (the scheduler does it every minute); run it once after
    upgrading from the unkeyed chain, to seal the entries written before keying."""
    from compliance.audit_chain import CheckpointRefused, write_checkpoint
    from compliance.audit_keys import current_key_ring

    try:
        checkpoint = write_checkpoint(current_key_ring(), _checkpoint_dir(checkpoint_dir))
    except CheckpointRefused as refusal:
        click.echo(f"BROKEN: {refusal}; no checkpoint written", err=True)
        sys.exit(1)
    if checkpoint is None:
        click.echo("nothing new since the last checkpoint")
    else:
        click.echo(f"checkpoint: seq {checkpoint.seq} {checkpoint.hash}")
