"""The usage ledger: every push counted against a plan, appended and never changed or deleted.

Each tenant's ledger is its schema's `usage_records`. An entry is a count (`usage`, +1) or a
reversal (`reversal`, -1: the push never left Lango, so it is not billed). A push's entries
form one chain: its first entry is a count, and every later entry reverses the one before it
— a release reverses the count, and a push counted again after a release reverses that
reversal. Two unique indexes keep the chain exact under any concurrency, without reading
first: one first entry per push, and at most one entry reversing any entry. So a push's
entries sum to 0 or 1, and appending the same step twice (or concurrently) appends it once.

What a tenant used in a period is the sum of its entries there. Usage, invoices and the drift
check read that sum; the quota counter (public.usage_counters, billing.quota) is the cache the
quota check reads, changed in the same transaction as each entry.

Appends run in the tenant's scope, in the push's own transaction. Reads name the tenant's
schema, so they work from any scope: a paid upgrade invoices the paying tenant from the
billing tenant's event handler (billing.invoices).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from sqlalchemy import text

from billing.models import UsageKind, UsageRecord
from core.extensions import db
from core.ids import new_id
from core.tenancy import quote_schema, require_tenant, schema_name_for


@dataclass(frozen=True)
class Reversal:
    """Where a reversal took its count back: the counter to decrement."""

    livemode: bool
    period_start: datetime


def count(stk_push_id: str, livemode: bool, period_start: datetime) -> None:
    """Append a push's first entry, in the caller's transaction and tenant scope (flushed
    with it). A second first entry for one push violates the ledger's unique index."""
    require_tenant()
    db.session.add(
        UsageRecord(
            id=new_id("use"),
            stk_push_id=stk_push_id,
            livemode=livemode,
            period_start=period_start,
            created_at=datetime.now(UTC),
            kind=UsageKind.USAGE,
            quantity=1,
        )
    )


def reverse(stk_push_id: str) -> Reversal | None:
    """Append a reversal of the push's standing count, in the caller's transaction and tenant
    scope; it belongs to the count's period. Idempotent and exact under concurrency: the
    unique `reverses_id` lets one reversal per count in, a concurrent second one waits for
    the first to commit and then appends nothing. Returns None when no count was standing."""
    require_tenant()
    reversed_ = db.session.execute(
        text(
            "INSERT INTO usage_records (id, stk_push_id, livemode, period_start, created_at, "
            "kind, quantity, reverses_id) "
            "SELECT :id, standing.stk_push_id, standing.livemode, standing.period_start, "
            ":created_at, 'reversal', -1, standing.id FROM usage_records standing "
            "WHERE standing.stk_push_id = :stk_push_id AND standing.kind = 'usage' "
            "AND NOT EXISTS (SELECT 1 FROM usage_records later "
            "WHERE later.reverses_id = standing.id) "
            "ON CONFLICT (reverses_id) DO NOTHING RETURNING livemode, period_start"
        ),
        {"id": new_id("use"), "stk_push_id": stk_push_id, "created_at": datetime.now(UTC)},
    ).one_or_none()
    return None if reversed_ is None else Reversal(reversed_.livemode, reversed_.period_start)


def count_again(stk_push_id: str, livemode: bool, period_start: datetime) -> bool:
    """Count a push whose entries sum to 0 (its count was reversed; or it was released before
    the ledger kept reversals, leaving no entry) in `period_start`'s period, in the caller's
    transaction and tenant scope: the entry reverses the push's last reversal, or is its
    first. Idempotent and exact under concurrency (the unique indexes). Returns True when it
    appended the entry."""
    require_tenant()
    appended = db.session.execute(
        text(
            "INSERT INTO usage_records (id, stk_push_id, livemode, period_start, created_at, "
            "kind, quantity, reverses_id) "
            "SELECT :id, CAST(:stk_push_id AS varchar), :livemode, :period_start, :created_at, "
            "'usage', 1, "
            "(SELECT last.id FROM usage_records last WHERE last.stk_push_id = :stk_push_id "
            "AND NOT EXISTS (SELECT 1 FROM usage_records later "
            "WHERE later.reverses_id = last.id)) "
            "WHERE (SELECT coalesce(sum(quantity), 0) FROM usage_records "
            "WHERE stk_push_id = :stk_push_id) = 0 "
            "ON CONFLICT DO NOTHING RETURNING id"
        ),
        {
            "id": new_id("use"),
            "stk_push_id": stk_push_id,
            "livemode": livemode,
            "period_start": period_start,
            "created_at": datetime.now(UTC),
        },
    ).one_or_none()
    return appended is not None


def ledger_table(tenant_id: str) -> str:
    """The tenant's ledger by its schema-qualified name (checked and quoted), for reads."""
    return f"{quote_schema(schema_name_for(tenant_id))}.usage_records"


def period_totals(tenant_id: str, period_start: datetime) -> dict[bool, int]:
    """What the tenant used in the period, by mode (True: live): the sum of its entries
    there. Read-only, from any scope."""
    rows = db.session.execute(
        text(
            "SELECT livemode, sum(quantity) FROM "  # noqa: S608 (a checked, quoted schema)
            f"{ledger_table(tenant_id)} WHERE period_start = :period_start GROUP BY livemode"
        ),
        {"period_start": period_start},
    ).all()
    return {livemode: int(total) for livemode, total in rows}


def daily_totals(tenant_id: str, period_start: datetime) -> dict[tuple[date, bool], int]:
    """What the tenant used in the period per UTC day and mode: each count on the day it was
    counted, and a reversal on the day of the count it takes back (a released push counted
    on no day). Read-only, from any scope."""
    ledger = ledger_table(tenant_id)
    rows = db.session.execute(
        text(
            "SELECT date(timezone('UTC', coalesce(counted.created_at, entry.created_at))), "  # noqa: S608 (a checked, quoted schema)
            f"entry.livemode, sum(entry.quantity) FROM {ledger} entry "
            f"LEFT JOIN {ledger} counted ON entry.kind = 'reversal' "
            "AND counted.id = entry.reverses_id "
            "WHERE entry.period_start = :period_start GROUP BY 1, 2"
        ),
        {"period_start": period_start},
    ).all()
    return {(day, livemode): int(total) for day, livemode, total in rows}
