"""RQ jobs of compliance: anchoring the audit chains (run by `lango scheduler`)."""

from __future__ import annotations

import logging

from compliance.audit_chain import configured_checkpoint_dir, write_anchors
from compliance.audit_keys import current_key_ring
from core.jobs import app_job

logger = logging.getLogger("lango.audit")


@app_job
def checkpoint_audit_chain() -> dict[str, int]:
    """Anchor the head of every audit chain that moved since its last anchor
    (AUDIT_CHECKPOINT_DIR, the log and public.audit_anchors); returns the seq anchored per
    chain. A broken chain is logged as an error and left unanchored; the job still anchors
    the others and succeeds, so that one broken chain cannot stop every chain's anchoring."""
    run = write_anchors(current_key_ring(), configured_checkpoint_dir())
    for refused in run.refused:
        logger.error(
            "audit checkpoint refused",
            extra={"chain": refused.chain, "problem": refused.describe()},
        )
    return {anchor.chain: anchor.seq for anchor in run.anchored}
