"""What the dashboard shows about STK pushes: a day's figures, the latest pushes, one push
with everything known about it, the filtered list and its CSV. Read-only; every function
runs in the tenant's scope and reads one mode (test or live) only.

Days are East Africa Time days: a push at 23:30 EAT belongs to that day, not the next.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import Select, func, select

from compliance.fraud import PushReviewCase, review_case_of_push
from core.extensions import db
from core.tenancy import require_tenant, tenant_scope
from payments import service
from payments.models import MpesaCallback, PushStatus, StkPush
from payments.schemas import StkPushSchema
from payments.service import EAT

# The CSV columns, in order, of `GET /v1/stk-pushes/export` and the dashboard's export.
EXPORT_COLUMNS = (
    "id",
    "status",
    "livemode",
    "phone_number",
    "amount",
    "account_reference",
    "description",
    "mpesa_receipt_number",
    "result_code",
    "result_description",
    "created",
    "updated",
)
_CSV_CHUNK_BYTES = 16384


@dataclass(frozen=True)
class DaySummary:
    """Pushes created in one window: how many, how many succeeded and for how much (KES),
    how many have finished (any final status)."""

    created: int
    succeeded: int
    volume: int
    finished: int

    @property
    def success_rate(self) -> float | None:
        """Succeeded / finished; None before anything has finished."""
        return self.succeeded / self.finished if self.finished else None


def eat_day(day: date | None = None) -> tuple[datetime, datetime]:
    """[start, end) of an East Africa Time day (today by default), as aware UTC times."""
    day = day or datetime.now(EAT).date()
    start = datetime.combine(day, time.min, tzinfo=EAT)
    return start.astimezone(UTC), (start + timedelta(days=1)).astimezone(UTC)


def day_summary(*, livemode: bool, start: datetime, end: datetime) -> DaySummary:
    """The figures of pushes created in [start, end), in one aggregate query: an index range
    scan over that window's pushes (created_at), however many the tenant has in all."""
    require_tenant()
    succeeded = StkPush.status == PushStatus.SUCCEEDED
    row = db.session.execute(
        select(
            func.count(),
            func.count().filter(succeeded),
            func.coalesce(func.sum(StkPush.amount).filter(succeeded), 0),
            func.count().filter(StkPush.status != PushStatus.PENDING),
        ).where(
            StkPush.livemode == livemode,
            StkPush.created_at >= start,
            StkPush.created_at < end,
        )
    ).one()
    return DaySummary(created=row[0], succeeded=row[1], volume=int(row[2]), finished=row[3])


def recent_pushes(*, livemode: bool, limit: int = 10) -> list[StkPush]:
    """The newest pushes of a mode, newest first (ids are ULIDs: they sort by creation, and
    (livemode, id) is indexed)."""
    require_tenant()
    return list(
        db.session.scalars(
            select(StkPush)
            .where(StkPush.livemode == livemode)
            .order_by(StkPush.id.desc())
            .limit(limit)
        )
    )


def filtered_pushes_statement(
    *,
    livemode: bool,
    status: str | None = None,
    phone_number: str | None = None,
    created_gte: datetime | None = None,
    created_lte: datetime | None = None,
    amount_gte: int | None = None,
    amount_lte: int | None = None,
) -> Select:
    """The API's list filters (payments.service.list_pushes_statement) plus an amount range,
    for the dashboard's list and its CSV export."""
    statement = service.list_pushes_statement(
        livemode=livemode,
        status=status,
        phone_number=phone_number,
        created_gte=created_gte,
        created_lte=created_lte,
    )
    if amount_gte is not None:
        statement = statement.where(StkPush.amount >= amount_gte)
    if amount_lte is not None:
        statement = statement.where(StkPush.amount <= amount_lte)
    return statement


def pushes_csv(statement: Select, tenant_id: str) -> Iterator[str]:
    """The pushes `statement` selects as CSV (header first, newest first), in chunks.

    A generator for a streamed response: it runs after the request's tenant binding may be
    gone, so it enters `tenant_id`'s scope itself and reads in batches.
    """
    statement = statement.order_by(StkPush.id.desc()).execution_options(yield_per=500)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(EXPORT_COLUMNS)
    schema = StkPushSchema()
    with tenant_scope(tenant_id):
        for push in db.session.scalars(statement):
            item = schema.dump(push)
            writer.writerow([_csv_value(item[column]) for column in EXPORT_COLUMNS])
            if buffer.tell() > _CSV_CHUNK_BYTES:
                yield buffer.getvalue()
                buffer.seek(0)
                buffer.truncate()
    yield buffer.getvalue()


def _csv_value(value):
    """Booleans as the JSON API writes them (`true`/`false`), not as Python's `False`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


@dataclass(frozen=True)
class PushDetail:
    """One push with the raw Daraja callbacks about it (as received, oldest first) and the
    fraud review case it opened, if any."""

    push: StkPush
    callbacks: list[MpesaCallback]
    review_case: PushReviewCase | None


def push_detail(push_id: str, *, livemode: bool) -> PushDetail:
    """Raises NotFound for an id of another mode (another tenant's ids are not in this
    tenant's schema at all)."""
    tenant_id = require_tenant().tenant_id
    push = service.get_push(push_id, livemode=livemode)
    callbacks = list(
        db.session.scalars(
            select(MpesaCallback)
            .where(MpesaCallback.stk_push_id == push.id)
            .order_by(MpesaCallback.received_at, MpesaCallback.id)
        )
    )
    return PushDetail(push, callbacks, review_case_of_push(tenant_id, push.id))


def status_message(push: StkPush) -> dict:
    """What a live status stream sends about a push at each change."""
    return {
        "id": push.id,
        "status": push.status.value,
        "result_code": push.result_code,
        "result_desc": push.result_description,
        "mpesa_receipt_number": push.mpesa_receipt_number,
        "final": push.status.is_final,
    }
