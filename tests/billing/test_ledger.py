"""The usage ledger: releases append reversals and delete nothing, exactly once however often
and however concurrently they run, and usage, invoices and the drift check all read its sums."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import text

from billing import quota
from billing.usage import current_usage, usage_drift
from core.extensions import db
from core.ids import new_id
from core.tenancy import tenant_scope
from core.unit_of_work import tenant_unit_of_work


def count_pushes(app, tenant_id, period_start: datetime | None, used: int, *, live: bool):
    """Append `used` counts to the tenant's ledger in the period starting `period_start` (None:
    its current one), and add them to its quota counter, as that many reservations would."""
    with app.app_context(), tenant_unit_of_work(tenant_id):
        if period_start is None:
            period_start = db.session.scalar(
                text("SELECT current_period_start FROM public.subscriptions WHERE tenant_id = :t"),
                {"t": tenant_id},
            )
        db.session.execute(
            text(
                "INSERT INTO usage_records (id, stk_push_id, livemode, period_start, created_at, "
                "kind, quantity) SELECT 'use_' || md5(random()::text), "
                "'stk_' || md5(random()::text), :live, :start, :start, 'usage', 1 "
                "FROM generate_series(1, :used)"
            ),
            {"live": live, "start": period_start, "used": used},
        )
        db.session.execute(
            text(
                "INSERT INTO public.usage_counters VALUES (:t, :live, :start, :used) "
                "ON CONFLICT (tenant_id, livemode, period_start) "
                "DO UPDATE SET used = public.usage_counters.used + :used"
            ),
            {"t": tenant_id, "live": live, "start": period_start, "used": used},
        )


def _reserve(app, tenant_id, *, live: bool = False) -> str:
    push_id = new_id("stk")
    with app.app_context(), tenant_unit_of_work(tenant_id):
        quota.reserve(tenant_id, live, push_id)
    return push_id


def _release(app, tenant_id, push_id) -> bool:
    with app.app_context(), tenant_unit_of_work(tenant_id):
        return quota.release(tenant_id, push_id)


def _entries(app, tenant_id) -> list[tuple]:
    """(push, kind, quantity, the entry it reverses — by the push of that entry and its kind)."""
    with app.app_context(), tenant_scope(tenant_id):
        return [
            tuple(row)
            for row in db.session.execute(
                text(
                    "SELECT e.stk_push_id, e.kind, e.quantity, r.kind FROM usage_records e "
                    "LEFT JOIN usage_records r ON r.id = e.reverses_id ORDER BY e.created_at, e.id"
                )
            )
        ]


def _counter(app, tenant_id, *, live: bool = False) -> int:
    with app.app_context():
        used = db.session.scalar(
            text(
                "SELECT coalesce(sum(used), 0) FROM public.usage_counters WHERE tenant_id = :t "
                "AND livemode = :live"
            ),
            {"t": tenant_id, "live": live},
        )
        db.session.rollback()
        return used


def test_a_release_appends_a_reversal_and_deletes_nothing(app, tenant):
    kept, released = _reserve(app, tenant.id), _reserve(app, tenant.id)

    assert _release(app, tenant.id, released) is True

    assert _entries(app, tenant.id) == [
        (kept, "usage", 1, None),
        (released, "usage", 1, None),
        (released, "reversal", -1, "usage"),
    ]
    assert _counter(app, tenant.id) == 1


def test_releasing_twice_appends_one_reversal(app, tenant):
    push_id = _reserve(app, tenant.id)

    assert _release(app, tenant.id, push_id) is True
    assert _release(app, tenant.id, push_id) is False

    assert [kind for push, kind, _, _ in _entries(app, tenant.id)] == ["usage", "reversal"]
    assert _counter(app, tenant.id) == 0


def test_releasing_a_push_never_counted_appends_nothing(app, tenant):
    assert _release(app, tenant.id, "stk_never_counted") is False

    assert _entries(app, tenant.id) == []


def test_a_release_waiting_on_a_concurrent_one_appends_nothing(app, tenant):
    """The first release holds its transaction open; the second, started meanwhile, waits on
    the ledger's unique index and appends nothing once the first commits."""
    push_id = _reserve(app, tenant.id)
    first_released, let_first_commit = threading.Event(), threading.Event()
    results: dict[str, bool] = {}

    def first():
        with app.app_context(), tenant_unit_of_work(tenant.id):
            results["first"] = quota.release(tenant.id, push_id)
            first_released.set()
            let_first_commit.wait(10)

    def second():
        first_released.wait(10)
        results["second"] = _release(app, tenant.id, push_id)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    first_released.wait(10)
    threads[1].join(1)
    assert threads[1].is_alive(), "the second release should wait for the first to commit"
    let_first_commit.set()
    for thread in threads:
        thread.join(10)

    assert results == {"first": True, "second": False}
    assert [kind for _, kind, _, _ in _entries(app, tenant.id)] == ["usage", "reversal"]
    assert _counter(app, tenant.id) == 0


def test_concurrent_releases_append_one_reversal_per_push(app, tenant):
    pushes = [_reserve(app, tenant.id) for _ in range(5)]
    start = threading.Barrier(8)
    released: list[bool] = []
    lock = threading.Lock()

    def release_all():
        start.wait(10)
        for push_id in pushes:
            outcome = _release(app, tenant.id, push_id)
            with lock:
                released.append(outcome)

    threads = [threading.Thread(target=release_all) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert released.count(True) == 5 and released.count(False) == 35
    kinds = [kind for _, kind, _, _ in _entries(app, tenant.id)]
    assert (kinds.count("usage"), kinds.count("reversal")) == (5, 5)
    assert _counter(app, tenant.id) == 0


def test_concurrent_counts_again_append_one_count(app, tenant):
    push_id = _reserve(app, tenant.id)
    _release(app, tenant.id, push_id)
    start = threading.Barrier(6)
    counted: list[bool] = []

    def count_again():
        start.wait(10)
        with app.app_context(), tenant_unit_of_work(tenant.id):
            counted.append(quota.count_again(tenant.id, False, push_id))

    threads = [threading.Thread(target=count_again) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert sorted(counted) == [False] * 5 + [True]
    # Counted, released, counted again: each entry reverses the one before.
    assert _entries(app, tenant.id) == [
        (push_id, "usage", 1, None),
        (push_id, "reversal", -1, "usage"),
        (push_id, "usage", 1, "reversal"),
    ]
    assert _counter(app, tenant.id) == 1


def test_a_push_released_before_the_ledger_kept_reversals_is_counted_again(app, tenant):
    # Releases used to delete the push's only record.
    push_id = _reserve(app, tenant.id)
    with app.app_context(), tenant_unit_of_work(tenant.id):
        db.session.execute(text("DELETE FROM usage_records"))
        db.session.execute(
            text("UPDATE public.usage_counters SET used = 0 WHERE tenant_id = :t"),
            {"t": tenant.id},
        )

    with app.app_context(), tenant_unit_of_work(tenant.id):
        assert quota.count_again(tenant.id, False, push_id) is True
        assert quota.count_again(tenant.id, False, push_id) is False

    assert _entries(app, tenant.id) == [(push_id, "usage", 1, None)]
    assert _counter(app, tenant.id) == 1


def test_usage_the_drift_check_and_the_invoice_read_the_ledger_sum(app, tenant):
    from tests.billing.test_periods import PERIOD_START, bill_on, close, invoices_of

    bill_on(app, tenant.id, "starter", used=1_000)  # 1,000 included, KES 3 per extra push
    live = [_reserve(app, tenant.id, live=True) for _ in range(4)]
    test = [_reserve(app, tenant.id) for _ in range(3)]
    for push_id in (live[0], live[1], live[1], test[0]):
        _release(app, tenant.id, push_id)
    with app.app_context(), tenant_unit_of_work(tenant.id):
        quota.count_again(tenant.id, True, live[0])  # it reached Daraja after all

    with app.app_context(), tenant_scope(tenant.id):
        usage = current_usage(tenant.id)
        drift = usage_drift(tenant.id, PERIOD_START)
        db.session.rollback()
    assert (usage.used, usage.overage, usage.test_mode_used) == (1_003, 3, 2)
    assert (sum(day.live for day in usage.daily), sum(day.test for day in usage.daily)) == (
        1_003,
        2,
    )
    assert drift == []
    assert (_counter(app, tenant.id, live=True), _counter(app, tenant.id)) == (1_003, 2)

    close(app, tenant.id)

    [invoice] = invoices_of(app, tenant.id)
    assert (invoice.used_pushes, invoice.overage_pushes, invoice.overage_amount) == (1_003, 3, 9)


def test_a_released_push_counts_on_no_day(app, api, tenant):
    _reserve(app, tenant.id)
    _release(app, tenant.id, _reserve(app, tenant.id))

    usage = api.get("/v1/usage").get_json()

    today = datetime.now(UTC).date().isoformat()
    assert usage["test_mode_used"] == 1
    assert usage["daily"][-1] == {"date": today, "live": 0, "test": 1}
