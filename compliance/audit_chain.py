"""Verifying the audit chain, and anchoring its head outside the database.

`verify_chain` walks every entry in `seq` order and names the first that is wrong: a gap in
`seq` (deleted), a `prev_hash` that is not the entry before's (deleted or reordered), a hash
that is not its content's HMAC under its key (edited, or rewritten with an unkeyed hash), a
hash that differs from a checkpoint's (rewritten).

The hash chain alone cannot show that its newest entries were deleted: what remains is a
valid, shorter chain. So `write_checkpoint` (every minute, from `lango scheduler`) appends
the head — seq and hash, signed with the audit key — to a file outside the database
(AUDIT_CHECKPOINT_DIR) and to the log. `verify_chain` then requires every checkpointed entry
to be present with the checkpointed hash. Deleting entries written after the last checkpoint
(at most a minute's worth) is not detectable; deleting anything at or before it is.

Entries written before the chain was keyed carry the old unkeyed SHA-256 (key_id NULL). The
first checkpoint seals them: it records the last such `seq`, and from then on an unkeyed
hash anywhere else is a rewrite. Until a deployment's first checkpoint, `verify_chain`
refuses unkeyed entries (run `lango audit checkpoint` once after upgrading).

Checkpoints name their chain ("platform" today), so one chain per tenant can be anchored the
same way later.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from flask import current_app
from sqlalchemy import select

from compliance.audit import GENESIS_HASH, AuditEntry, entry_hash
from compliance.audit_keys import AuditKeyRing

logger = logging.getLogger("lango.audit")

CHECKPOINT_FILE = "audit-checkpoints.jsonl"
PLATFORM_CHAIN = "platform"
_CHECKPOINT_LABEL = "lango.audit-checkpoint.v1\n"


@dataclass(frozen=True)
class Checkpoint:
    """One anchored chain head. `unkeyed_until`: the last seq written before keying (0: none)."""

    chain: str
    seq: int
    hash: str
    unkeyed_until: int
    written_at: str
    key_id: str

    def signed_content(self) -> str:
        return _CHECKPOINT_LABEL + json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class ChainReport:
    entries: int
    problem: str | None = None
    first_bad: AuditEntry | None = None
    last_checkpoint: Checkpoint | None = None
    # Entries after the last checkpoint: their deletion would go unnoticed.
    unanchored: int = 0

    @property
    def ok(self) -> bool:
        return self.problem is None


class CheckpointRefused(RuntimeError):
    """The chain (or the checkpoint file) is broken: no checkpoint anchors it."""


@dataclass
class _Walk:
    entries: int = 0
    seq: int = 0
    hash: str = GENESIS_HASH
    keyed_seen: bool = False
    unkeyed_until: int = 0
    problem: str | None = None
    bad: AuditEntry | None = None


def configured_checkpoint_dir() -> Path:
    return Path(current_app.extensions["lango.settings"].AUDIT_CHECKPOINT_DIR)


def verify_chain(keys: AuditKeyRing, checkpoint_dir: Path) -> ChainReport:
    """Walk the whole chain, then hold it against every checkpoint in `checkpoint_dir`.
    Read-only; the first problem found is reported (with its entry when there is one)."""
    checkpoints, problem = read_checkpoints(checkpoint_dir, keys)
    if problem is not None:
        return ChainReport(0, problem)
    anchors = {checkpoint.seq: checkpoint for checkpoint in checkpoints}
    walk = _walk(
        _entries(), keys, anchors=anchors, sealed=checkpoints[0].unkeyed_until if checkpoints else 0
    )
    last = checkpoints[-1] if checkpoints else None
    if walk.problem is not None:
        return ChainReport(walk.entries, walk.problem, walk.bad, last)
    if last is not None and last.seq > walk.seq:
        return ChainReport(
            walk.entries,
            f"the chain ends at seq {walk.seq}, but the checkpoint of {last.written_at} "
            f"anchored seq {last.seq}: the newest entries (seq {walk.seq + 1} to {last.seq}) "
            "were deleted",
            last_checkpoint=last,
        )
    anchored = last.seq if last is not None else 0
    return ChainReport(walk.entries, last_checkpoint=last, unanchored=walk.seq - anchored)


def write_checkpoint(keys: AuditKeyRing, checkpoint_dir: Path) -> Checkpoint | None:
    """Anchor the chain's head: append a signed checkpoint to `checkpoint_dir` and log it.
    Only the entries since the last checkpoint are verified first (the whole chain on the
    first run); a broken chain raises CheckpointRefused and anchors nothing. Returns None
    when the head has not moved (an idle platform adds no lines). Safe to run concurrently:
    each checkpoint is one appended line."""
    checkpoints, problem = read_checkpoints(checkpoint_dir, keys)
    if problem is not None:
        raise CheckpointRefused(problem)
    last = checkpoints[-1] if checkpoints else None
    if last is None:
        walk = _walk(_entries(), keys, anchors={}, sealed=None)
    else:
        walk = _walk_from(last, keys)
    if walk.problem is not None:
        where = f" at seq {walk.bad.seq} ({walk.bad.id})" if walk.bad is not None else ""
        raise CheckpointRefused(f"audit chain broken{where}: {walk.problem}")
    if walk.seq == 0 or (last is not None and walk.seq == last.seq):
        return None
    checkpoint = Checkpoint(
        chain=PLATFORM_CHAIN,
        seq=walk.seq,
        hash=walk.hash,
        unkeyed_until=last.unkeyed_until if last is not None else walk.unkeyed_until,
        written_at=datetime.now(UTC).isoformat(),
        key_id=keys.signing.id,
    )
    line = {**asdict(checkpoint), "signature": keys.signing.sign(checkpoint.signed_content())}
    _append_line(checkpoint_dir, json.dumps(line, sort_keys=True))
    # The log is a second copy, kept by whatever keeps the logs: a deleted file can be
    # rebuilt from it, and a log line cannot be recalled from the database.
    logger.info("audit checkpoint", extra={"audit_checkpoint": line})
    return checkpoint


def read_checkpoints(
    checkpoint_dir: Path, keys: AuditKeyRing
) -> tuple[list[Checkpoint], str | None]:
    """The platform chain's checkpoints, oldest first, each signature checked; or the
    problem with the file (a line edited, or signed with a key not configured)."""
    path = checkpoint_dir / CHECKPOINT_FILE
    if not path.exists():
        return [], None
    checkpoints = []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            fields = json.loads(text)
            signature = fields.pop("signature")
            checkpoint = Checkpoint(**fields)
        except (ValueError, TypeError, KeyError):
            return [], f"checkpoint file {path}, line {number}: not a checkpoint (edited)"
        key = keys.get(checkpoint.key_id)
        if key is None:
            return [], (
                f"checkpoint file {path}, line {number}: signed with audit key "
                f"{checkpoint.key_id}, which is not configured (AUDIT_KEYS)"
            )
        if key.sign(checkpoint.signed_content()) != signature:
            return [], f"checkpoint file {path}, line {number}: signature does not match (edited)"
        if checkpoint.chain == PLATFORM_CHAIN:
            checkpoints.append(checkpoint)
    return checkpoints, None


def _append_line(checkpoint_dir: Path, line: str) -> None:
    checkpoint_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # One write(2) of one line in append mode: concurrent writers never interleave a line.
    descriptor = os.open(
        checkpoint_dir / CHECKPOINT_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
    )
    try:
        os.write(descriptor, (line + "\n").encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _entries(from_seq: int = 0) -> Iterator[AuditEntry]:
    from core.extensions import db

    statement = (
        select(AuditEntry)
        .where(AuditEntry.seq >= from_seq)
        .order_by(AuditEntry.seq)
        .execution_options(yield_per=1000)
    )
    yield from db.session.scalars(statement)


def _walk_from(last: Checkpoint, keys: AuditKeyRing) -> _Walk:
    """Verify only what follows the last checkpoint, starting from its (still present and
    unchanged) entry."""
    entries = _entries(from_seq=last.seq)
    anchored = next(entries, None)
    if anchored is None or anchored.seq != last.seq:
        return _Walk(
            problem=f"seq {last.seq}, anchored by the checkpoint of {last.written_at}, is "
            "missing (deleted)"
        )
    if anchored.hash != last.hash:
        return _Walk(
            problem=f"does not match the checkpoint of {last.written_at} (rewritten)",
            bad=anchored,
        )
    start = _Walk(seq=last.seq, hash=last.hash, keyed_seen=anchored.key_id is not None)
    return _walk(entries, keys, anchors={}, sealed=last.unkeyed_until, start=start)


def _walk(
    entries: Iterable[AuditEntry],
    keys: AuditKeyRing,
    *,
    anchors: dict[int, Checkpoint],
    sealed: int | None,
    start: _Walk | None = None,
) -> _Walk:
    """Check each entry against the one before it. `sealed`: the last seq allowed an
    unkeyed hash (None: any leading run of them, which the first checkpoint then seals)."""
    walk = start or _Walk()
    for entry in entries:
        walk.entries += 1
        problem = _entry_problem(entry, walk, keys, sealed) or _anchor_problem(entry, anchors)
        if problem is not None:
            walk.problem, walk.bad = problem, entry
            return walk
        if entry.key_id is None:
            walk.unkeyed_until = entry.seq
        walk.keyed_seen = walk.keyed_seen or entry.key_id is not None
        walk.seq, walk.hash = entry.seq, entry.hash
    return walk


def _entry_problem(entry: AuditEntry, walk: _Walk, keys: AuditKeyRing, sealed: int | None):
    # Keyed appends number entries without gaps; entries written before keying took their
    # seq from a sequence, where a rolled-back append left a gap.
    if entry.key_id is not None and entry.seq != walk.seq + 1:
        first, last = walk.seq + 1, entry.seq - 1
        missing = f"seq {first}" if first == last else f"seq {first} to {last}"
        return f"{missing} missing before it (deleted)"
    if entry.prev_hash != walk.hash:
        return "prev_hash does not match the entry before it (deleted or reordered)"
    if entry.key_id is None:
        problem = _unkeyed_problem(entry, walk, sealed)
        if problem is not None:
            return problem
        key = None
    else:
        key = keys.get(entry.key_id)
        if key is None:
            return f"signed with audit key {entry.key_id}, which is not configured (AUDIT_KEYS)"
    if entry.hash != entry_hash(entry, walk.hash, key):
        return "content does not match its hash (edited)"
    return None


def _unkeyed_problem(entry: AuditEntry, walk: _Walk, sealed: int | None) -> str | None:
    if sealed is None:
        return "unkeyed hash after keyed entries (rewritten)" if walk.keyed_seen else None
    if entry.seq <= sealed:
        return None
    if sealed:
        return (
            f"unkeyed hash, but the first checkpoint sealed only seq 1 to {sealed} as written "
            "before keying (rewritten)"
        )
    return (
        "unkeyed hash, and no checkpoint seals it as written before keying (rewritten; on a "
        "database upgraded from the unkeyed chain, run `lango audit checkpoint` once first)"
    )


def _anchor_problem(entry: AuditEntry, anchors: dict[int, Checkpoint]) -> str | None:
    anchor = anchors.get(entry.seq)
    if anchor is not None and anchor.hash != entry.hash:
        return f"does not match the checkpoint of {anchor.written_at} (rewritten)"
    return None
