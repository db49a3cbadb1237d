"""Which tenant the current code works for, and how that reaches PostgreSQL.

Each tenant's business data lives in its own schema, `t_<immutable id>`. The current tenant
is held in a ContextVar; `tenant_scope(tenant)` sets it for requests, jobs, CLI and tests.

The binding is applied when a session's transaction begins (`after_begin`): a
`SET LOCAL search_path` that PostgreSQL discards at COMMIT or ROLLBACK. So:
- it is re-applied to every transaction in the scope, surviving commits;
- it can never leak through the connection pool: a connection goes back to the pool only
  after its transaction ends (SQLAlchemy rolls back on return), which resets the path;
- outside a scope the connection's search_path is `public`, which holds no tenant table, so
  tenant SQL fails ("relation does not exist") instead of falling back to someone's data;
- ORM queries and raw `text()` SQL resolve the same way, because the database does it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from sqlalchemy import event, text
from sqlalchemy.orm import Session

from core.extensions import db

# `t_` + a lowercase ULID. Checked before any identifier reaches SQL, and always quoted.
SCHEMA_NAME_PATTERN = re.compile(r"^t_[0-9a-z]{26}$")

_BOUND_SCHEMA = "lango.tenant_schema"


class TenantScopeError(RuntimeError):
    """Tenant routing was used in a way that could cross tenants; refused."""


@dataclass(frozen=True)
class TenantBinding:
    tenant_id: str
    schema: str


_current: ContextVar[TenantBinding | None] = ContextVar("lango_tenant", default=None)


def schema_name_for(tenant_id: str) -> str:
    """The schema of a tenant id `ten_<ulid>`; never derived from anything mutable."""
    prefix, _, body = tenant_id.partition("_")
    schema = f"t_{body}"
    if prefix != "ten" or not SCHEMA_NAME_PATTERN.fullmatch(schema):
        raise TenantScopeError(f"not a tenant id: {tenant_id!r}")
    return schema


def quote_schema(schema: str) -> str:
    """A checked, quoted schema identifier for DDL and SET statements."""
    if not SCHEMA_NAME_PATTERN.fullmatch(schema):
        raise TenantScopeError(f"refusing unsafe schema name {schema!r}")
    return f'"{schema}"'


def current_tenant() -> TenantBinding | None:
    return _current.get()


def require_tenant() -> TenantBinding:
    binding = _current.get()
    if binding is None:
        raise TenantScopeError("this operation needs a tenant scope")
    return binding


@contextmanager
def tenant_scope(tenant) -> Iterator[TenantBinding]:
    """Run the block as `tenant` (anything with an `id`, or a tenant id string).

    The scope owns its transactions: whatever the block leaves uncommitted is rolled back on
    exit, so no later code can run on a connection still routed to this tenant. Entering a
    different tenant while a transaction is open raises TenantScopeError.
    """
    tenant_id = tenant if isinstance(tenant, str) else tenant.id
    binding = TenantBinding(tenant_id=tenant_id, schema=schema_name_for(tenant_id))
    session = db.session()
    if binding != _current.get() and session.in_transaction():
        raise TenantScopeError(
            "cannot switch tenant inside an open transaction; commit or roll back first"
        )
    token = _current.set(binding)
    try:
        yield binding
    finally:
        if session.in_transaction() and session.info.get(_BOUND_SCHEMA) == binding.schema:
            session.rollback()
        _current.reset(token)


def registered_tenant_ids() -> list[str]:
    """Every tenant in the schema registry (`public.tenants`), for jobs that visit each
    tenant. Read in its own short transaction, outside any tenant scope."""
    ids = list(db.session.scalars(text("SELECT id FROM public.tenants ORDER BY id")))
    db.session.rollback()
    return ids


def enter_tenant(tenant_id: str):
    """Bind the current context to a tenant without a `with` block (request handling, where
    the binding spans before_request..teardown). Returns a token for `leave_tenant`."""
    return _current.set(TenantBinding(tenant_id=tenant_id, schema=schema_name_for(tenant_id)))


def leave_tenant(token) -> None:
    _current.reset(token)


def clear_stale_binding() -> bool:
    """Drop any binding still set on this context; True if there was one."""
    if _current.get() is None:
        return False
    _current.set(None)
    return True


@event.listens_for(Session, "after_begin")
def _route_transaction(session: Session, transaction, connection) -> None:
    binding = _current.get()
    session.info[_BOUND_SCHEMA] = binding.schema if binding else None
    if binding is not None:
        connection.exec_driver_sql(f"SET LOCAL search_path TO {quote_schema(binding.schema)}")


@event.listens_for(Session, "after_transaction_end")
def _forget_binding(session: Session, transaction) -> None:
    if transaction.parent is None:
        session.info.pop(_BOUND_SCHEMA, None)
