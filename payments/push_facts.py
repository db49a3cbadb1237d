"""The facts of STK pushes that compliance reads through its port (compliance.ports.PushReader,
registered in payments' init_app): the fraud-rule dry run reads the last days' pushes of each
tenant, a review case shows its push. Compliance sits below payments and may not import it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import select

from compliance.ports import PushFacts, PushReader
from core.extensions import db
from core.tenancy import schema_name_for, tenant_scope
from payments.models import StkPush

# Rows fetched at a time when streaming a tenant's pushes.
BATCH_SIZE = 1000

_FACTS = (
    StkPush.id,
    StkPush.livemode,
    StkPush.phone_number,
    StkPush.amount,
    StkPush.status,
    StkPush.account_reference,
    StkPush.created_at,
    StkPush.resolved_at,
    StkPush.updated_at,
)


def recent_pushes(tenant_id: str, since: datetime, until: datetime) -> Iterator[PushFacts]:
    """The tenant's pushes created in [since, until], oldest first (created_at, then id),
    streamed in batches. Reads in the tenant's own scope: call it with no transaction open."""
    statement = (
        select(*_FACTS)
        .where(StkPush.created_at >= since, StkPush.created_at <= until)
        .order_by(StkPush.created_at, StkPush.id)
    )
    with tenant_scope(tenant_id):
        rows = db.session.execute(statement, execution_options={"yield_per": BATCH_SIZE})
        for row in rows:
            yield _facts(row)


def push_facts(tenant_id: str, push_id: str) -> PushFacts | None:
    """One push of the tenant, or None, read in the caller's transaction (a platform one:
    the tenant's table is named by its schema, no tenant scope is entered)."""
    row = db.session.execute(
        select(*_FACTS).where(StkPush.id == push_id),
        execution_options={"schema_translate_map": {None: schema_name_for(tenant_id)}},
    ).one_or_none()
    return None if row is None else _facts(row)


def _facts(row) -> PushFacts:
    return PushFacts(
        id=row.id,
        livemode=row.livemode,
        phone_number=row.phone_number,
        amount=row.amount,
        status=row.status.value,
        account_reference=row.account_reference,
        created_at=row.created_at,
        resolved_at=row.resolved_at,
        updated_at=row.updated_at,
    )


reader = PushReader(recent=recent_pushes, one=push_facts)
