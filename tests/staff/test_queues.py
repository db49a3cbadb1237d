"""`lango queues`: queue depths, the oldest due webhook delivery, and each outbox subscriber's
lag (what it still owes and since when), read from every tenant's schema."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core import crypto
from core.events import EventType, record_event, subscribers
from core.extensions import db
from core.ids import new_id
from core.outbox import dispatch
from core.unit_of_work import tenant_unit_of_work
from staff.cli import queues
from webhooks import signing
from webhooks.models import WebhookEndpoint

HEADER = "queue        queued  started  scheduled   failed"
LAG_HEADER = "subscriber                pending  retrying     oldest"


def run_queues(app) -> str:
    db.session.remove()  # the command reads every tenant afresh, as from a shell
    result = app.test_cli_runner().invoke(queues)
    assert result.exit_code == 0, result.output
    return result.output


def lag_rows(output: str) -> dict[str, list[str]]:
    """The subscriber section as {name: [pending, retrying, oldest]}."""
    section = output.split(LAG_HEADER + "\n", 1)[1]
    rows = {}
    for line in section.splitlines():
        name, pending, retrying, *oldest = line.split()
        rows[name] = [pending, retrying, " ".join(oldest)]
    return rows


def add_endpoint(tenant_id: str) -> None:
    now = datetime.now(UTC)
    with tenant_unit_of_work(tenant_id):
        db.session.add(
            WebhookEndpoint(
                id=new_id("we"),
                livemode=False,
                url="http://127.0.0.1:9/unused",
                enabled_events=["*"],
                enabled=True,
                secret_encrypted=crypto.encrypt(signing.new_secret()),
                created_at=now,
                updated_at=now,
            )
        )


def interested(type_: EventType) -> list[str]:
    return sorted(s.name for s in subscribers().values() if s.wants(type_))


def test_an_idle_platform_shows_empty_queues_and_no_lag(app, app_context, tenant):
    output = run_queues(app)

    lines = output.splitlines()
    assert lines[:4] == [
        HEADER,
        "webhooks          0        0          0        0",
        "default           0        0          0        0",
        "billing           0        0          0        0",
    ]
    assert lines[4] == "oldest due delivery: none"
    assert lines[5] == LAG_HEADER
    rows = lag_rows(output)
    assert sorted(rows) == sorted(subscribers())
    assert all(row == ["0", "0", "-"] for row in rows.values())


def test_each_subscriber_shows_what_it_still_owes_and_how_late(app, app_context, tenant_factory):
    first, second = tenant_factory("Lag A"), tenant_factory("Lag B")
    for tenant_id, minutes in ((first.id, 2), (second.id, 5)):
        with tenant_unit_of_work(tenant_id):
            event = record_event(EventType.PAYMENT_SUCCEEDED, {"object": {}}, livemode=False)
            event.created_at = datetime.now(UTC) - timedelta(minutes=minutes)
    owed = interested(EventType.PAYMENT_SUCCEEDED)
    assert owed, "no subscriber wants payment.succeeded"

    rows = lag_rows(run_queues(app))

    for name in owed:  # one event owed per tenant, the older one five minutes old
        pending, retrying, oldest = rows[name]
        assert (pending, retrying) == ("2", "0")
        assert 300 <= int(oldest.removesuffix(" s")) < 360
    for name in set(rows) - set(owed):
        assert rows[name] == ["0", "0", "-"]


def test_queues_command_still_shows_the_oldest_due_delivery(app, app_context, tenant):
    add_endpoint(tenant.id)
    with tenant_unit_of_work(tenant.id):
        record_event(EventType.PAYMENT_SUCCEEDED, {"object": {}}, livemode=False)
    dispatch(tenant.id)  # the fan-out makes the delivery, due now
    app.extensions["lango.redis"].flushdb()  # its job is lost: due, and not sent

    output = run_queues(app)

    assert "oldest due delivery: 20" in output and tenant.id in output
    assert all(row[0] == "0" for row in lag_rows(output).values())  # every event handed over
