"""Schema migrations: one Alembic tree for `public`, one for every tenant schema.

The public tree runs through Flask-Migrate like any Flask app. The tenant tree is applied by
this module, tenant by tenant: each tenant in one transaction (with lock and statement
timeouts) that also records the new revision in `public.tenants`, so the registry can say in
one query whether every tenant is at head, and a rerun picks up exactly where a failed or
interrupted run stopped. Alembic's own version table lives inside each tenant schema too,
keeping every schema self-describing (and movable to another node).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import alembic.op
from alembic.config import Config
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from core.tenancy import quote_schema

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
PUBLIC_MIGRATIONS = MIGRATIONS_DIR / "public"
TENANT_MIGRATIONS = MIGRATIONS_DIR / "tenant"


@lru_cache(maxsize=8)
def _script_directory(location: str) -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", location)
    return ScriptDirectory.from_config(config)


def tenant_head(location: Path = TENANT_MIGRATIONS) -> str:
    return _script_directory(str(location)).get_current_head()


def public_head() -> str:
    return _script_directory(str(PUBLIC_MIGRATIONS)).get_current_head()


def migrate_schema(connection: Connection, schema: str, location: Path = TENANT_MIGRATIONS) -> str:
    """Bring one tenant schema to head on `connection`, inside its current transaction.

    Leaves the transaction's search_path on `public` afterwards. Returns the head revision.
    """
    script = _script_directory(str(location))
    connection.exec_driver_sql(f"SET LOCAL search_path TO {quote_schema(schema)}")

    def upgrade(revision, context):
        return script._upgrade_revs("head", revision)

    context = MigrationContext.configure(
        connection,
        opts={
            "version_table_schema": schema,
            "script": script,
            "fn": upgrade,
            "destination_rev": "head",
            "transactional_ddl": True,
        },
    )
    with _operations_of_this_thread(Operations(context)):
        context.run_migrations()
    connection.exec_driver_sql("SET LOCAL search_path TO public")
    return script.get_current_head()


_thread_operations: ContextVar[Operations | None] = ContextVar(
    "lango_tenant_migration", default=None
)


class _ThreadOperationsProxy:
    """Stands in for alembic's `op` proxy, which alembic keeps in one process-wide global
    (`Operations.context` swaps it in and out). Tenants migrate on parallel threads, and
    sign-ups provision schemas on a threaded server: without this, one thread's
    `op.create_table` runs on another thread's connection, in another tenant's schema."""

    def __getattr__(self, name: str):
        operations = _thread_operations.get()
        if operations is None:
            raise RuntimeError(f"alembic op.{name}() called outside a tenant migration")
        return getattr(operations, name)


_THREAD_OPERATIONS_PROXY = _ThreadOperationsProxy()


@contextmanager
def _operations_of_this_thread(operations: Operations) -> Iterator[None]:
    # Installed on every call: alembic's own runs (the public tree, upgraded before the
    # tenants and never beside them) leave the global reset to None.
    alembic.op._proxy = _THREAD_OPERATIONS_PROXY
    token = _thread_operations.set(operations)
    try:
        yield
    finally:
        _thread_operations.reset(token)


def provision_schema(connection: Connection, schema: str) -> str:
    """Create a tenant schema at head inside the caller's transaction; returns the revision.

    If the caller rolls back, neither the schema nor any of its tables remain.
    """
    connection.exec_driver_sql(f"CREATE SCHEMA {quote_schema(schema)}")
    return migrate_schema(connection, schema)


@dataclass(frozen=True)
class TenantMigration:
    tenant_id: str
    schema: str
    from_revision: str | None
    to_revision: str | None
    seconds: float
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def tenants_behind(engine: Engine, head: str) -> list[tuple[str, str, str | None]]:
    with engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT id, schema_name, schema_revision FROM public.tenants "
                "WHERE schema_revision IS DISTINCT FROM :head ORDER BY id"
            ),
            {"head": head},
        )
        return [tuple(row) for row in rows]


def upgrade_tenants(
    engine: Engine,
    *,
    workers: int = 4,
    lock_timeout_ms: int = 5000,
    statement_timeout_ms: int = 60000,
    location: Path = TENANT_MIGRATIONS,
    report: Callable[[TenantMigration], None] = lambda result: None,
) -> list[TenantMigration]:
    """Upgrade every tenant whose registered revision is behind head, `workers` at a time.

    Each tenant is one transaction: its schema changes and its registry row commit together
    or not at all, so a failure (reported with the tenant's id) leaves that tenant exactly
    as it was and the others unaffected. Rerunning resumes with the tenants still behind.
    """
    head = tenant_head(location)
    pending = tenants_behind(engine, head)

    def upgrade_one(row: tuple[str, str, str | None]) -> TenantMigration:
        result = _upgrade_tenant(engine, row, head, location, lock_timeout_ms, statement_timeout_ms)
        report(result)
        return result

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lango-migrate") as pool:
        return list(pool.map(upgrade_one, pending))


def _upgrade_tenant(
    engine: Engine,
    row: tuple[str, str, str | None],
    head: str,
    location: Path,
    lock_timeout_ms: int,
    statement_timeout_ms: int,
) -> TenantMigration:
    tenant_id, schema, registered = row
    started = time.perf_counter()
    try:
        with engine.connect() as connection, connection.begin():
            connection.exec_driver_sql(f"SET LOCAL lock_timeout = {int(lock_timeout_ms)}")
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {int(statement_timeout_ms)}")
            # Row lock: two upgraders never migrate the same tenant at once.
            registered = connection.execute(
                text("SELECT schema_revision FROM public.tenants WHERE id = :id FOR UPDATE"),
                {"id": tenant_id},
            ).scalar_one()
            if registered != head:
                migrate_schema(connection, schema, location)
                connection.execute(
                    text(
                        "UPDATE public.tenants SET schema_revision = :head, "
                        "schema_migrated_at = now() WHERE id = :id"
                    ),
                    {"head": head, "id": tenant_id},
                )
    except Exception as exc:  # reported per tenant; the run goes on with the others
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        return TenantMigration(
            tenant_id, schema, registered, None, time.perf_counter() - started, message
        )
    return TenantMigration(tenant_id, schema, registered, head, time.perf_counter() - started)


@dataclass(frozen=True)
class MigrationStatus:
    public_revision: str | None
    public_head: str
    tenant_head: str
    tenants: int
    tenants_behind: int

    @property
    def at_head(self) -> bool:
        return self.public_revision == self.public_head and self.tenants_behind == 0


def migration_status(engine: Engine, location: Path = TENANT_MIGRATIONS) -> MigrationStatus:
    """Read from the registry alone: one query, however many tenant schemas there are."""
    head = tenant_head(location)
    with engine.connect() as connection:
        public_revision = _public_revision(connection)
        tenants, behind = (0, 0)
        if public_revision is not None:
            tenants, behind = connection.execute(
                text(
                    "SELECT count(*), count(*) FILTER "
                    "(WHERE schema_revision IS DISTINCT FROM :head) FROM public.tenants"
                ),
                {"head": head},
            ).one()
    return MigrationStatus(public_revision, public_head(), head, tenants, behind)


def _public_revision(connection: Connection) -> str | None:
    exists = connection.execute(
        text("SELECT to_regclass('public.alembic_version') IS NOT NULL")
    ).scalar_one()
    if not exists:
        return None
    return connection.execute(text("SELECT version_num FROM public.alembic_version")).scalar()


def summarize(results: Iterable[TenantMigration]) -> tuple[int, int]:
    results = list(results)
    failed = sum(1 for result in results if not result.ok)
    return len(results) - failed, failed
