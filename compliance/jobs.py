"""RQ jobs of compliance: anchoring the audit chain (run by `lango scheduler`)."""

from __future__ import annotations

import logging

from compliance.audit_chain import CheckpointRefused, configured_checkpoint_dir, write_checkpoint
from compliance.audit_keys import current_key_ring
from core.jobs import app_job

logger = logging.getLogger("lango.audit")


@app_job
def checkpoint_audit_chain() -> int | None:
    """Append a signed checkpoint of the audit chain's head (AUDIT_CHECKPOINT_DIR and the
    log); the seq anchored, or None when nothing was appended since the last one. A broken
    chain is logged as an error and fails the job, anchoring nothing."""
    try:
        checkpoint = write_checkpoint(current_key_ring(), configured_checkpoint_dir())
    except CheckpointRefused as refusal:
        logger.error("audit checkpoint refused", extra={"problem": str(refusal)})
        raise
    return None if checkpoint is None else checkpoint.seq
