"""Tenant schema migrations on real PostgreSQL: `lango db upgrade` and `lango db status` across
hundreds of tenant schemas, one failing tenant isolated and resumed, lock and statement
timeouts, and provisioning that is atomic and safe on parallel threads."""

import secrets
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from core.cli import main as lango
from core.extensions import db
from core.ids import new_id
from core.migrations import (
    TENANT_MIGRATIONS,
    migrate_schema,
    migration_status,
    provision_schema,
    tenant_head,
    upgrade_tenants,
)
from core.tenancy import quote_schema, schema_name_for
from core.unit_of_work import unit_of_work
from tenants.service import sign_up

EXTRA_REVISION = "t9001_test_extra"
ADD_NOTE_COLUMN = 'op.add_column("events", sa.Column("note", sa.Text()))'
SLEEP_30_SECONDS = 'op.execute("SELECT pg_sleep(30)")'

Provision = Callable[[Connection, str], str]  # (connection, schema) -> revision


def tenant_tree_plus(tmp_path: Path, upgrade_body: str) -> Path:
    """A copy of the tenant tree with one more revision, running `upgrade_body`, on its head."""
    tree = tmp_path / "tenant_next"
    shutil.copytree(TENANT_MIGRATIONS, tree, ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "versions" / f"{EXTRA_REVISION}.py").write_text(
        "import sqlalchemy as sa\n"
        "from alembic import op\n\n"
        f"revision = {EXTRA_REVISION!r}\n"
        f"down_revision = {tenant_head()!r}\n"
        "branch_labels = None\n"
        "depends_on = None\n\n\n"
        f"def upgrade():\n    {upgrade_body}\n\n\n"
        "def downgrade():\n    pass\n"
    )
    return tree


def tenant_tree_of_previous_release(tmp_path: Path) -> Path:
    """A copy of the tenant tree without its head revision: what the last release shipped."""
    tree = tmp_path / "tenant_previous"
    shutil.copytree(TENANT_MIGRATIONS, tree, ignore=shutil.ignore_patterns("__pycache__"))
    script = ScriptDirectory(str(TENANT_MIGRATIONS))
    (tree / "versions" / Path(script.get_revision(script.get_current_head()).path).name).unlink()
    return tree


def provision_with_tree(connection: Connection, schema: str, location: Path) -> str:
    """provision_schema, but at the head of another tenant tree."""
    connection.exec_driver_sql(f"CREATE SCHEMA {quote_schema(schema)}")
    return migrate_schema(connection, schema, location)


def provision_tenants(
    engine: Engine, count: int, provision: Provision = provision_schema
) -> list[str]:
    """`count` tenants with real schemas and registry rows, as sign-up leaves them minus the
    owner and key (whose password hashing would dominate): ten tenants per transaction, four
    transactions at a time."""
    tenant_ids = [new_id("ten") for _ in range(count)]

    def provision_batch(batch: list[str]) -> None:
        with engine.begin() as connection:
            for tenant_id in batch:
                schema = schema_name_for(tenant_id)
                connection.execute(
                    text(
                        "INSERT INTO public.tenants (id, business_name, status, plan, "
                        "schema_name, schema_revision, schema_migrated_at) VALUES "
                        "(:id, 'Duka Ltd', 'active', 'free', :schema, :revision, now())"
                    ),
                    {"id": tenant_id, "schema": schema, "revision": provision(connection, schema)},
                )

    batches = [tenant_ids[start : start + 10] for start in range(0, count, 10)]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(provision_batch, batches))
    return tenant_ids


@pytest.fixture
def bulk_tenants(app, app_context):
    """`bulk_tenants(count)` runs provision_tenants on the app's database, then drops those
    schemas twenty per transaction: the shared cleanup drops every schema in one transaction,
    which at 200 schemas runs out of lock slots (max_locks_per_transaction) on PostgreSQL 18."""
    tenant_ids: list[str] = []

    def provision_and_track(count: int, provision: Provision = provision_schema) -> list[str]:
        tenant_ids.extend(provision_tenants(db.engine, count, provision))
        return tenant_ids[-count:]

    yield provision_and_track
    for start in range(0, len(tenant_ids), 20):
        with db.engine.begin() as connection:
            for tenant_id in tenant_ids[start : start + 20]:
                schema = quote_schema(schema_name_for(tenant_id))
                connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def registry_revisions(engine: Engine) -> dict[str, str | None]:
    with engine.connect() as connection:
        return dict(
            connection.execute(text("SELECT id, schema_revision FROM public.tenants")).all()
        )


def schema_revision(connection: Connection, tenant_id: str) -> str:
    """What the schema's own alembic_version says (the registry could lie; this cannot)."""
    schema = quote_schema(schema_name_for(tenant_id))
    return connection.exec_driver_sql(
        f"SELECT version_num FROM {schema}.alembic_version"
    ).scalar_one()


def schema_revisions(engine: Engine, tenant_ids: list[str]) -> dict[str, str]:
    with engine.connect() as connection:
        return {tenant_id: schema_revision(connection, tenant_id) for tenant_id in tenant_ids}


def schema_shape(connection: Connection, schema: str) -> list[tuple]:
    """Every column and index of a schema, to compare schemas built different ways."""
    columns = connection.execute(
        text(
            "SELECT table_name, column_name, data_type, is_nullable "
            "FROM information_schema.columns WHERE table_schema = :schema ORDER BY 1, 2"
        ),
        {"schema": schema},
    ).all()
    indexes = connection.execute(
        text(
            "SELECT tablename, indexname FROM pg_indexes WHERE schemaname = :schema ORDER BY 1, 2"
        ),
        {"schema": schema},
    ).all()
    return [*columns, *indexes]


def tenant_state(engine: Engine, tenant_id: str) -> tuple:
    """A tenant's registry row, schema shape and schema revision, to prove nothing moved."""
    schema = schema_name_for(tenant_id)
    with engine.connect() as connection:
        registry = connection.execute(
            text("SELECT schema_revision, schema_migrated_at FROM public.tenants WHERE id = :id"),
            {"id": tenant_id},
        ).one()
        return (
            tuple(registry),
            schema_shape(connection, schema),
            schema_revision(connection, tenant_id),
        )


def schemas_with_column(engine: Engine, table: str, column: str) -> int:
    with engine.connect() as connection:
        return connection.execute(
            text(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema ~ '^t_' "
                "AND table_name = :table AND column_name = :column"
            ),
            {"table": table, "column": column},
        ).scalar_one()


def test_db_upgrade_brings_200_tenant_schemas_to_head_and_status_confirms_it(
    app, bulk_tenants, tmp_path
):
    previous_tree = tenant_tree_of_previous_release(tmp_path)
    previous_head = ScriptDirectory(str(previous_tree)).get_current_head()
    tenant_ids = bulk_tenants(200, provision=partial(provision_with_tree, location=previous_tree))
    runner = app.test_cli_runner()

    before = runner.invoke(lango, ["db", "status"])
    assert before.exit_code == 1, before.output
    assert f"tenants: 0/200 at head {tenant_head()}" in before.output
    assert "NOT at head" in before.output

    upgrade = runner.invoke(lango, ["db", "upgrade"])
    assert upgrade.exit_code == 0, upgrade.output
    assert "tenants: 200 upgraded, 0 failed" in upgrade.output
    upgraded_lines = [line for line in upgrade.output.splitlines() if " ok (" in line]
    assert {line.split()[0] for line in upgraded_lines} == set(tenant_ids)
    assert all(f"{previous_head} -> {tenant_head()} ok" in line for line in upgraded_lines)
    assert set(registry_revisions(db.engine).values()) == {tenant_head()}
    assert set(schema_revisions(db.engine, tenant_ids).values()) == {tenant_head()}

    after = runner.invoke(lango, ["db", "status"])
    assert after.exit_code == 0, after.output
    assert f"tenants: 200/200 at head {tenant_head()}" in after.output
    assert "all at head" in after.output

    rerun = runner.invoke(lango, ["db", "upgrade"])
    assert rerun.exit_code == 0, rerun.output
    assert "tenants: 0 upgraded, 0 failed" in rerun.output


def test_failing_tenant_is_reported_and_rolled_back_while_199_reach_head_and_rerun_resumes_it(
    bulk_tenants, tmp_path
):
    tree = tenant_tree_plus(tmp_path, ADD_NOTE_COLUMN)
    tenant_ids = bulk_tenants(200)
    obstructed = tenant_ids[100]
    # The column the new revision adds already exists there, so its ALTER TABLE fails.
    with db.engine.begin() as connection:
        connection.exec_driver_sql(
            f"ALTER TABLE {quote_schema(schema_name_for(obstructed))}.events ADD COLUMN note text"
        )
    obstructed_before = tenant_state(db.engine, obstructed)
    reported = []

    results = upgrade_tenants(db.engine, location=tree, report=reported.append)

    [failure] = [result for result in results if not result.ok]
    assert failure.tenant_id == obstructed
    assert failure.from_revision == tenant_head()
    assert failure.to_revision is None
    assert 'column "note" of relation "events" already exists' in failure.error
    assert sorted(result.tenant_id for result in reported) == sorted(tenant_ids)
    assert tenant_state(db.engine, obstructed) == obstructed_before
    others = [tenant_id for tenant_id in tenant_ids if tenant_id != obstructed]
    assert {registry_revisions(db.engine)[tenant_id] for tenant_id in others} == {EXTRA_REVISION}
    assert set(schema_revisions(db.engine, others).values()) == {EXTRA_REVISION}
    assert schemas_with_column(db.engine, "events", "note") == 200
    assert migration_status(db.engine, tree).tenants_behind == 1

    with db.engine.begin() as connection:
        connection.exec_driver_sql(
            f"ALTER TABLE {quote_schema(schema_name_for(obstructed))}.events DROP COLUMN note"
        )
    rerun = upgrade_tenants(db.engine, location=tree)

    assert [(result.tenant_id, result.ok) for result in rerun] == [(obstructed, True)]
    assert schema_revisions(db.engine, [obstructed]) == {obstructed: EXTRA_REVISION}
    assert migration_status(db.engine, tree).tenants_behind == 0


def test_migration_status_counts_tenants_behind_head_from_the_registry(bulk_tenants, tmp_path):
    tree = tenant_tree_plus(tmp_path, ADD_NOTE_COLUMN)
    bulk_tenants(3)

    current = migration_status(db.engine)
    assert (current.tenants, current.tenants_behind, current.at_head) == (3, 0, True)
    assert current.public_revision == current.public_head
    next_release = migration_status(db.engine, tree)
    assert next_release.tenant_head == EXTRA_REVISION
    assert (next_release.tenants_behind, next_release.at_head) == (3, False)

    upgrade_tenants(db.engine, location=tree)

    upgraded = migration_status(db.engine, tree)
    assert (upgraded.tenants, upgraded.tenants_behind, upgraded.at_head) == (3, 0, True)


def test_db_status_exits_1_while_any_tenant_is_behind_and_0_when_all_are_at_head(
    app, bulk_tenants, tmp_path
):
    bulk_tenants(3)
    runner = app.test_cli_runner()
    at_head = runner.invoke(lango, ["db", "status"])
    assert at_head.exit_code == 0, at_head.output
    assert "tenants: 3/3 at head" in at_head.output

    previous_tree = tenant_tree_of_previous_release(tmp_path)
    bulk_tenants(1, provision=partial(provision_with_tree, location=previous_tree))

    one_behind = runner.invoke(lango, ["db", "status"])
    assert one_behind.exit_code == 1, one_behind.output
    assert "tenants: 3/4 at head" in one_behind.output
    assert "NOT at head" in one_behind.output


def test_provisioning_rolled_back_leaves_no_schema(app, app_context):
    schema = schema_name_for(new_id("ten"))
    with db.engine.connect() as connection:
        transaction = connection.begin()
        assert provision_schema(connection, schema) == tenant_head()
        assert schema_shape(connection, schema)  # tables and indexes, inside the transaction
        transaction.rollback()

    with db.engine.connect() as connection:
        assert connection.execute(
            text("SELECT to_regnamespace(:schema) IS NULL"), {"schema": schema}
        ).scalar_one()
        assert schema_shape(connection, schema) == []


def test_parallel_sign_ups_each_provision_a_complete_schema(app, app_context):
    # Alembic routes `op.*` calls through one process-wide proxy; parallel provisioning must
    # still build each schema on its own connection.
    reference_schema = schema_name_for(new_id("ten"))
    with db.engine.connect() as connection, connection.begin() as transaction:
        provision_schema(connection, reference_schema)
        reference_shape = schema_shape(connection, reference_schema)
        transaction.rollback()
    run = secrets.token_hex(4)

    def sign_up_in_own_context(number: int) -> str:
        with app.app_context():
            try:
                email = f"owner{number}-{run}@example.co.ke"
                with unit_of_work():
                    return sign_up(f"Duka {number}", email, "s3cure-Passw0rd").tenant.id
            finally:
                db.session.remove()

    with ThreadPoolExecutor(max_workers=8) as pool:
        tenant_ids = list(pool.map(sign_up_in_own_context, range(24)))

    with db.engine.connect() as connection:
        shapes = {
            tenant_id: schema_shape(connection, schema_name_for(tenant_id))
            for tenant_id in tenant_ids
        }
    assert shapes == dict.fromkeys(tenant_ids, reference_shape)
    assert set(schema_revisions(db.engine, tenant_ids).values()) == {tenant_head()}


def test_tenant_locked_by_another_transaction_fails_fast_on_lock_timeout_and_alone(
    bulk_tenants, tmp_path
):
    tree = tenant_tree_plus(tmp_path, ADD_NOTE_COLUMN)
    tenant_ids = bulk_tenants(4)
    locked = tenant_ids[0]
    locked_before = tenant_state(db.engine, locked)

    with db.engine.connect() as holder, holder.begin():
        # A long-running reader: ADD COLUMN needs an exclusive lock and has to wait for it.
        holder.exec_driver_sql(
            f"LOCK TABLE {quote_schema(schema_name_for(locked))}.events IN ACCESS SHARE MODE"
        )
        results = upgrade_tenants(db.engine, location=tree, lock_timeout_ms=200)

    outcomes = {result.tenant_id: result for result in results}
    assert not outcomes[locked].ok
    assert "lock timeout" in outcomes[locked].error
    assert 0.2 <= outcomes[locked].seconds < 3  # the default 5 s lock timeout was not used
    assert all(outcomes[tenant_id].ok for tenant_id in tenant_ids[1:])
    assert tenant_state(db.engine, locked) == locked_before

    rerun = upgrade_tenants(db.engine, location=tree, lock_timeout_ms=200)
    assert [(result.tenant_id, result.ok) for result in rerun] == [(locked, True)]


def test_migration_running_past_the_statement_timeout_is_cancelled_and_rolled_back(
    bulk_tenants, tmp_path
):
    tree = tenant_tree_plus(tmp_path, SLEEP_30_SECONDS)
    [tenant_id] = bulk_tenants(1)
    before = tenant_state(db.engine, tenant_id)

    [result] = upgrade_tenants(db.engine, location=tree, statement_timeout_ms=300)

    assert not result.ok
    assert "statement timeout" in result.error
    assert result.seconds < 5
    assert tenant_state(db.engine, tenant_id) == before
