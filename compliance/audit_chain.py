"""Verifying the audit chains, and anchoring their heads in and outside the database.

`verify_chain` walks every chain (each tenant's, and the platform's: compliance.audit) in
`chain_seq` order and names, per chain, the first entry that is wrong: a gap in `chain_seq`
(deleted), a `prev_hash` that is not the entry before's (deleted or reordered), a hash that
is not its content's HMAC under its key (edited, or rewritten with an unkeyed hash), a hash
that differs from an anchor's (rewritten). A broken chain does not stop the others' walk.

A hash chain alone cannot show that its newest entries were deleted: what remains is a
valid, shorter chain. Two things catch that:
- each chain's head row (public.audit_chain_heads, written with every append): a chain that
  ends before its head is named. A superuser can rewind the row too, so this catches only a
  careless deletion;
- anchors: `write_anchors` (every minute, from `lango scheduler`) records the head of each
  chain that moved since its last anchor — chain, seq and hash, signed with the audit key —
  as a line in a file outside the database (AUDIT_CHECKPOINT_DIR), in the log, and as a row
  of public.audit_anchors. `verify_chain` requires every anchored entry to be present with
  the anchored hash, whichever copy holds the anchor: deleting the rows leaves the file's
  lines, which a database superuser cannot reach. Deleting a chain's entries written after
  its last anchor (at most a minute's worth) and rewinding its head goes unnoticed; deleting
  anything at or before the anchor does not.

Entries written before per-tenant chains (migration 0012) form the first stretch of the
platform chain, hashed as they were then (`hash_format` 1): the checkpoint lines written
then anchor it still (same file, same signed form). The oldest of them may carry the
unkeyed SHA-256 of before keying (key_id NULL): the platform chain's first anchor seals
them (`unkeyed_until`), and from then on an unkeyed hash anywhere else is a rewrite. Until
that first anchor, `verify_chain` refuses unkeyed entries (run `lango audit checkpoint`
once after upgrading).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from itertools import groupby
from operator import attrgetter
from pathlib import Path

from flask import current_app
from sqlalchemy import BigInteger, String, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Mapped, mapped_column

from compliance.audit import (
    CHAINED_FORMAT,
    GENESIS_HASH,
    LEGACY_FORMAT,
    PLATFORM_CHAIN,
    AuditChainHead,
    AuditEntry,
    entry_hash,
)
from compliance.audit_keys import AuditKeyRing
from core.extensions import db

logger = logging.getLogger("lango.audit")

CHECKPOINT_FILE = "audit-checkpoints.jsonl"
# Unchanged since the single chain: the lines written then still verify.
_ANCHOR_LABEL = "lango.audit-checkpoint.v1\n"
# Chains whose head moved since their last anchor in the database (the file is not read:
# a missing row only makes the next run verify, and anchor, more).
_MOVED_CHAINS = text(
    "SELECT head.chain FROM public.audit_chain_heads head"
    " LEFT JOIN LATERAL (SELECT anchor.seq FROM public.audit_anchors anchor"
    "   WHERE anchor.chain = head.chain ORDER BY anchor.seq DESC LIMIT 1) last ON true"
    " WHERE head.seq > 0 AND last.seq IS DISTINCT FROM head.seq"
    " ORDER BY head.chain"
)


class AuditAnchor(db.Model):
    """The database's copy of an anchor (the file holds the other). Append-only (trigger)."""

    __tablename__ = "audit_anchors"
    __table_args__ = {"schema": "public"}

    chain: Mapped[str] = mapped_column(String(40), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64))
    unkeyed_until: Mapped[int] = mapped_column(BigInteger)
    # Kept as the signed text: re-formatting a timestamp would break the signature.
    written_at: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str] = mapped_column(String(16))
    signature: Mapped[str] = mapped_column(String(64))


@dataclass(frozen=True)
class Anchor:
    """One anchored chain head. `unkeyed_until`: in the platform chain, the last seq written
    before keying (0: none); 0 in a tenant's chain."""

    chain: str
    seq: int
    hash: str
    unkeyed_until: int
    written_at: str
    key_id: str

    def signed_content(self) -> str:
        return _ANCHOR_LABEL + json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    def signature_matches(self, keys: AuditKeyRing, signature: str) -> bool | None:
        """None when the key it names is not configured."""
        key = keys.get(self.key_id)
        return None if key is None else key.sign(self.signed_content()) == signature


@dataclass(frozen=True)
class ChainProblem:
    """What is wrong, in which chain (None: the checkpoint file as a whole), at which entry
    (None: a problem of the chain's end, or of an anchor)."""

    chain: str | None
    problem: str
    entry: AuditEntry | None = None

    def describe(self) -> str:
        if self.chain is None:
            return self.problem
        if self.entry is None:
            return f"chain {self.chain}: {self.problem}"
        entry = self.entry
        return (
            f"chain {self.chain} at entry {entry.id} (seq {entry.chain_seq}, {entry.action}): "
            f"{self.problem}"
        )


@dataclass(frozen=True)
class ChainReport:
    entries: int  # walked (up to each broken chain's first bad entry)
    chains: int
    problems: tuple[ChainProblem, ...] = ()
    anchored_chains: int = 0
    last_anchor_at: str | None = None
    # Entries after their chain's last anchor: only the head rows guard them from deletion.
    unanchored: int = 0
    unanchored_chains: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def problem(self) -> str | None:
        return self.problems[0].describe() if self.problems else None

    @property
    def first_bad(self) -> AuditEntry | None:
        return self.problems[0].entry if self.problems else None


@dataclass
class AnchorRun:
    anchored: list[Anchor] = field(default_factory=list)
    refused: list[ChainProblem] = field(default_factory=list)


@dataclass
class _Walk:
    chain: str
    entries: int = 0
    seq: int = 0
    hash: str = GENESIS_HASH
    keyed_seen: bool = False
    chained_seen: bool = False
    unkeyed_until: int = 0
    problem: str | None = None
    bad: AuditEntry | None = None


def configured_checkpoint_dir() -> Path:
    return Path(current_app.extensions["lango.settings"].AUDIT_CHECKPOINT_DIR)


# --- verify -------------------------------------------------------------------------------


def verify_chain(keys: AuditKeyRing, checkpoint_dir: Path) -> ChainReport:
    """Walk every chain, holding each against its anchors (the file's and the database's)
    and its head row. Read-only. Names the first problem of each broken chain."""
    problems: list[ChainProblem] = []
    file_anchors, file_problem = read_anchors(checkpoint_dir, keys)
    if file_problem is not None:
        problems.append(ChainProblem(None, file_problem))
    database_anchors, database_problems = _database_anchors(keys)
    problems += database_problems
    anchors, conflicts = _anchors_by_chain([*file_anchors, *database_anchors])
    problems += conflicts
    # Read before the walk: an append committing meanwhile only moves a chain past its head.
    heads = {head.chain: head for head in db.session.scalars(select(AuditChainHead))}
    entries = chains = unanchored = unanchored_chains = 0
    walked: set[str] = set()
    for chain, chain_entries in groupby(_entries(), key=attrgetter("chain")):
        walked.add(chain)
        chains += 1
        walk = _walk(
            _Walk(chain),
            chain_entries,
            keys,
            anchors=anchors.get(chain, {}),
            head=heads.get(chain),
            sealed=_seal(chain, anchors.get(chain, {})),
        )
        entries += walk.entries
        problem = _walk_problem(walk) or _end_problem(walk, anchors.get(chain), heads)
        if problem is not None:
            problems.append(problem)
            continue
        after = walk.seq - (max(anchors[chain]) if chain in anchors else 0)
        unanchored += after
        unanchored_chains += after > 0
    for chain in sorted((anchors.keys() | heads.keys()) - walked):
        problem = _end_problem(_Walk(chain), anchors.get(chain), heads)
        if problem is not None:
            problems.append(problem)
    every_anchor = [anchor for by_seq in anchors.values() for anchor in by_seq.values()]
    return ChainReport(
        entries=entries,
        chains=chains,
        problems=tuple(problems),
        anchored_chains=len(anchors),
        last_anchor_at=max((a.written_at for a in every_anchor), default=None),
        unanchored=unanchored,
        unanchored_chains=unanchored_chains,
    )


def _walk_problem(walk: _Walk) -> ChainProblem | None:
    return None if walk.problem is None else ChainProblem(walk.chain, walk.problem, walk.bad)


def _end_problem(
    walk: _Walk, anchors: dict[int, Anchor] | None, heads: dict[str, AuditChainHead]
) -> ChainProblem | None:
    """The chain ends before its last anchor, or before its head row: its newest entries
    were deleted. Entries without a head row: the row was deleted."""
    last = anchors[max(anchors)] if anchors else None
    if last is not None and last.seq > walk.seq:
        return ChainProblem(
            walk.chain,
            f"the chain ends at seq {walk.seq}, but the checkpoint of {last.written_at} "
            f"anchored seq {last.seq}: the newest entries (seq {walk.seq + 1} to {last.seq}) "
            "were deleted",
        )
    head = heads.get(walk.chain)
    if head is not None and head.seq > walk.seq:
        return ChainProblem(
            walk.chain,
            f"the chain ends at seq {walk.seq}, but its head row says seq {head.seq}: the "
            f"newest entries (seq {walk.seq + 1} to {head.seq}) were deleted",
        )
    if head is None and walk.seq > 0:
        return ChainProblem(walk.chain, "the chain's head row is missing (deleted)")
    return None


def _seal(chain: str, anchors: dict[int, Anchor]) -> int:
    """Up to which seq the chain may hold unkeyed legacy entries: what the platform chain's
    anchors sealed (none before its first anchor); none in a tenant's chain."""
    if chain != PLATFORM_CHAIN:
        return 0
    return min((anchor.unkeyed_until for anchor in anchors.values()), default=0)


# --- anchors ------------------------------------------------------------------------------


def write_anchors(keys: AuditKeyRing, checkpoint_dir: Path) -> AnchorRun:
    """Anchor the head of every chain that moved since its last anchor: one signed line per
    chain appended to `checkpoint_dir` (and logged), and a row in public.audit_anchors (in
    the caller's transaction). Each chain is verified from its last anchor first (from its
    start the first time); a broken chain is refused and left unanchored, the others are
    anchored all the same. Safe to run concurrently: lines are appended whole, rows are
    inserted once."""
    run = AnchorRun()
    platform_seal: int | None = None
    for chain in db.session.scalars(_MOVED_CHAINS).all():
        if chain == PLATFORM_CHAIN:
            platform_seal, problem = _platform_seal(keys, checkpoint_dir)
            if problem is not None:
                run.refused.append(ChainProblem(chain, problem))
                continue
        walk, problem = _walk_from_last_anchor(chain, keys, platform_seal)
        if problem is not None:
            run.refused.append(problem)
            continue
        if chain == PLATFORM_CHAIN and platform_seal is None:
            platform_seal = walk.unkeyed_until  # the first anchor seals what it found
        run.anchored.append(
            Anchor(
                chain=chain,
                seq=walk.seq,
                hash=walk.hash,
                unkeyed_until=platform_seal if chain == PLATFORM_CHAIN else 0,
                written_at=datetime.now(UTC).isoformat(),
                key_id=keys.signing.id,
            )
        )
    if run.anchored:
        _keep(run.anchored, keys, checkpoint_dir)
    return run


def _keep(anchors: list[Anchor], keys: AuditKeyRing, checkpoint_dir: Path) -> None:
    lines = [
        {**asdict(anchor), "signature": keys.signing.sign(anchor.signed_content())}
        for anchor in anchors
    ]
    _append_lines(checkpoint_dir, [json.dumps(line, sort_keys=True) for line in lines])
    for line in lines:
        # The log is a third copy, kept by whatever keeps the logs: a deleted file can be
        # rebuilt from it, and a log line cannot be recalled from the database.
        logger.info("audit checkpoint", extra={"audit_checkpoint": line})
    db.session.execute(insert(AuditAnchor).values(lines).on_conflict_do_nothing())


def _walk_from_last_anchor(
    chain: str, keys: AuditKeyRing, platform_seal: int | None
) -> tuple[_Walk, ChainProblem | None]:
    """Verify only what follows the chain's last anchor in the database, starting from its
    (still present and unchanged) entry; from the chain's start when it has none."""
    sealed = platform_seal if chain == PLATFORM_CHAIN else 0
    row = db.session.scalar(
        select(AuditAnchor)
        .where(AuditAnchor.chain == chain)
        .order_by(AuditAnchor.seq.desc())
        .limit(1)
    )
    if row is None:
        walk = _walk(_Walk(chain), _entries(chain), keys, anchors={}, head=None, sealed=sealed)
        return walk, _walk_problem(walk)
    last, problem = _checked_row(row, keys)
    if problem is not None:
        return _Walk(chain), problem
    entries = _entries(chain, from_seq=last.seq)
    anchored = next(entries, None)
    if anchored is None or anchored.chain_seq != last.seq:
        return _Walk(chain), ChainProblem(
            chain,
            f"seq {last.seq}, anchored by the checkpoint of {last.written_at}, is missing "
            "(deleted)",
        )
    if anchored.hash != last.hash:
        return _Walk(chain), ChainProblem(
            chain, f"does not match the checkpoint of {last.written_at} (rewritten)", anchored
        )
    start = _Walk(
        chain,
        seq=last.seq,
        hash=last.hash,
        keyed_seen=anchored.key_id is not None,
        chained_seen=anchored.hash_format == CHAINED_FORMAT,
        unkeyed_until=last.unkeyed_until,
    )
    walk = _walk(start, entries, keys, anchors={}, head=None, sealed=sealed)
    return walk, _walk_problem(walk)


def _platform_seal(keys: AuditKeyRing, checkpoint_dir: Path) -> tuple[int | None, str | None]:
    """The platform chain's seal: its first anchor's `unkeyed_until`, from the database, or
    from the file while the database has none (a deployment upgraded from the single
    chain); None before any anchor."""
    first = db.session.scalar(
        select(AuditAnchor)
        .where(AuditAnchor.chain == PLATFORM_CHAIN)
        .order_by(AuditAnchor.seq)
        .limit(1)
    )
    if first is not None:
        return first.unkeyed_until, None
    anchors, problem = read_anchors(checkpoint_dir, keys)
    if problem is not None:
        return None, problem
    sealed = [anchor.unkeyed_until for anchor in anchors if anchor.chain == PLATFORM_CHAIN]
    return (min(sealed) if sealed else None), None


def read_anchors(checkpoint_dir: Path, keys: AuditKeyRing) -> tuple[list[Anchor], str | None]:
    """Every chain's anchors in the file, oldest first, each signature checked; or the
    problem with the file (a line edited, or signed with a key not configured)."""
    path = checkpoint_dir / CHECKPOINT_FILE
    if not path.exists():
        return [], None
    anchors = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            fields = json.loads(line)
            signature = fields.pop("signature")
            anchor = Anchor(**fields)
        except (ValueError, TypeError, KeyError):
            return [], f"checkpoint file {path}, line {number}: not a checkpoint (edited)"
        matches = anchor.signature_matches(keys, signature)
        if matches is None:
            return [], (
                f"checkpoint file {path}, line {number}: signed with audit key "
                f"{anchor.key_id}, which is not configured (AUDIT_KEYS)"
            )
        if not matches:
            return [], f"checkpoint file {path}, line {number}: signature does not match (edited)"
        anchors.append(anchor)
    return anchors, None


def _database_anchors(keys: AuditKeyRing) -> tuple[list[Anchor], list[ChainProblem]]:
    anchors, problems = [], []
    rows = select(AuditAnchor).order_by(AuditAnchor.chain, AuditAnchor.seq)
    for row in db.session.scalars(rows.execution_options(yield_per=1000)):
        anchor, problem = _checked_row(row, keys)
        if problem is not None:
            problems.append(problem)
        else:
            anchors.append(anchor)
    return anchors, problems


def _checked_row(row: AuditAnchor, keys: AuditKeyRing) -> tuple[Anchor, ChainProblem | None]:
    anchor = Anchor(
        chain=row.chain,
        seq=row.seq,
        hash=row.hash,
        unkeyed_until=row.unkeyed_until,
        written_at=row.written_at,
        key_id=row.key_id,
    )
    matches = anchor.signature_matches(keys, row.signature)
    where = f"the anchor of seq {row.seq} in public.audit_anchors"
    if matches is None:
        return anchor, ChainProblem(
            row.chain,
            f"{where} is signed with audit key {row.key_id}, which is not configured (AUDIT_KEYS)",
        )
    if not matches:
        return anchor, ChainProblem(row.chain, f"{where}: signature does not match (edited)")
    return anchor, None


def _anchors_by_chain(
    anchors: Iterable[Anchor],
) -> tuple[dict[str, dict[int, Anchor]], list[ChainProblem]]:
    by_chain: dict[str, dict[int, Anchor]] = {}
    conflicts = []
    for anchor in anchors:
        known = by_chain.setdefault(anchor.chain, {}).setdefault(anchor.seq, anchor)
        if known.hash != anchor.hash:
            conflicts.append(
                ChainProblem(
                    anchor.chain,
                    f"two signed anchors of seq {anchor.seq} disagree (an audit key leaked?)",
                )
            )
    return by_chain, conflicts


def _append_lines(checkpoint_dir: Path, lines: list[str]) -> None:
    checkpoint_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    # One write(2) in append mode: concurrent writers never interleave within a line.
    descriptor = os.open(
        checkpoint_dir / CHECKPOINT_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600
    )
    try:
        os.write(descriptor, "".join(line + "\n" for line in lines).encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# --- the walk -----------------------------------------------------------------------------


def _entries(chain: str | None = None, from_seq: int = 0) -> Iterator[AuditEntry]:
    """Entries in chain order: one chain's from `from_seq`, or every chain's, chain by chain."""
    statement = select(AuditEntry).order_by(AuditEntry.chain, AuditEntry.chain_seq)
    if chain is not None:
        statement = statement.where(AuditEntry.chain == chain, AuditEntry.chain_seq >= from_seq)
    yield from db.session.scalars(statement.execution_options(yield_per=1000))


def _walk(
    walk: _Walk,
    entries: Iterable[AuditEntry],
    keys: AuditKeyRing,
    *,
    anchors: dict[int, Anchor],
    head: AuditChainHead | None,
    sealed: int | None,
) -> _Walk:
    """Check each entry against the one before it, from `walk`'s state. `sealed`: the last
    seq allowed an unkeyed legacy hash (None: any leading run of them, which the platform
    chain's first anchor then seals)."""
    for entry in entries:
        walk.entries += 1
        problem = _entry_problem(entry, walk, keys, sealed) or _anchor_problem(entry, anchors, head)
        if problem is not None:
            walk.problem, walk.bad = problem, entry
            return walk
        if entry.key_id is None:
            walk.unkeyed_until = entry.chain_seq
        walk.keyed_seen = walk.keyed_seen or entry.key_id is not None
        walk.chained_seen = walk.chained_seen or entry.hash_format == CHAINED_FORMAT
        walk.seq, walk.hash = entry.chain_seq, entry.hash
    return walk


def _entry_problem(entry: AuditEntry, walk: _Walk, keys: AuditKeyRing, sealed: int | None):
    if entry.hash_format == LEGACY_FORMAT:
        problem = _legacy_problem(entry, walk)
        if problem is not None:
            return problem
    elif entry.hash_format != CHAINED_FORMAT:
        return f"unknown hash format {entry.hash_format} (edited)"
    # Keyed appends number a chain without gaps; legacy entries written before keying took
    # their seq from a sequence, where a rolled-back append left a gap.
    if entry.key_id is not None and entry.chain_seq != walk.seq + 1:
        first, last = walk.seq + 1, entry.chain_seq - 1
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


def _legacy_problem(entry: AuditEntry, walk: _Walk) -> str | None:
    """Legacy entries are the platform chain's oldest, numbered as they were."""
    if walk.chain != PLATFORM_CHAIN:
        return "in the single chain's format outside the platform chain (rewritten)"
    if walk.chained_seen:
        return "in the single chain's format after per-chain entries (rewritten)"
    if entry.chain_seq != entry.seq:
        return f"chain seq {entry.chain_seq} is not its seq {entry.seq} (renumbered)"
    return None


def _unkeyed_problem(entry: AuditEntry, walk: _Walk, sealed: int | None) -> str | None:
    if entry.hash_format != LEGACY_FORMAT:
        return "unkeyed hash, but every entry of a chain is keyed (rewritten)"
    if sealed is None:
        return "unkeyed hash after keyed entries (rewritten)" if walk.keyed_seen else None
    if entry.chain_seq <= sealed:
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


def _anchor_problem(
    entry: AuditEntry, anchors: dict[int, Anchor], head: AuditChainHead | None
) -> str | None:
    anchor = anchors.get(entry.chain_seq)
    if anchor is not None and anchor.hash != entry.hash:
        return f"does not match the checkpoint of {anchor.written_at} (rewritten)"
    if head is not None and head.seq == entry.chain_seq and head.hash != entry.hash:
        return "does not match its chain's head row (rewritten)"
    return None
