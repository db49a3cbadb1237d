"""Usage metering: the period's numbers and daily series, and the drift check behind them."""

import logging
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from rq import Queue, SimpleWorker
from sqlalchemy import text

from billing.jobs import check_usage_drift
from billing.quota import reserve
from core.extensions import db
from core.ids import new_id
from core.tenancy import tenant_scope
from tests.billing.test_ledger import count_pushes
from tests.billing.test_plans import added_plans
from tests.billing.test_subscription import upgrade
from tests.payments.test_stk_push import STKPUSHES, push_body

USAGE = "/v1/usage"


@pytest.fixture
def extra_plans(app):
    with added_plans(app) as add:
        yield add


def _reserve(app, tenant_id, *, live: bool, count: int) -> None:
    """Count pushes exactly as POST /v1/stk-pushes does (live ones need no Daraja here)."""
    with app.app_context(), tenant_scope(tenant_id):
        for _ in range(count):
            reserve(tenant_id, live, new_id("stk"))
        db.session.commit()


def _today() -> str:
    return datetime.now(UTC).date().isoformat()


def test_usage_counts_real_test_pushes_and_live_pushes_with_overage(
    platform, app, api, tenant, extra_plans
):
    extra_plans("metered", monthly_price=100, included_pushes=2, overage_price=7)
    upgrade(app, api, "metered")
    for _ in range(3):
        assert api.post(STKPUSHES, json=push_body()).status_code == 202
    _reserve(app, tenant.id, live=True, count=5)

    response = api.get(USAGE)

    assert response.status_code == 200
    usage = response.get_json()
    subscription = api.get("/v1/subscription").get_json()
    assert usage["object"] == "usage" and usage["plan"] == "metered"
    assert usage["period_start"] == subscription["current_period_start"]
    assert usage["period_end"] == subscription["current_period_end"]
    assert (usage["used"], usage["included"], usage["overage"]) == (5, 2, 3)
    # The upgrade invoice paid this period's fee in advance: only overage is still to bill.
    assert usage["projected_charge"] == 3 * 7
    assert (usage["test_mode_used"], usage["test_allowance"]) == (3, 1000)
    assert usage["daily"] == [{"date": _today(), "live": 5, "test": 3}]


def test_a_hard_cap_plan_never_projects_overage(app, api, tenant, extra_plans):
    extra_plans("capped", monthly_price=500, included_pushes=2, overage_price=None)
    upgrade(app, api, "capped")
    _reserve(app, tenant.id, live=True, count=2)
    # e.g. left over from a dearer plan earlier in the period
    count_pushes(app, tenant.id, None, 7, live=True)

    usage = api.get(USAGE).get_json()

    assert (usage["used"], usage["included"], usage["overage"]) == (9, 2, 0)
    assert usage["projected_charge"] == 0  # its fee was the upgrade invoice, paid up front


def test_a_period_billed_in_arrears_projects_its_monthly_price(app, api, tenant, extra_plans):
    from tests.billing.test_periods import bill_on

    extra_plans("metered", monthly_price=100, included_pushes=2, overage_price=7)
    bill_on(app, tenant.id, "metered", used=3)

    assert api.get(USAGE).get_json()["projected_charge"] == 100 + 7


def test_a_new_tenant_has_used_nothing(api):
    usage = api.get(USAGE).get_json()

    assert (usage["used"], usage["overage"], usage["projected_charge"]) == (0, 0, 0)
    assert usage["test_mode_used"] == 0
    assert usage["daily"] == [{"date": _today(), "live": 0, "test": 0}]


def test_the_daily_series_runs_from_the_period_start_to_today_with_zeros(app, api, tenant):
    now = datetime.now(UTC)
    with app.app_context():
        db.session.execute(
            text(
                "UPDATE public.subscriptions SET current_period_start = :start WHERE tenant_id = :t"
            ),
            {"t": tenant.id, "start": now - timedelta(days=3)},
        )
        db.session.commit()
    _reserve(app, tenant.id, live=False, count=3)
    with app.app_context(), tenant_scope(tenant.id):
        db.session.execute(
            text(
                "UPDATE usage_records SET created_at = :then "
                "WHERE id = (SELECT min(id) FROM usage_records)"
            ),
            {"then": now - timedelta(days=2)},
        )
        db.session.commit()

    daily = api.get(USAGE).get_json()["daily"]

    days = [(now - timedelta(days=n)).date().isoformat() for n in (3, 2, 1, 0)]
    assert daily == [
        {"date": days[0], "live": 0, "test": 0},
        {"date": days[1], "live": 0, "test": 1},
        {"date": days[2], "live": 0, "test": 0},
        {"date": days[3], "live": 0, "test": 2},
    ]


def test_the_drift_check_reports_injected_drift_and_changes_nothing(
    app, tenant_factory, extra_plans, caplog
):
    extra_plans("metered", monthly_price=100, included_pushes=2, overage_price=7)
    inflated, missing, healthy = tenant_factory(), tenant_factory(), tenant_factory()
    with app.app_context():
        db.session.execute(
            text("UPDATE public.subscriptions SET plan_code = 'metered' WHERE tenant_id = :t"),
            {"t": missing.id},
        )
        db.session.commit()
    _reserve(app, inflated.id, live=False, count=2)
    _reserve(app, missing.id, live=True, count=3)
    _reserve(app, healthy.id, live=False, count=4)
    with app.app_context():
        db.session.execute(
            text("UPDATE public.usage_counters SET used = used + 3 WHERE tenant_id = :t"),
            {"t": inflated.id},
        )
        db.session.commit()
        with tenant_scope(missing.id):
            db.session.execute(
                text("DELETE FROM usage_records WHERE id = (SELECT min(id) FROM usage_records)")
            )
            db.session.commit()
    caplog.set_level(logging.ERROR, logger="lango.billing.jobs")
    redis = app.extensions["lango.redis"]
    queue = Queue("billing", connection=redis)

    job = queue.enqueue(check_usage_drift)
    with app.app_context():
        SimpleWorker([queue], connection=redis).work(burst=True)

    assert job.get_status(refresh=True) == "finished", job.latest_result()
    result = job.return_value()
    assert result["tenants"] == 3 and result["failed"] == 0
    found = {(d["tenant_id"], d["mode"], d["counter"], d["records"]) for d in result["drifts"]}
    assert found == {(inflated.id, "test", 5, 2), (missing.id, "live", 3, 2)}
    logged = [r for r in caplog.records if r.getMessage() == "billing.usage_drift"]
    assert {(r.tenant_id, r.mode) for r in logged} == {(inflated.id, "test"), (missing.id, "live")}
    with app.app_context():  # reported, not "fixed"
        counters = dict(
            db.session.execute(
                text(
                    "SELECT tenant_id, used FROM public.usage_counters WHERE tenant_id IN (:a, :b)"
                ),
                {"a": inflated.id, "b": missing.id},
            ).all()
        )
        db.session.rollback()
    assert counters == {inflated.id: 5, missing.id: 3}


def test_real_pushes_leave_no_drift(platform, app, api, tenant):
    for phone in (None, "254700001001", None):  # the refused one is released
        api.post(STKPUSHES, json=push_body(phone))

    with app.app_context():
        result = check_usage_drift()

    assert result == {"tenants": 1, "drifts": [], "failed": 0}
    assert api.get(USAGE).get_json()["test_mode_used"] == 2


def test_the_scheduler_runs_the_drift_check_every_ten_minutes(app, monkeypatch):
    from flask.cli import ScriptInfo
    from rq.cron import CronScheduler

    from core.cli import main

    registered = []
    monkeypatch.setattr(CronScheduler, "start", lambda self: registered.extend(self.get_jobs()))

    result = CliRunner().invoke(main, ["scheduler"], obj=ScriptInfo(create_app=lambda: app))

    assert result.exit_code == 0, result.output
    drift = [job for job in registered if job.func_name == "billing.jobs.check_usage_drift"]
    assert len(drift) == 1
    assert (drift[0].interval, drift[0].queue_name) == (600, "billing")
