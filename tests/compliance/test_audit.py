"""The audit log: one entry per audited action with the right actor, target and tenant;
append-only in the database; a hash chain that `lango audit verify` checks; tenants see
only their own trail."""

from __future__ import annotations

import itertools
import json
import logging
import threading
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from billing.models import Subscription
from billing.subscriptions import apply_pending_plan_change
from compliance.audit import GENESIS_HASH, AuditAction, AuditEntry, entry_hash, record
from compliance.audit_chain import CHECKPOINT_FILE
from compliance.audit_keys import key_ring
from compliance.cli import audit as audit_command
from compliance.jobs import checkpoint_audit_chain
from core.cli import scheduler as scheduler_command
from core.extensions import db
from tests.billing.test_subscription import upgrade
from tests.conftest import TEST_SECRET_KEY, ApiClient

AUDIT_LOG = "/v1/audit-log"
CREDENTIALS = {
    "shortcode": "174379",
    "kind": "paybill",
    "consumer_key": "ck_abcdefghijklmnop1234",
    "consumer_secret": "cs_abcdefghijklmnop5678",
    "passkey": "pk_" + "x" * 40,
}


def entries(app, action: AuditAction | None = None, tenant_id: str | None = None) -> list:
    with app.app_context():
        statement = select(AuditEntry).order_by(AuditEntry.seq)
        if action is not None:
            statement = statement.where(AuditEntry.action == action.value)
        if tenant_id is not None:
            statement = statement.where(AuditEntry.tenant_id == tenant_id)
        rows = db.session.scalars(statement).all()
        db.session.expunge_all()
        db.session.remove()
        return rows


def only(app, action: AuditAction, tenant_id: str) -> AuditEntry:
    rows = entries(app, action, tenant_id)
    assert len(rows) == 1, [(row.action, row.target_id) for row in rows]
    return rows[0]


def assert_key_actor(entry: AuditEntry, tenant) -> None:
    assert (entry.actor_type, entry.actor_id) == ("api_key", tenant.key_id)
    assert entry.actor_label == tenant.secret[:12]
    assert entry.request_id.startswith("req_") and entry.source_ip


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


def test_signup_is_recorded_with_the_owner_as_actor(app, tenant):
    entry = only(app, AuditAction.TENANT_SIGNED_UP, tenant.id)
    assert (entry.target_type, entry.target_id) == ("tenant", tenant.id)
    assert entry.actor_type == "member" and entry.actor_label == tenant.email
    assert entry.diff["after"]["business_name"] == "Duka Ltd"
    # The default key comes with the signup: no separate api_key.created entry.
    assert entries(app, AuditAction.API_KEY_CREATED, tenant.id) == []


def test_api_key_create_roll_and_revoke_are_recorded_once_each(app, api, tenant):
    created = api.post("/v1/api-keys", json={"name": "server", "mode": "test"}).get_json()
    rolled = api.post(f"/v1/api-keys/{created['id']}/roll", json={}).get_json()
    assert api.delete(f"/v1/api-keys/{rolled['id']}").status_code == 200

    entry = only(app, AuditAction.API_KEY_CREATED, tenant.id)
    assert (entry.target_type, entry.target_id) == ("api_key", created["id"])
    assert_key_actor(entry, tenant)
    entry = only(app, AuditAction.API_KEY_ROLLED, tenant.id)
    assert entry.target_id == created["id"]
    assert entry.diff["after"]["key_id"] == rolled["id"]
    assert_key_actor(entry, tenant)
    entry = only(app, AuditAction.API_KEY_REVOKED, tenant.id)
    assert entry.target_id == rolled["id"]
    assert_key_actor(entry, tenant)


def test_credentials_change_is_recorded_without_secrets(app, api, tenant):
    assert api.put("/v1/mpesa-credentials", json=CREDENTIALS).status_code == 200
    entry = only(app, AuditAction.MPESA_CREDENTIALS_CHANGED, tenant.id)
    assert entry.target_type == "mpesa_credentials" and entry.diff["before"] is None
    assert entry.diff["after"]["consumer_key_last4"] == "1234"
    assert "cs_abcdefghijklmnop5678" not in str(entry.diff)
    assert_key_actor(entry, tenant)

    assert api.put("/v1/mpesa-credentials", json={**CREDENTIALS, "shortcode": "600000"})
    changes = entries(app, AuditAction.MPESA_CREDENTIALS_CHANGED, tenant.id)
    assert len(changes) == 2
    assert changes[1].diff["before"]["shortcode"] == "174379"
    assert changes[1].diff["after"]["shortcode"] == "600000"


def test_plan_change_is_recorded(app, api, tenant):
    # Both switches happen without a key acting: the upgrade when its invoice is paid, the
    # downgrade when the period ends.
    upgrade(app, api, "growth")
    assert api.post("/v1/subscription", json={"plan": "starter"}).status_code == 200
    with app.app_context():
        subscription = db.session.scalars(
            select(Subscription).where(Subscription.tenant_id == tenant.id)
        ).one()
        apply_pending_plan_change(subscription)
        db.session.commit()
    changes = entries(app, AuditAction.SUBSCRIPTION_PLAN_CHANGED, tenant.id)
    assert [entry.diff for entry in changes] == [
        {"before": {"plan": "sandbox"}, "after": {"plan": "growth"}},
        {"before": {"plan": "growth"}, "after": {"plan": "starter"}},
    ]
    assert all(entry.target_id.startswith("sub_") for entry in changes)


def test_webhook_endpoint_changes_are_recorded(app, api, tenant):
    url = "https://hooks.example.com/lango"
    endpoint = api.post("/v1/webhook-endpoints", json={"url": url}).get_json()
    path = f"/v1/webhook-endpoints/{endpoint['id']}"
    headers = {"Authorization": f"Bearer {tenant.secret}"}
    assert api.client.patch(path, headers=headers, json={"description": "shop"}).status_code == 200
    assert api.delete(path).status_code == 200

    for action in (
        AuditAction.WEBHOOK_ENDPOINT_CREATED,
        AuditAction.WEBHOOK_ENDPOINT_UPDATED,
        AuditAction.WEBHOOK_ENDPOINT_DELETED,
    ):
        entry = only(app, action, tenant.id)
        assert (entry.target_type, entry.target_id) == ("webhook_endpoint", endpoint["id"])
        assert_key_actor(entry, tenant)
    updated = only(app, AuditAction.WEBHOOK_ENDPOINT_UPDATED, tenant.id)
    assert updated.diff["before"]["description"] is None
    assert updated.diff["after"]["description"] == "shop"
    assert "secret" not in str(updated.diff)


def test_push_initiation_is_recorded(platform, app, api, tenant):
    response = api.post(
        "/v1/stk-pushes",
        json={
            "phone_number": "254708374149",
            "amount": 10,
            "account_reference": "INV1",
            "description": "Order",
        },
    )
    assert response.status_code == 202, response.get_json()
    entry = only(app, AuditAction.STK_PUSH_INITIATED, tenant.id)
    assert (entry.target_type, entry.target_id) == ("stk_push", response.get_json()["id"])
    assert entry.diff["after"]["amount"] == 10
    assert "254708374149" not in str(entry.diff)
    assert_key_actor(entry, tenant)


def test_record_outside_a_request_is_by_the_system(app, app_context):
    entry = record(
        AuditAction.TENANT_SUSPENDED, target_type="tenant", target_id="x", tenant_id=None
    )
    db.session.commit()
    assert (entry.actor_type, entry.actor_id, entry.source_ip) == ("system", None, None)


def test_an_entry_rolls_back_with_its_change(app, app_context):
    record(AuditAction.TENANT_SUSPENDED, target_type="tenant", target_id="x", tenant_id=None)
    db.session.rollback()
    assert entries(app) == []


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE public.audit_log SET action = 'tenant.reinstated'",
        "DELETE FROM public.audit_log",
        "TRUNCATE public.audit_log",
    ],
)
def test_the_table_refuses_update_delete_and_truncate(app, tenant, statement):
    with (
        app.app_context(),
        pytest.raises(DBAPIError, match="append-only"),
        db.engine.begin() as connection,
    ):
        connection.exec_driver_sql(statement)
    assert len(entries(app)) == 1


def tamper(app, *statements: str, **params) -> None:
    """What a superuser could do: switch the trigger off, change rows, switch it back."""
    with app.app_context(), db.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE public.audit_log DISABLE TRIGGER USER")
        for sql in statements:
            connection.execute(text(sql), params)
        connection.exec_driver_sql("ALTER TABLE public.audit_log ENABLE TRIGGER USER")


def rewrite_unkeyed(app, from_seq: int, changes: dict | None = None, *, keep_key_id=False):
    """What a superuser without the audit key can do at best: change entries from `from_seq`
    on (`changes`: {entry id: {column: value}}) and recompute every hash from there the old,
    unkeyed way, re-linking each prev_hash."""
    changes = changes or {}
    with app.app_context():
        rows = db.session.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
        previous = GENESIS_HASH
        updates = []
        for entry in rows:
            if entry.seq >= from_seq:
                for column, value in changes.get(entry.id, {}).items():
                    setattr(entry, column, value)
                key_id = entry.key_id if keep_key_id else None
                hashed = entry_hash(entry, previous, None)
                updates.append(
                    {**changes.get(entry.id, {}), "prev_hash": previous, "hash": hashed}
                    | {"key_id": key_id, "id": entry.id}
                )
                previous = hashed
            else:
                previous = entry.hash
        db.session.rollback()
        db.session.remove()
    with app.app_context(), db.engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE public.audit_log DISABLE TRIGGER USER")
        # Highest seq first: a renumbered entry never collides with the one after it.
        for update in reversed(updates):
            columns = ", ".join(f"{name} = :{name}" for name in update if name != "id")
            connection.execute(
                text(f"UPDATE public.audit_log SET {columns} WHERE id = :id"),
                update,
            )
        connection.exec_driver_sql("ALTER TABLE public.audit_log ENABLE TRIGGER USER")


def delete_newest(app, count: int) -> None:
    """The issue's own attack: a superuser session with triggers off deletes the newest."""
    with app.app_context(), db.engine.begin() as connection:
        connection.exec_driver_sql("SET LOCAL session_replication_role = replica")
        connection.exec_driver_sql(
            "DELETE FROM public.audit_log WHERE seq IN "
            f"(SELECT seq FROM public.audit_log ORDER BY seq DESC LIMIT {count})"
        )


def test_verify_passes_on_an_untouched_chain(app, tenant_factory, checkpoints):
    for _ in range(3):
        tenant_factory()
    result = verify(app, checkpoints)
    assert result.exit_code == 0, result.output
    first, second = result.output.strip().splitlines()
    assert first == "ok, 3 entries"
    assert second.startswith("no checkpoint in ") and "would not be detected" in second


def test_entries_are_keyed_and_numbered_without_gaps(app, app_context):
    record(AuditAction.TENANT_SUSPENDED, target_type="tenant", target_id="a", tenant_id=None)
    db.session.rollback()  # an append that rolls back leaves no gap
    first = record(
        AuditAction.TENANT_SUSPENDED, target_type="tenant", target_id="b", tenant_id=None
    )
    second = record(
        AuditAction.TENANT_REINSTATED, target_type="tenant", target_id="b", tenant_id=None
    )
    db.session.commit()

    assert (first.seq, second.seq) == (1, 2)
    signing = key_ring((), TEST_SECRET_KEY).signing
    assert first.key_id == second.key_id == signing.id
    assert second.prev_hash == first.hash
    assert second.hash == entry_hash(second, first.hash, signing)
    # Not the unkeyed SHA-256 that anyone with the rows could recompute.
    assert second.hash != entry_hash(second, first.hash, None)


def test_verify_names_an_edited_entry(app, tenant_factory):
    tenants = [tenant_factory() for _ in range(4)]
    victim = entries(app)[1]
    tamper(
        app,
        "UPDATE public.audit_log SET tenant_id = :t WHERE id = :id",
        t=tenants[3].id,
        id=victim.id,
    )

    result = verify(app)
    assert result.exit_code == 1
    assert victim.id in result.output and "edited" in result.output


def test_verify_names_the_gap_a_deleted_entry_leaves(app, tenant_factory):
    for _ in range(4):
        tenant_factory()
    rows = entries(app)
    tamper(app, "DELETE FROM public.audit_log WHERE id = :id", id=rows[1].id)

    result = verify(app)
    assert result.exit_code == 1
    assert rows[2].id in result.output and "seq 2 missing before it (deleted)" in result.output


def test_verify_names_the_entry_after_a_deleted_one_when_the_gap_is_closed(app, tenant_factory):
    for _ in range(4):
        tenant_factory()
    rows = entries(app)
    # Delete seq 2 and renumber 3, 4 to 2, 3: no gap is left, the link still breaks.
    tamper(
        app,
        "DELETE FROM public.audit_log WHERE id = :gone",
        "UPDATE public.audit_log SET seq = seq - 1 WHERE seq > 2",
        gone=rows[1].id,
    )

    result = verify(app)
    assert result.exit_code == 1
    assert rows[2].id in result.output and "deleted or reordered" in result.output


def test_verify_detects_reordering(app, tenant_factory):
    for _ in range(3):
        tenant_factory()
    first, second, _ = entries(app)
    # Swap the first two entries' places in the chain (seq is unique: via -1).
    tamper(
        app,
        "UPDATE public.audit_log SET seq = -1 WHERE id = :a",
        "UPDATE public.audit_log SET seq = :sa WHERE id = :b",
        "UPDATE public.audit_log SET seq = :sb WHERE id = :a",
        a=first.id,
        b=second.id,
        sa=first.seq,
        sb=second.seq,
    )
    result = verify(app)
    assert result.exit_code == 1
    assert second.id in result.output


@pytest.mark.parametrize(
    ("keep_key_id", "problem"),
    [
        (True, "content does not match its hash (edited)"),
        (False, "unkeyed hash, and no checkpoint seals it"),
    ],
)
def test_verify_names_the_newest_entry_rewritten_with_a_recomputed_unkeyed_hash(
    app, tenant_factory, keep_key_id, problem
):
    for _ in range(3):
        tenant_factory()
    newest = entries(app)[-1]
    rewrite_unkeyed(app, newest.seq, {newest.id: {"target_id": "forged"}}, keep_key_id=keep_key_id)

    result = verify(app)
    assert result.exit_code == 1
    assert newest.id in result.output and problem in result.output


def test_verify_names_a_chain_rewritten_unkeyed_from_the_start(app, tenant_factory, checkpoints):
    for _ in range(3):
        tenant_factory()
    checkpoint(app, checkpoints)
    rows = entries(app)
    rewrite_unkeyed(app, 1, {rows[0].id: {"target_id": "forged"}})

    result = verify(app, checkpoints)
    assert result.exit_code == 1
    assert rows[0].id in result.output and "unkeyed hash" in result.output


def test_verify_detects_the_newest_entries_deleted_up_to_the_last_checkpoint(
    app, tenant_factory, checkpoints
):
    for _ in range(4):
        tenant_factory()
    assert "checkpoint: seq 4 " in checkpoint(app, checkpoints)
    assert verify(app, checkpoints).exit_code == 0
    delete_newest(app, 2)

    result = verify(app, checkpoints)
    assert result.exit_code == 1
    assert "the chain ends at seq 2" in result.output
    assert "the newest entries (seq 3 to 4) were deleted" in result.output


def test_deleting_entries_written_after_the_last_checkpoint_is_not_detected(
    app, tenant_factory, checkpoints
):
    """The limit, as the README states it: only what a checkpoint anchors is protected from
    deletion; `verify` says how many entries are not anchored yet."""
    for _ in range(2):
        tenant_factory()
    checkpoint(app, checkpoints)
    for _ in range(2):
        tenant_factory()
    delete_newest(app, 1)

    result = verify(app, checkpoints)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "ok, 3 entries"
    assert "last checkpoint: seq 2 " in result.output and "1 entries after it" in result.output


def test_verify_names_an_entry_that_no_longer_matches_its_checkpoint(
    app, tenant_factory, checkpoints
):
    for _ in range(2):
        tenant_factory()
    checkpoint(app, checkpoints)
    rows = entries(app)
    # Even a rewrite that verified as a chain (it cannot without the key) differs from the
    # checkpointed hash: here the whole chain is recomputed unkeyed, as if sealed earlier.
    rewrite_unkeyed(app, 2, {rows[1].id: {"target_id": "forged"}}, keep_key_id=True)

    result = verify(app, checkpoints)
    assert result.exit_code == 1 and rows[1].id in result.output


def test_verify_names_an_edited_checkpoint_file(app, tenant_factory, checkpoints):
    tenant_factory()
    checkpoint(app, checkpoints)
    path = checkpoints / CHECKPOINT_FILE
    line = json.loads(path.read_text())
    path.write_text(json.dumps({**line, "seq": 0}) + "\n")

    result = verify(app, checkpoints)
    assert result.exit_code == 1
    assert "line 1: signature does not match (edited)" in result.output


def test_an_upgraded_chain_verifies_once_its_unkeyed_entries_are_sealed(
    app, tenant_factory, checkpoints
):
    for _ in range(3):
        tenant_factory()
    rows = entries(app)
    # The chain as the unkeyed version left it: SHA-256 hashes, no key id, and a gap where
    # an append rolled back (seq came from a sequence then).
    rewrite_unkeyed(app, 1, {rows[2].id: {"seq": 5}})
    refused = verify(app, checkpoints)
    assert refused.exit_code == 1 and "run `lango audit checkpoint` once" in refused.output

    checkpoint(app, checkpoints)  # seals seq 1 to 5 as written before keying
    tenant_factory()
    result = verify(app, checkpoints)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "ok, 4 entries"
    assert entries(app)[-1].seq == 6 and entries(app)[-1].key_id is not None

    newest = entries(app)[-1]
    rewrite_unkeyed(app, newest.seq, {newest.id: {"target_id": "forged"}})
    result = verify(app, checkpoints)
    assert result.exit_code == 1
    assert newest.id in result.output and "sealed only seq 1 to 5" in result.output


def test_rotated_audit_keys_keep_verifying_what_they_signed(app, monkeypatch, tenant_factory):
    tenant_factory()
    settings = app.extensions["lango.settings"]
    rotated = replace(settings, AUDIT_KEYS=("a-new-audit-key-of-at-least-32-chars",))
    monkeypatch.setitem(app.extensions, "lango.settings", rotated)
    tenant_factory()
    first, second = entries(app)
    assert first.key_id != second.key_id

    assert verify(app).exit_code == 0
    # Without the new key, what it signed cannot be checked, and verify says so.
    monkeypatch.setitem(app.extensions, "lango.settings", settings)
    result = verify(app)
    assert result.exit_code == 1
    assert second.id in result.output and f"audit key {second.key_id}" in result.output


def test_the_checkpoint_job_writes_the_head_to_the_directory_and_the_log(
    app, tenant_factory, checkpoints, monkeypatch, caplog
):
    settings = replace(app.extensions["lango.settings"], AUDIT_CHECKPOINT_DIR=str(checkpoints))
    monkeypatch.setitem(app.extensions, "lango.settings", settings)
    for _ in range(2):
        tenant_factory()

    with app.app_context(), caplog.at_level(logging.INFO, logger="lango.audit"):
        assert checkpoint_audit_chain() == 2
        assert checkpoint_audit_chain() is None  # nothing new: no line

    (line,) = (checkpoints / CHECKPOINT_FILE).read_text().splitlines()
    written = json.loads(line)
    assert (written["chain"], written["seq"]) == ("platform", 2)
    assert written["hash"] == entries(app)[-1].hash and written["signature"]
    (logged,) = [r for r in caplog.records if r.getMessage() == "audit checkpoint"]
    assert logged.audit_checkpoint == written


def test_the_checkpoint_job_anchors_nothing_on_a_broken_chain(app, tenant_factory, checkpoints):
    for _ in range(2):
        tenant_factory()
    tamper(app, "UPDATE public.audit_log SET target_id = 'forged' WHERE seq = 2")
    result = app.test_cli_runner().invoke(
        audit_command, ["checkpoint", "--checkpoint-dir", str(checkpoints)]
    )
    assert result.exit_code == 1 and "edited" in result.output
    assert not (checkpoints / CHECKPOINT_FILE).exists()


def test_the_scheduler_checkpoints_the_chain_every_minute(app, monkeypatch):
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


def test_the_chain_stays_linear_with_8_concurrent_appenders(app):
    barrier = threading.Barrier(8)
    failures: list[BaseException] = []

    def append(worker: int) -> None:
        try:
            with app.app_context():
                barrier.wait()
                for n in range(10):
                    record(
                        AuditAction.FRAUD_RULE_CHANGED,
                        target_type="fraud_rule",
                        target_id=f"{worker}-{n}",
                        tenant_id=None,
                    )
                    db.session.commit()
                db.session.remove()
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    threads = [threading.Thread(target=append, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    rows = entries(app)
    assert len(rows) == 80
    assert all(row.prev_hash == before.hash for before, row in itertools.pairwise(rows))
    result = verify(app)
    assert result.exit_code == 0 and result.output.splitlines()[0] == "ok, 80 entries"
    assert [row.seq for row in rows] == list(range(1, 81))


def test_tenants_see_only_their_own_trail(app, client, api, tenant, tenant_factory):
    other = ApiClient(client, tenant_factory("Other Ltd").secret)
    other.post("/v1/api-keys", json={"name": "theirs", "mode": "test"})
    api.post("/v1/api-keys", json={"name": "mine", "mode": "test"})
    api.post("/v1/api-keys", json={"name": "mine too", "mode": "test"})

    body = api.get(AUDIT_LOG).get_json()
    assert [item["action"] for item in body["data"]] == [
        "api_key.created",
        "api_key.created",
        "tenant.signed_up",
    ]
    assert body["has_more"] is False
    first = body["data"][0]
    assert first["object"] == "audit_log_entry"
    assert first["actor"] == {"type": "api_key", "id": tenant.key_id, "label": tenant.secret[:12]}
    assert first["target"]["type"] == "api_key"
    assert {item["action"] for item in other.get(AUDIT_LOG).get_json()["data"]} == {
        "tenant.signed_up",
        "api_key.created",
    }
    assert len(other.get(AUDIT_LOG).get_json()["data"]) == 2


def test_audit_log_pages_and_filters(app, api, tenant):
    for n in range(3):
        api.post("/v1/api-keys", json={"name": f"k{n}", "mode": "test"})

    page = api.get(AUDIT_LOG, query_string={"limit": 2}).get_json()
    assert page["has_more"] is True and len(page["data"]) == 2
    rest = api.get(
        AUDIT_LOG, query_string={"limit": 2, "starting_after": page["data"][-1]["id"]}
    ).get_json()
    assert [item["action"] for item in rest["data"]] == ["api_key.created", "tenant.signed_up"]

    filtered = api.get(AUDIT_LOG, query_string={"action": "tenant.signed_up"}).get_json()
    assert [item["action"] for item in filtered["data"]] == ["tenant.signed_up"]
    newest = page["data"][0]["occurred_at"]
    later = api.get(AUDIT_LOG, query_string={"occurred_gte": "2999-01-01T00:00:00Z"})
    assert later.get_json()["data"] == [] and newest.endswith("Z")
    bad = api.get(AUDIT_LOG, query_string={"action": "nope"})
    assert bad.status_code == 400


def test_a_signed_in_page_user_is_the_actor_when_no_key_acts(app, tenant, staff_factory):
    """A member (dashboard) or staff user (consoles) signed in with flask-login acts as
    themselves: receivers of other domains' signals record without naming an actor."""
    from flask_login import login_user

    from staff.models import StaffUser
    from tenants.models import Member

    account = staff_factory("admin")
    with app.test_request_context(environ_base={"REMOTE_ADDR": "203.0.113.9"}):
        member = db.session.scalar(select(Member).where(Member.tenant_id == tenant.id))
        staff_user = db.session.get(StaffUser, account.id)
        for user, actor_type in ((member, "member"), (staff_user, "staff")):
            login_user(user)
            entry = record(
                AuditAction.TENANT_SUSPENDED, target_type="tenant", target_id="x", tenant_id=None
            )
            assert (entry.actor_type, entry.actor_id, entry.actor_label) == (
                actor_type,
                user.id,
                user.email,
            )
            assert entry.source_ip == "203.0.113.9"
        db.session.rollback()
        db.session.remove()
