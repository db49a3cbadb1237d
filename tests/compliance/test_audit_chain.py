"""The audit chains: one per tenant and one for the platform, keyed and numbered without
gaps; `lango audit verify` names, with its chain and entry, an edited, deleted or reordered
entry and the newest entries deleted past the chain's last anchor (in the checkpoint file and
in the database); appends to one chain never wait for another's."""

from __future__ import annotations

import itertools
import json
import logging
import secrets
import threading
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

import flask_migrate
import psycopg
import pytest
from sqlalchemy import event, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from compliance.audit import (
    GENESIS_HASH,
    LEGACY_FORMAT,
    PLATFORM_CHAIN,
    AuditAction,
    AuditChainHead,
    AuditEntry,
    entry_hash,
    record,
)
from compliance.audit_chain import CHECKPOINT_FILE, Anchor, AuditAnchor
from compliance.audit_keys import AuditKey, key_ring
from compliance.cli import audit as audit_command
from compliance.jobs import checkpoint_audit_chain
from core import create_app
from core.cli import scheduler as scheduler_command
from core.extensions import db
from core.ids import new_id
from core.migrations import PUBLIC_MIGRATIONS
from core.unit_of_work import unit_of_work
from tests.conftest import TEST_SECRET_KEY, ApiClient, _with_database, make_config
from tests.payments.test_stk_push import push_body

SIGNING = key_ring((), TEST_SECRET_KEY).signing


@pytest.fixture
def checkpoints(tmp_path) -> Path:
    """A checkpoint directory of the test's own (the app's is never written by tests)."""
    return tmp_path / "audit-checkpoints"


def verify(app, checkpoint_dir: Path | None = None):
    runner = app.test_cli_runner()
    where = ["--checkpoint-dir", str(checkpoint_dir)] if checkpoint_dir else []
    return runner.invoke(audit_command, ["verify", *where])


def checkpoint(app, checkpoint_dir: Path) -> str:
    result = app.test_cli_runner().invoke(
        audit_command, ["checkpoint", "--checkpoint-dir", str(checkpoint_dir)]
    )
    assert result.exit_code == 0, result.output
    return result.output


def append(app, tenant_id: str | None, count: int) -> None:
    """`count` more entries in the tenant's chain (the platform's for None), committed."""
    with app.app_context(), unit_of_work():
        for n in range(count):
            record(
                AuditAction.API_KEY_CREATED,
                target_type="api_key",
                target_id=f"key_{n}",
                tenant_id=tenant_id,
            )


def chain(app, name: str) -> list[AuditEntry]:
    with app.app_context():
        rows = db.session.scalars(
            select(AuditEntry).where(AuditEntry.chain == name).order_by(AuditEntry.chain_seq)
        ).all()
        db.session.expunge_all()
        db.session.remove()
        return rows


def tenant_chain(app, tenant_factory, length: int):
    """A tenant whose chain holds `length` entries (its sign-up's, then more)."""
    tenant = tenant_factory()
    append(app, tenant.id, length - 1)
    return tenant, chain(app, tenant.id)


def tamper(app, *statements: str, **params) -> None:
    """What a superuser could do: switch the triggers off, change rows, switch them back."""
    with app.app_context(), db.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE public.audit_log DISABLE TRIGGER USER")
        connection.exec_driver_sql("ALTER TABLE public.audit_anchors DISABLE TRIGGER USER")
        for sql in statements:
            connection.execute(text(sql), params)
        connection.exec_driver_sql("ALTER TABLE public.audit_anchors ENABLE TRIGGER USER")
        connection.exec_driver_sql("ALTER TABLE public.audit_log ENABLE TRIGGER USER")


def rewrite(
    app, name: str, from_seq: int, changes: dict | None = None, *, key: AuditKey | None = None
) -> None:
    """What a superuser can do at best: change a chain's entries from `from_seq` on
    (`changes`: {entry id: {column: value}}), recompute every hash from there with `key`
    (None: the old unkeyed SHA-256, key_id NULL, unless `changes` sets one), re-link each
    prev_hash, and move the head row along."""
    changes = changes or {}
    previous = GENESIS_HASH
    updates = []
    for entry in chain(app, name):
        if entry.chain_seq < from_seq:
            previous = entry.hash
            continue
        columns = {"key_id": key.id if key else None, **changes.get(entry.id, {})}
        for column, value in columns.items():
            setattr(entry, column, value)
        hashed = entry_hash(entry, previous, key)
        updates.append({**columns, "prev_hash": previous, "hash": hashed, "id": entry.id})
        previous = hashed
    last = updates[-1]
    with app.app_context(), db.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE public.audit_log DISABLE TRIGGER USER")
        # Highest first: a renumbered entry never collides with the one after it.
        for update in reversed(updates):
            columns = ", ".join(f"{column} = :{column}" for column in update if column != "id")
            connection.execute(
                text(f"UPDATE public.audit_log SET {columns} WHERE id = :id"), update
            )
        connection.exec_driver_sql("ALTER TABLE public.audit_log ENABLE TRIGGER USER")
        connection.execute(
            text(
                "UPDATE public.audit_chain_heads SET hash = :hash, seq = "
                "(SELECT chain_seq FROM public.audit_log WHERE id = :id) WHERE chain = :chain"
            ),
            {"hash": last["hash"], "id": last["id"], "chain": name},
        )


def delete_newest(app, name: str, count: int, *, rewind_head: bool) -> None:
    """The issue's own attack: a superuser session with triggers off deletes a chain's
    newest entries; a careful one also rewinds the chain's head row to what is left."""
    with app.app_context(), db.engine.begin() as connection:
        connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        connection.execute(
            text(
                "DELETE FROM public.audit_log WHERE id IN (SELECT id FROM public.audit_log "
                "WHERE chain = :chain ORDER BY chain_seq DESC LIMIT :count)"
            ),
            {"chain": name, "count": count},
        )
        if rewind_head:
            connection.execute(
                text(
                    "UPDATE public.audit_chain_heads head SET seq = last.chain_seq, "
                    "hash = last.hash FROM (SELECT chain_seq, hash FROM public.audit_log "
                    "WHERE chain = :chain ORDER BY chain_seq DESC LIMIT 1) last "
                    "WHERE head.chain = :chain"
                ),
                {"chain": name},
            )


def broken(result, name: str, entry: AuditEntry | None = None) -> str:
    """The line of verify's output that names `name`'s chain (and `entry`)."""
    assert result.exit_code == 1, result.output
    where = f"BROKEN chain {name}"
    if entry is not None:
        where += f" at entry {entry.id} (seq {entry.chain_seq}, {entry.action}): "
    (line,) = [line for line in result.output.splitlines() if line.startswith(where)]
    return line


# --- numbering and verifying --------------------------------------------------------------


def test_each_tenant_and_the_platform_have_a_chain_keyed_and_numbered_without_gaps(
    app, app_context, tenant
):
    record(AuditAction.TENANT_SUSPENDED, target_type="tenant", target_id="a", tenant_id=None)
    db.session.rollback()  # an append that rolls back leaves no gap in its chain
    first = record(
        AuditAction.TENANT_SUSPENDED, target_type="tenant", target_id="b", tenant_id=None
    )
    second = record(
        AuditAction.TENANT_REINSTATED, target_type="tenant", target_id="b", tenant_id=None
    )
    mine = record(
        AuditAction.TENANT_SUSPENDED, target_type="tenant", target_id="t", tenant_id=tenant.id
    )
    db.session.commit()

    assert (first.chain, first.chain_seq, second.chain_seq) == (PLATFORM_CHAIN, 1, 2)
    assert first.prev_hash == GENESIS_HASH and second.prev_hash == first.hash
    # The tenant's chain goes on from its sign-up's entry, apart from the platform's.
    assert (mine.chain, mine.chain_seq) == (tenant.id, 2)
    signup = db.session.scalar(select(AuditEntry).where(AuditEntry.chain == tenant.id))
    assert mine.prev_hash == signup.hash
    # `seq` numbers every entry across chains, in the order they were written.
    assert signup.seq < first.seq < second.seq < mine.seq
    assert first.key_id == second.key_id == mine.key_id == SIGNING.id
    assert second.hash == entry_hash(second, first.hash, SIGNING)
    # Not the unkeyed SHA-256 that anyone with the rows could recompute.
    assert second.hash != entry_hash(second, first.hash, None)
    heads = {
        head.chain: (head.seq, head.hash) for head in db.session.scalars(select(AuditChainHead))
    }
    assert heads == {PLATFORM_CHAIN: (2, second.hash), tenant.id: (2, mine.hash)}


def test_an_entrys_place_in_its_chain_is_part_of_its_hash(app, app_context):
    entry = record(
        AuditAction.TENANT_SUSPENDED, target_type="tenant", target_id="b", tenant_id=None
    )
    moved = replace_attributes(entry, chain="ten_someone_else")
    renumbered = replace_attributes(entry, chain_seq=7)
    assert entry_hash(moved, entry.prev_hash, SIGNING) != entry.hash
    assert entry_hash(renumbered, entry.prev_hash, SIGNING) != entry.hash
    db.session.rollback()


def replace_attributes(entry: AuditEntry, **changes) -> AuditEntry:
    columns = {column.key: getattr(entry, column.key) for column in AuditEntry.__table__.columns}
    return AuditEntry(**{**columns, **changes})


def test_verify_passes_on_untouched_chains(app, tenant_factory, checkpoints):
    for _ in range(3):
        tenant_factory()
    append(app, None, 2)
    result = verify(app, checkpoints)
    assert result.exit_code == 0, result.output
    first, second = result.output.strip().splitlines()
    assert first == "ok, 5 entries in 4 chains"
    assert second.startswith(f"no checkpoint in {checkpoints} or the database: ")
    assert "detected only by its head row" in second


def test_verify_names_an_edited_entry(app, tenant_factory):
    tenant, rows = tenant_chain(app, tenant_factory, 4)
    other = tenant_factory()
    tamper(
        app,
        "UPDATE public.audit_log SET tenant_id = :t WHERE id = :id",
        t=other.id,
        id=rows[1].id,
    )

    result = verify(app)
    assert "content does not match its hash (edited)" in broken(result, tenant.id, rows[1])
    assert f"chain {other.id}" not in result.output  # the other chain is intact


def test_verify_names_the_gap_a_deleted_entry_leaves(app, tenant_factory):
    tenant, rows = tenant_chain(app, tenant_factory, 4)
    tamper(app, "DELETE FROM public.audit_log WHERE id = :id", id=rows[1].id)

    result = verify(app)
    assert "seq 2 missing before it (deleted)" in broken(result, tenant.id, rows[2])


def test_verify_names_the_entry_after_a_deleted_one_when_the_gap_is_closed(app, tenant_factory):
    tenant, rows = tenant_chain(app, tenant_factory, 4)
    # Delete seq 2 and renumber 3, 4 to 2, 3: no gap is left, the link still breaks.
    tamper(
        app,
        "DELETE FROM public.audit_log WHERE id = :gone",
        "UPDATE public.audit_log SET chain_seq = chain_seq - 1 WHERE chain = :t AND chain_seq > 2",
        "UPDATE public.audit_chain_heads SET seq = 3 WHERE chain = :t",
        gone=rows[1].id,
        t=tenant.id,
    )

    result = verify(app)
    moved = replace_attributes(rows[2], chain_seq=2)
    assert "(deleted or reordered)" in broken(result, tenant.id, moved)


def test_verify_names_reordered_entries(app, tenant_factory):
    tenant, rows = tenant_chain(app, tenant_factory, 3)
    first, second = rows[0], rows[1]
    # Swap the first two entries' places in the chain ((chain, chain_seq) is unique: via -1).
    tamper(
        app,
        "UPDATE public.audit_log SET chain_seq = -1 WHERE id = :a",
        "UPDATE public.audit_log SET chain_seq = 1 WHERE id = :b",
        "UPDATE public.audit_log SET chain_seq = 2 WHERE id = :a",
        a=first.id,
        b=second.id,
    )
    result = verify(app)
    swapped = replace_attributes(second, chain_seq=1)
    assert "(deleted or reordered)" in broken(result, tenant.id, swapped)


def test_verify_names_every_broken_chain(app, tenant_factory):
    (one, rows_one), (two, rows_two) = (tenant_chain(app, tenant_factory, 2) for _ in range(2))
    intact = tenant_factory()
    tamper(
        app,
        "UPDATE public.audit_log SET target_id = 'forged' WHERE id IN (:a, :b)",
        a=rows_one[1].id,
        b=rows_two[0].id,
    )
    result = verify(app)
    assert "(edited)" in broken(result, one.id, rows_one[1])
    assert "(edited)" in broken(result, two.id, rows_two[0])
    assert intact.id not in result.output
    # A broken chain's walk stops at its first bad entry: 2 + 1 + 1 entries checked.
    assert "4 entries in 3 chains checked; 2 problems" in result.output


@pytest.mark.parametrize(
    ("keep_key_id", "problem"),
    [
        (True, "content does not match its hash (edited)"),
        (False, "unkeyed hash, but every entry of a chain is keyed (rewritten)"),
    ],
)
def test_verify_names_the_newest_entry_rewritten_with_a_recomputed_unkeyed_hash(
    app, tenant_factory, keep_key_id, problem
):
    tenant, rows = tenant_chain(app, tenant_factory, 3)
    newest = rows[-1]
    changes = {"target_id": "forged", **({"key_id": newest.key_id} if keep_key_id else {})}
    rewrite(app, tenant.id, newest.chain_seq, {newest.id: changes})

    assert problem in broken(verify(app), tenant.id, newest)


def test_verify_names_a_chain_rewritten_unkeyed_from_the_start(app, tenant_factory, checkpoints):
    tenant, rows = tenant_chain(app, tenant_factory, 3)
    checkpoint(app, checkpoints)
    rewrite(app, tenant.id, 1, {rows[0].id: {"target_id": "forged"}})

    assert "unkeyed hash" in broken(verify(app, checkpoints), tenant.id, rows[0])


def test_rotated_audit_keys_keep_verifying_what_they_signed(app, monkeypatch, tenant_factory):
    tenant = tenant_factory()
    settings = app.extensions["lango.settings"]
    rotated = replace(settings, AUDIT_KEYS=("a-new-audit-key-of-at-least-32-chars",))
    monkeypatch.setitem(app.extensions, "lango.settings", rotated)
    append(app, tenant.id, 1)
    first, second = chain(app, tenant.id)
    assert first.key_id != second.key_id

    assert verify(app).exit_code == 0
    # Without the new key, what it signed cannot be checked, and verify says so.
    monkeypatch.setitem(app.extensions, "lango.settings", settings)
    line = broken(verify(app), tenant.id, second)
    assert f"audit key {second.key_id}" in line


# --- the newest entries deleted: head rows and anchors ----------------------------------------


def test_verify_names_the_newest_entries_deleted_when_the_head_row_was_left(app, tenant_factory):
    tenant, _ = tenant_chain(app, tenant_factory, 4)
    delete_newest(app, tenant.id, 2, rewind_head=False)

    line = broken(verify(app), tenant.id)
    assert "the chain ends at seq 2, but its head row says seq 4" in line
    assert "the newest entries (seq 3 to 4) were deleted" in line


@pytest.mark.parametrize("copy_left", ["file", "database"])
def test_verify_names_the_newest_entries_deleted_past_the_last_anchor(
    app, tenant_factory, checkpoints, copy_left
):
    tenant, _ = tenant_chain(app, tenant_factory, 4)
    append(app, None, 1)
    output = checkpoint(app, checkpoints)
    assert f"checkpoint: chain {tenant.id} seq 4 " in output
    assert f"checkpoint: chain {PLATFORM_CHAIN} seq 1 " in output
    assert verify(app, checkpoints).exit_code == 0
    delete_newest(app, tenant.id, 2, rewind_head=True)
    # Either copy of the anchors is enough: the superuser deleted the other one too.
    if copy_left == "file":
        tamper(app, "DELETE FROM public.audit_anchors")
    else:
        (checkpoints / CHECKPOINT_FILE).unlink()

    line = broken(verify(app, checkpoints), tenant.id)
    assert "the chain ends at seq 2, but the checkpoint of " in line
    assert "anchored seq 4: the newest entries (seq 3 to 4) were deleted" in line


def test_verify_names_a_chain_deleted_whole_past_its_anchor(app, tenant_factory, checkpoints):
    tenant, _ = tenant_chain(app, tenant_factory, 2)
    checkpoint(app, checkpoints)
    delete_newest(app, tenant.id, 2, rewind_head=False)
    tamper(app, "DELETE FROM public.audit_chain_heads WHERE chain = :t", t=tenant.id)

    line = broken(verify(app, checkpoints), tenant.id)
    assert "the chain ends at seq 0" in line and "(seq 1 to 2) were deleted" in line


def test_deleting_entries_written_after_the_last_anchor_and_rewinding_the_head_is_not_detected(
    app, tenant_factory, checkpoints
):
    """The limit, as the README states it: only what an anchor holds is protected from a
    careful deletion; `verify` says how many entries are not anchored yet."""
    tenant, _ = tenant_chain(app, tenant_factory, 2)
    checkpoint(app, checkpoints)
    append(app, tenant.id, 2)
    delete_newest(app, tenant.id, 1, rewind_head=True)

    result = verify(app, checkpoints)
    assert result.exit_code == 0, result.output
    first, second = result.output.splitlines()
    assert first == "ok, 3 entries in 1 chain"
    assert second.startswith("last checkpoint at ")
    assert "1 entries in 1 chain after their chain's last checkpoint" in second


def test_verify_names_an_entry_that_no_longer_matches_its_anchor(app, tenant_factory, checkpoints):
    tenant, rows = tenant_chain(app, tenant_factory, 2)
    checkpoint(app, checkpoints)
    # Even a rewrite that verifies as a chain (here made with the key itself, which no
    # superuser has) differs from the anchored hash.
    rewrite(app, tenant.id, 2, {rows[1].id: {"target_id": "forged"}}, key=SIGNING)

    line = broken(verify(app, checkpoints), tenant.id, rows[1])
    assert "does not match the checkpoint of " in line and "(rewritten)" in line


def test_verify_names_an_edited_checkpoint_file(app, tenant_factory, checkpoints):
    tenant_factory()
    checkpoint(app, checkpoints)
    path = checkpoints / CHECKPOINT_FILE
    line = json.loads(path.read_text())
    path.write_text(json.dumps({**line, "seq": 0}) + "\n")

    result = verify(app, checkpoints)
    assert result.exit_code == 1
    assert "line 1: signature does not match (edited)" in result.output


def test_verify_names_an_edited_anchor_row(app, tenant_factory, checkpoints):
    tenant = tenant_factory()
    checkpoint(app, checkpoints)
    tamper(app, "UPDATE public.audit_anchors SET seq = 9 WHERE chain = :t", t=tenant.id)

    line = broken(verify(app, checkpoints), tenant.id)
    assert "the anchor of seq 9 in public.audit_anchors: signature does not match (edited)" in line


def test_the_anchor_tables_refuse_update_delete_and_truncate(app, tenant_factory, checkpoints):
    tenant_factory()
    checkpoint(app, checkpoints)
    for statement in (
        "UPDATE public.audit_anchors SET seq = 9",
        "DELETE FROM public.audit_anchors",
        "TRUNCATE public.audit_anchors",
    ):
        with (
            app.app_context(),
            pytest.raises(DBAPIError, match="append-only"),
            db.engine.begin() as connection,
        ):
            connection.exec_driver_sql(statement)


# --- the upgrade from the single chain ------------------------------------------------------


def test_an_upgraded_chain_verifies_once_its_unkeyed_entries_are_sealed(app, checkpoints):
    append(app, None, 4)
    rows = chain(app, PLATFORM_CHAIN)
    tamper(app, "UPDATE public.audit_log SET seq = -seq")  # frees seq 1 to 6 for the rewrite
    # The platform chain as the single chain left it (migration 0012): the format of its
    # time, SHA-256 hashes with no key id, and a gap where an append rolled back (seq came
    # from a sequence then); then one entry written once keyed.
    legacy = {"hash_format": 1}
    rewrite(
        app,
        PLATFORM_CHAIN,
        1,
        {
            rows[0].id: {**legacy, "seq": 1, "chain_seq": 1},
            rows[1].id: {**legacy, "seq": 2, "chain_seq": 2},
            rows[2].id: {**legacy, "seq": 5, "chain_seq": 5},
            rows[3].id: {**legacy, "seq": 6, "chain_seq": 6},
        },
    )
    rewrite(app, PLATFORM_CHAIN, 6, key=SIGNING)
    refused = verify(app, checkpoints)
    assert "run `lango audit checkpoint` once" in broken(refused, PLATFORM_CHAIN, rows[0])

    assert f"chain {PLATFORM_CHAIN} seq 6 " in checkpoint(app, checkpoints)  # seals 1 to 5
    append(app, None, 1)
    result = verify(app, checkpoints)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "ok, 5 entries in 1 chain"
    newest = chain(app, PLATFORM_CHAIN)[-1]
    assert (newest.chain_seq, newest.hash_format, newest.key_id) == (7, 2, SIGNING.id)

    keyed_legacy = chain(app, PLATFORM_CHAIN)[3]
    rewrite(app, PLATFORM_CHAIN, 6, {keyed_legacy.id: {"target_id": "forged"}})
    line = broken(verify(app, checkpoints), PLATFORM_CHAIN, keyed_legacy)
    assert "sealed only seq 1 to 5" in line


def test_the_legacy_format_is_refused_after_per_chain_entries(app):
    append(app, None, 2)
    newest = chain(app, PLATFORM_CHAIN)[-1]
    rewrite(
        app,
        PLATFORM_CHAIN,
        newest.chain_seq,
        {newest.id: {"hash_format": 1, "chain_seq": newest.seq}},
    )
    newest = replace_attributes(newest, chain_seq=newest.seq)
    line = broken(verify(app), PLATFORM_CHAIN, newest)
    assert "in the single chain's format after per-chain entries (rewritten)" in line


def test_the_database_refuses_the_legacy_format_in_a_tenants_chain(app, tenant):
    with pytest.raises(IntegrityError, match="ck_audit_log_hash_format"):
        tamper(app, "UPDATE public.audit_log SET hash_format = 1 WHERE chain = :t", t=tenant.id)


LEGACY_COLUMNS = (
    "id, seq, occurred_at, actor_type, action, target_type, target_id, tenant_id, prev_hash, "
    "hash, key_id"
)


def write_single_chain(connection, count: int, checkpoint_dir: Path) -> list[str]:
    """`count` entries as the single chain wrote them before migration 0012 (keyed, seq 1,
    2, 3 … across tenants and the platform), and its checkpoint of the head; their ids."""
    previous, ids = GENESIS_HASH, []
    for seq in range(1, count + 1):
        entry = AuditEntry(
            id=new_id("aud"),
            seq=seq,
            hash_format=LEGACY_FORMAT,
            occurred_at=datetime.now(UTC),
            actor_type="system",
            action=AuditAction.TENANT_SUSPENDED.value,
            target_type="tenant",
            target_id=f"ten_{seq}",
            tenant_id=None if seq % 2 else "ten_single_chain",
            prev_hash=previous,
            key_id=SIGNING.id,
        )
        entry.hash = entry_hash(entry, previous, SIGNING)
        values = {column: getattr(entry, column) for column in LEGACY_COLUMNS.split(", ")}
        connection.execute(
            text(
                f"INSERT INTO public.audit_log ({LEGACY_COLUMNS}) VALUES "
                f"({', '.join(':' + column for column in values)})"
            ),
            values,
        )
        previous = entry.hash
        ids.append(entry.id)
    anchor = Anchor(PLATFORM_CHAIN, count, previous, 0, datetime.now(UTC).isoformat(), SIGNING.id)
    checkpoint_dir.mkdir()
    line = {**asdict(anchor), "signature": SIGNING.sign(anchor.signed_content())}
    (checkpoint_dir / CHECKPOINT_FILE).write_text(json.dumps(line) + "\n")
    return ids


def test_the_migration_keeps_the_single_chain_as_the_platform_chains_first_stretch(
    servers, redis_url, checkpoints
):
    name = f"lango_test_upgrade_{secrets.token_hex(3)}"
    with psycopg.connect(servers.server_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    upgraded = create_app(make_config(_with_database(servers.server_url, name), redis_url))
    try:
        with upgraded.app_context():
            flask_migrate.upgrade(str(PUBLIC_MIGRATIONS), revision="0011_upgrade_invoices")
            with db.engine.begin() as connection:
                legacy = write_single_chain(connection, 3, checkpoints)
            flask_migrate.upgrade(str(PUBLIC_MIGRATIONS))
            with unit_of_work():
                for tenant_id in ("ten_single_chain", None):
                    record(
                        AuditAction.TENANT_REINSTATED,
                        target_type="tenant",
                        target_id="x",
                        tenant_id=tenant_id,
                    )
            db.session.remove()
        platform, tenant = chain(upgraded, PLATFORM_CHAIN), chain(upgraded, "ten_single_chain")
        # The old entries, as they were, then the platform's next; the tenant's chain is new.
        assert [entry.id for entry in platform[:3]] == legacy
        assert [(e.chain_seq, e.seq, e.hash_format) for e in platform[:3]] == [
            (1, 1, 1),
            (2, 2, 1),
            (3, 3, 1),
        ]
        assert (platform[3].chain_seq, platform[3].prev_hash) == (4, platform[2].hash)
        assert platform[3].seq > 3 and platform[3].hash_format == 2
        assert [(e.chain_seq, e.prev_hash) for e in tenant] == [(1, GENESIS_HASH)]

        result = verify(upgraded, checkpoints)  # the old checkpoint anchors the old stretch
        assert result.exit_code == 0, result.output
        assert result.output.splitlines()[0] == "ok, 5 entries in 2 chains"
        delete_newest(upgraded, PLATFORM_CHAIN, 2, rewind_head=True)
        line = broken(verify(upgraded, checkpoints), PLATFORM_CHAIN)
        assert "anchored seq 3: the newest entries (seq 3 to 3) were deleted" in line
    finally:
        with upgraded.app_context():
            db.session.remove()
            db.engine.dispose()
        with psycopg.connect(servers.server_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- anchoring ----------------------------------------------------------------------------


def test_the_checkpoint_job_anchors_every_moved_chain_in_the_directory_the_database_and_the_log(
    app, tenant_factory, checkpoints, monkeypatch, caplog
):
    settings = replace(app.extensions["lango.settings"], AUDIT_CHECKPOINT_DIR=str(checkpoints))
    monkeypatch.setitem(app.extensions, "lango.settings", settings)
    one, two = tenant_factory(), tenant_factory()
    append(app, two.id, 1)

    with app.app_context(), caplog.at_level(logging.INFO, logger="lango.audit"):
        assert checkpoint_audit_chain() == {one.id: 1, two.id: 2}
        assert checkpoint_audit_chain() == {}  # nothing new: no line
        append(app, one.id, 1)
        assert checkpoint_audit_chain() == {one.id: 2}  # only the chain that moved

    lines = [json.loads(line) for line in (checkpoints / CHECKPOINT_FILE).read_text().splitlines()]
    assert [(line["chain"], line["seq"]) for line in lines] == [
        (one.id, 1),
        (two.id, 2),
        (one.id, 2),
    ]
    assert lines[1]["hash"] == chain(app, two.id)[-1].hash and lines[1]["signature"]
    logged = [r.audit_checkpoint for r in caplog.records if r.getMessage() == "audit checkpoint"]
    assert logged == lines
    with app.app_context():
        rows = db.session.scalars(select(AuditAnchor)).all()
        assert sorted((row.chain, row.seq, row.signature) for row in rows) == sorted(
            (line["chain"], line["seq"], line["signature"]) for line in lines
        )


def test_the_checkpoint_anchors_the_intact_chains_and_names_a_broken_one(
    app, tenant_factory, checkpoints, caplog, monkeypatch
):
    (bad, rows), good = tenant_chain(app, tenant_factory, 2), tenant_factory()
    tamper(app, "UPDATE public.audit_log SET target_id = 'forged' WHERE id = :id", id=rows[1].id)

    result = app.test_cli_runner().invoke(
        audit_command, ["checkpoint", "--checkpoint-dir", str(checkpoints)]
    )
    assert result.exit_code == 1
    assert f"checkpoint: chain {good.id} seq 1 " in result.output
    assert f"BROKEN chain {bad.id} at entry {rows[1].id} (seq 2, " in result.output
    assert "(edited); not anchored" in result.output
    (line,) = (checkpoints / CHECKPOINT_FILE).read_text().splitlines()
    assert json.loads(line)["chain"] == good.id

    # The job anchors what it can too, and logs the refusal as an error.
    settings = replace(app.extensions["lango.settings"], AUDIT_CHECKPOINT_DIR=str(checkpoints))
    monkeypatch.setitem(app.extensions, "lango.settings", settings)
    with app.app_context(), caplog.at_level(logging.INFO, logger="lango.audit"):
        # The command's exit rolled back its rows (its lines stay): the job writes them.
        assert checkpoint_audit_chain() == {good.id: 1}
    (refusal,) = [r for r in caplog.records if r.getMessage() == "audit checkpoint refused"]
    assert refusal.levelno == logging.ERROR and refusal.chain == bad.id


def test_the_scheduler_checkpoints_the_chains_every_minute(app, monkeypatch):
    registered = {}

    class Cron:
        def __init__(self, connection):
            pass

        def register(self, func, queue_name, interval, **options):
            registered[func.__name__] = interval

        def start(self):
            pass

    monkeypatch.setattr("rq.cron.CronScheduler", Cron)
    result = app.test_cli_runner().invoke(scheduler_command)
    assert result.exit_code == 0, result.output
    assert registered["checkpoint_audit_chain"] == 60


# --- concurrency: one chain stays linear, chains never wait for each other --------------------


def test_a_chain_stays_linear_with_8_concurrent_appenders(app):
    barrier = threading.Barrier(8)
    failures: list[BaseException] = []

    def append_ten(worker: int) -> None:
        try:
            with app.app_context():
                barrier.wait()
                for n in range(10):
                    with unit_of_work():
                        record(
                            AuditAction.FRAUD_RULE_CHANGED,
                            target_type="fraud_rule",
                            target_id=f"{worker}-{n}",
                            tenant_id=None,
                        )
                db.session.remove()
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=append_ten, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    rows = chain(app, PLATFORM_CHAIN)
    assert len(rows) == 80
    assert all(row.prev_hash == before.hash for before, row in itertools.pairwise(rows))
    assert [row.chain_seq for row in rows] == list(range(1, 81))
    result = verify(app)
    assert result.exit_code == 0 and result.output.splitlines()[0] == "ok, 80 entries in 1 chain"


def test_an_open_audited_write_holds_up_its_own_chain_only(app, tenant_factory):
    held_tenant, other = tenant_factory("Held Duka"), tenant_factory("Other Duka")
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with app.app_context(), unit_of_work():
            record(
                AuditAction.TENANT_SUSPENDED,
                target_type="tenant",
                target_id=held_tenant.id,
                tenant_id=held_tenant.id,
            )
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        # Another tenant's chain and the platform's take their appends at once.
        with app.app_context(), unit_of_work():
            db.session.execute(text("SET LOCAL lock_timeout = '2s'"))
            for tenant_id in (other.id, None):
                record(
                    AuditAction.TENANT_SUSPENDED,
                    target_type="tenant",
                    target_id="x",
                    tenant_id=tenant_id,
                )
        # The held tenant's own chain waits for the open transaction (its head row).
        with app.app_context():
            db.session.execute(text("SET LOCAL lock_timeout = '300ms'"))
            with pytest.raises(OperationalError, match="lock timeout"):
                record(
                    AuditAction.TENANT_REINSTATED,
                    target_type="tenant",
                    target_id=held_tenant.id,
                    tenant_id=held_tenant.id,
                )
            db.session.rollback()
            db.session.remove()
    finally:
        release.set()
        holder.join(10)
    assert [entry.chain_seq for entry in chain(app, held_tenant.id)] == [1, 2]
    assert verify(app).exit_code == 0


def test_a_push_completes_while_another_tenants_push_is_held_open_mid_push(
    platform, app, tenant_factory
):
    """Tenant A's push transaction is held open just before it commits its pending push
    (after the idempotency claim, quota reservation, fraud screening and audit entry);
    tenant B's whole push goes through the API meanwhile."""
    held_tenant, quick = tenant_factory("Held Duka"), tenant_factory("Quick Duka")
    holding, release = threading.Event(), threading.Event()
    answers: dict[str, int] = {}

    def note_held_push(session, _flush_context) -> None:
        # after_flush still sees what the flush inserted as `session.new`.
        for obj in session.new:
            if (
                isinstance(obj, AuditEntry)
                and obj.tenant_id == held_tenant.id
                and obj.action == AuditAction.STK_PUSH_INITIATED
            ):
                session.info["hold"] = True

    def hold_before_commit(session) -> None:
        if session.info.pop("hold", False):
            holding.set()
            release.wait(30)

    def push(tenant, name: str) -> None:
        api = ApiClient(app.test_client(), tenant.secret)
        # The same Idempotency-Key in both tenants: keys are per tenant, never shared.
        response = api.post(
            "/v1/stk-pushes", json=push_body(), headers={"Idempotency-Key": "order-1001"}
        )
        answers[name] = response.status_code

    event.listen(db.session, "after_flush", note_held_push)
    event.listen(db.session, "before_commit", hold_before_commit)
    held = threading.Thread(target=push, args=(held_tenant, "held"))
    other = threading.Thread(target=push, args=(quick, "quick"))
    try:
        held.start()
        assert holding.wait(20), answers
        other.start()
        other.join(30)
        assert not other.is_alive(), "tenant B's push waited for tenant A's transaction"
        assert answers == {"quick": 202}
        assert held.is_alive()  # A is still held open
    finally:
        release.set()
        held.join(30)
        other.join(30)
        event.remove(db.session, "before_commit", hold_before_commit)
        event.remove(db.session, "after_flush", note_held_push)
    assert answers == {"quick": 202, "held": 202}
    assert verify(app).exit_code == 0
