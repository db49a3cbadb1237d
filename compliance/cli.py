"""`lango audit …`: operator commands for the audit log."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from compliance.audit_chain import configured_checkpoint_dir, verify_chain, write_anchors
from compliance.audit_keys import current_key_ring
from core.commands import group

CHECKPOINT_DIR_HELP = "Where the signed checkpoints are (default: AUDIT_CHECKPOINT_DIR)."

audit = group("audit", help="The tamper-evident audit log.")


def _checkpoint_dir(option: str | None) -> Path:
    return Path(option) if option else configured_checkpoint_dir()


def _chains(count: int) -> str:
    return f"{count} chain" if count == 1 else f"{count} chains"


@audit.command("verify")
@click.option("--checkpoint-dir", default=None, help=CHECKPOINT_DIR_HELP)
def audit_verify(checkpoint_dir: str | None) -> None:
    """Walk every chain (one per tenant, one for the platform) and hold it against its
    checkpoints and head; name, per chain, the first edited, deleted or reordered entry, or
    the deleted newest ones (exit 1)."""
    directory = _checkpoint_dir(checkpoint_dir)
    report = verify_chain(current_key_ring(), directory)
    if not report.ok:
        for problem in report.problems:
            click.echo(f"BROKEN {problem.describe()}", err=True)
        click.echo(
            f"{report.entries} entries in {_chains(report.chains)} checked; "
            f"{len(report.problems)} problems"
        )
        sys.exit(1)
    click.echo(f"ok, {report.entries} entries in {_chains(report.chains)}")
    if report.last_anchor_at is None:
        click.echo(
            f"no checkpoint in {directory} or the database: deleting a chain's newest entries "
            "would be detected only by its head row"
        )
    else:
        click.echo(
            f"last checkpoint at {report.last_anchor_at}: {report.unanchored} entries in "
            f"{_chains(report.unanchored_chains)} after their chain's last checkpoint "
            "(deleting those would be detected only by the chain's head row)"
        )


@audit.command("checkpoint")
@click.option("--checkpoint-dir", default=None, help=CHECKPOINT_DIR_HELP)
def audit_checkpoint(checkpoint_dir: str | None) -> None:
    """Anchor every chain's head now (the scheduler does it every minute); run it once after
    upgrading from the unkeyed chain, to seal the entries written before keying. A broken
    chain is named and left unanchored (exit 1); the others are anchored."""
    run = write_anchors(current_key_ring(), _checkpoint_dir(checkpoint_dir))
    for anchor in run.anchored:
        click.echo(f"checkpoint: chain {anchor.chain} seq {anchor.seq} {anchor.hash}")
    if not run.anchored and not run.refused:
        click.echo("nothing new since the last checkpoint")
    if run.refused:
        for refused in run.refused:
            click.echo(f"BROKEN {refused.describe()}; not anchored", err=True)
        # Exiting rolls the unit back: the database's copies of this run's anchors go, the
        # file's lines stay, and the next scheduled run writes the rows again.
        sys.exit(1)
