"""Period close: one invoice per period whatever runs it how often, exact overage, the
period-end plan change, and overage handed to Stripe exactly once."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from billing import periods
from billing.jobs import close_billing_periods
from billing.models import Invoice, Subscription
from billing.subscriptions import add_months
from core.extensions import db
from core.unit_of_work import tenant_unit_of_work, unit_of_work
from tests.billing.test_ledger import count_pushes

# A fixed past period, so `now` decides everything and nothing depends on the clock.
PERIOD_START = datetime(2026, 1, 31, 9, 30, tzinfo=UTC)
PERIOD_END = add_months(PERIOD_START, 1)  # 2026-02-28 09:30
AFTER_END = PERIOD_END + timedelta(minutes=5)


def bill_on(app, tenant_id, plan_code, *, used=0, start=PERIOD_START, **subscription):
    """Put the tenant on `plan_code` for the period [start, add_months(start, 1)) with `used`
    live pushes counted; extra keywords set subscription columns."""
    values = {
        "plan": plan_code,
        "start": start,
        "end": add_months(start, 1),
        "t": tenant_id,
        **subscription,
    }
    extra = "".join(f", {column} = :{column}" for column in subscription)
    with app.app_context():
        db.session.execute(
            text(
                "UPDATE public.subscriptions SET plan_code = :plan, current_period_start = :start, "
                f"current_period_end = :end{extra} WHERE tenant_id = :t"
            ),
            values,
        )
        db.session.commit()
    if used:
        count_pushes(app, tenant_id, start, used, live=True)


def invoices_of(app, tenant_id) -> list[Invoice]:
    with app.app_context():
        rows = db.session.scalars(
            select(Invoice).where(Invoice.tenant_id == tenant_id).order_by(Invoice.period_start)
        ).all()
        db.session.expunge_all()
        return list(rows)


def subscription_of(app, tenant_id) -> Subscription:
    with app.app_context():
        subscription = db.session.scalar(
            select(Subscription).where(Subscription.tenant_id == tenant_id)
        )
        db.session.expunge_all()
        return subscription


def close(app, tenant_id, now=AFTER_END):
    with app.app_context(), tenant_unit_of_work(tenant_id):
        return periods.close_period(tenant_id, now=now)


class FakeStripe:
    """Stands in for billing.stripe_gateway: records invoice items, slowly, so concurrent
    closers really overlap."""

    def __init__(self, fail_times: int = 0, delay: float = 0.0):
        self.items: list[dict] = []
        self.fail_times = fail_times
        self.delay = delay
        self._lock = threading.Lock()

    def configured(self) -> bool:
        return True

    def add_invoice_item(self, customer_id, amount_kes, description, idempotency_key):
        time.sleep(self.delay)
        with self._lock:
            if self.fail_times:
                self.fail_times -= 1
                raise ConnectionError("stripe is down")
            self.items.append(
                {
                    "customer": customer_id,
                    "amount": amount_kes,
                    "description": description,
                    "idempotency_key": idempotency_key,
                }
            )
            return {"id": f"ii_{len(self.items)}", "object": "invoiceitem"}


@pytest.fixture
def fake_stripe(monkeypatch):
    gateway = FakeStripe(delay=0.2)
    monkeypatch.setattr(periods, "stripe_gateway", lambda: gateway)
    return gateway


@pytest.fixture
def hard_cap_plan(app):
    """A paid plan whose allowance is a hard cap (no overage price)."""
    with app.app_context():
        db.session.execute(
            text(
                "INSERT INTO public.plans (code, name, monthly_price, included_pushes, "
                "overage_price, rate_limit, max_webhook_endpoints, livemode_allowed, "
                "test_allowance, active, position) VALUES ('capped_paid', 'Capped', 1500, 500, "
                "NULL, '50 per second', 1, true, 1000, true, 98)"
            )
        )
        db.session.commit()
    yield "capped_paid"
    with app.app_context():
        db.session.execute(
            text(
                "UPDATE public.subscriptions SET plan_code = 'sandbox', pending_plan_code = NULL "
                "WHERE plan_code = 'capped_paid' OR pending_plan_code = 'capped_paid'"
            )
        )
        db.session.execute(text("DELETE FROM public.plans WHERE code = 'capped_paid'"))
        db.session.commit()


def test_close_writes_the_invoice_and_opens_the_next_period(app, tenant):
    bill_on(app, tenant.id, "starter", used=1_200)  # 1,000 included, KES 3 per extra push

    invoice_id = close(app, tenant.id)

    [invoice] = invoices_of(app, tenant.id)
    assert invoice.id == invoice_id and invoice.id.startswith("inv_")
    assert (invoice.period_start, invoice.period_end) == (PERIOD_START, PERIOD_END)
    assert (invoice.plan_code, invoice.base_fee, invoice.included_pushes) == ("starter", 2500, 1000)
    assert (invoice.used_pushes, invoice.overage_pushes, invoice.overage_amount) == (1200, 200, 600)
    assert invoice.total == 3100
    assert invoice.status.value == "open" and invoice.paid_at is None
    assert invoice.due_at == PERIOD_END
    assert [(line["type"], line["quantity"], line["amount"]) for line in invoice.lines] == [
        ("base_fee", 1, 2500),
        ("overage", 200, 600),
    ]
    subscription = subscription_of(app, tenant.id)
    assert subscription.current_period_start == PERIOD_END
    assert subscription.current_period_end == datetime(2026, 3, 28, 9, 30, tzinfo=UTC)


def test_only_live_pushes_of_the_period_are_billed(app, tenant):
    bill_on(app, tenant.id, "starter", used=1_010)
    # Test-mode pushes and the previous period's live pushes are not this invoice's.
    count_pushes(app, tenant.id, PERIOD_START, 5000, live=False)
    count_pushes(app, tenant.id, PERIOD_START - timedelta(days=31), 9000, live=True)

    close(app, tenant.id)

    [invoice] = invoices_of(app, tenant.id)
    assert (invoice.used_pushes, invoice.overage_pushes, invoice.total) == (1010, 10, 2530)


def test_usage_within_the_allowance_bills_the_base_fee_only(app, tenant):
    bill_on(app, tenant.id, "growth", used=9_999)

    close(app, tenant.id)

    [invoice] = invoices_of(app, tenant.id)
    assert (invoice.overage_pushes, invoice.overage_amount, invoice.total) == (0, 0, 10_000)
    assert [line["type"] for line in invoice.lines] == ["base_fee"]


def test_hard_cap_plan_never_bills_overage(app, tenant, hard_cap_plan):
    # More than included can be counted on a hard-cap plan only by accident (e.g. a plan
    # switched mid-period); it is still never billed as overage.
    bill_on(app, tenant.id, hard_cap_plan, used=800)

    close(app, tenant.id)

    [invoice] = invoices_of(app, tenant.id)
    assert (invoice.used_pushes, invoice.overage_pushes, invoice.overage_amount) == (800, 0, 0)
    assert invoice.total == 1500


def test_a_free_period_is_invoiced_as_paid(app, tenant):
    bill_on(app, tenant.id, "sandbox")

    close(app, tenant.id)

    [invoice] = invoices_of(app, tenant.id)
    assert invoice.total == 0
    assert invoice.status.value == "paid" and invoice.paid_at == AFTER_END


def test_a_period_not_yet_ended_is_left_alone(app, tenant):
    bill_on(app, tenant.id, "starter", used=5)

    assert close(app, tenant.id, now=PERIOD_END - timedelta(seconds=1)) is None

    assert invoices_of(app, tenant.id) == []
    assert subscription_of(app, tenant.id).current_period_start == PERIOD_START


def test_closing_twice_yields_one_invoice_and_one_stripe_item(app, tenant, fake_stripe):
    bill_on(app, tenant.id, "starter", used=1_100, stripe_customer_id="cus_123")

    with app.app_context():
        first = periods.close_due_periods(now=AFTER_END)
        second = periods.close_due_periods(now=AFTER_END)
        # Even asking Stripe again directly adds nothing.
        assert periods.add_overage_to_stripe(first.closed[0]) is False

    assert len(first.closed) == 1 and second.closed == []
    [invoice] = invoices_of(app, tenant.id)
    assert fake_stripe.items == [
        {
            "customer": "cus_123",
            "amount": 300,
            "description": fake_stripe.items[0]["description"],
            "idempotency_key": f"overage-{tenant.id}-2026-01-31T09:30:00+00:00",
        }
    ]
    assert invoice.stripe_overage_item_id == "ii_1"


def test_concurrent_closes_yield_one_invoice_and_one_stripe_item(app, tenant_factory, fake_stripe):
    tenants = [tenant_factory() for _ in range(3)]
    for made in tenants:
        bill_on(app, made.id, "starter", used=1_001, stripe_customer_id=f"cus_{made.id}")
    reports, errors = [], []
    barrier = threading.Barrier(4)

    def run_close():
        try:
            with app.app_context():
                barrier.wait()
                reports.append(periods.close_due_periods(now=AFTER_END))
        except Exception as error:  # surfaced below
            errors.append(error)

    workers = [threading.Thread(target=run_close) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)

    assert errors == []
    assert sum(len(report.closed) for report in reports) == 3
    assert sum(report.stripe_items for report in reports) == 3
    for made in tenants:
        [invoice] = invoices_of(app, made.id)
        assert invoice.total == 2503
    customers = sorted(item["customer"] for item in fake_stripe.items)
    assert customers == sorted(f"cus_{made.id}" for made in tenants)


def test_overage_stripe_could_not_take_is_added_by_the_next_run(app, tenant, monkeypatch):
    gateway = FakeStripe(fail_times=1)
    monkeypatch.setattr(periods, "stripe_gateway", lambda: gateway)
    bill_on(app, tenant.id, "starter", used=1_050, stripe_customer_id="cus_9")

    with app.app_context():
        failed = periods.close_due_periods(now=AFTER_END)
        retried = periods.close_due_periods(now=AFTER_END)

    assert (failed.stripe_errors, failed.stripe_items) == (1, 0)
    assert (retried.stripe_errors, retried.stripe_items) == (0, 1)
    assert len(gateway.items) == 1 and gateway.items[0]["amount"] == 150
    assert invoices_of(app, tenant.id)[0].stripe_overage_item_id == "ii_1"


def test_no_stripe_item_without_a_stripe_customer_or_overage(app, tenant_factory, fake_stripe):
    no_customer, no_overage = tenant_factory(), tenant_factory()
    bill_on(app, no_customer.id, "starter", used=1_500)
    bill_on(app, no_overage.id, "starter", used=10, stripe_customer_id="cus_2")

    with app.app_context():
        report = periods.close_due_periods(now=AFTER_END)

    assert len(report.closed) == 2 and report.stripe_items == 0
    assert fake_stripe.items == []


def test_without_stripe_billing_runs_on_lango_invoices_alone(app, tenant):
    bill_on(app, tenant.id, "starter", used=1_100, stripe_customer_id="cus_1")

    with app.app_context():
        assert periods.stripe_gateway() is None  # STRIPE_API_KEY is not set in tests
        report = periods.close_due_periods(now=AFTER_END)

    assert len(report.closed) == 1 and report.stripe_items == 0
    assert invoices_of(app, tenant.id)[0].stripe_overage_item_id is None


def test_pending_downgrade_applies_at_close(app, tenant):
    bill_on(app, tenant.id, "growth", used=12_000, pending_plan_code="starter")

    close(app, tenant.id)

    [invoice] = invoices_of(app, tenant.id)
    # The closed period is billed on the plan it ran on.
    assert (invoice.plan_code, invoice.total) == ("growth", 10_000 + 2_000 * 2)
    subscription = subscription_of(app, tenant.id)
    assert (subscription.plan_code, subscription.pending_plan_code) == ("starter", None)
    with app.app_context():
        plan = db.session.scalar(
            text("SELECT plan FROM public.tenants WHERE id = :t"), {"t": tenant.id}
        )
    assert plan == "starter"


def test_cancellation_at_period_end_moves_the_tenant_to_the_free_plan(app, tenant):
    bill_on(app, tenant.id, "starter", cancel_at_period_end=True)

    close(app, tenant.id)

    assert invoices_of(app, tenant.id)[0].total == 2500  # the period it used is still billed
    subscription = subscription_of(app, tenant.id)
    assert subscription.status.value == "canceled"
    assert (subscription.plan_code, subscription.cancel_at_period_end) == ("sandbox", False)
    # Later periods cost nothing.
    close(app, tenant.id, now=add_months(AFTER_END, 1))
    assert [invoice.total for invoice in invoices_of(app, tenant.id)] == [2500, 0]


def test_periods_missed_while_the_scheduler_was_down_are_each_closed(app, tenant):
    bill_on(app, tenant.id, "starter", used=1_001)

    with app.app_context():
        report = periods.close_due_periods(now=add_months(PERIOD_END, 2) + timedelta(hours=1))

    invoices = invoices_of(app, tenant.id)
    assert len(report.closed) == 3
    assert [invoice.period_start for invoice in invoices] == [
        PERIOD_START,
        PERIOD_END,
        add_months(PERIOD_END, 1),
    ]
    assert [invoice.total for invoice in invoices] == [2503, 2500, 2500]
    assert subscription_of(app, tenant.id).current_period_start == add_months(PERIOD_END, 2)


def test_the_scheduled_job_closes_periods_that_have_ended(app, tenant):
    bill_on(app, tenant.id, "starter", start=datetime.now(UTC) - timedelta(days=40))

    with app.app_context():
        result = close_billing_periods()
        again = close_billing_periods()

    assert len(result["closed"]) == 1 and again["closed"] == []
    assert len(invoices_of(app, tenant.id)) == 1


def test_the_scheduler_registers_period_close_and_dunning(app, monkeypatch):
    from rq.cron import CronScheduler

    from core.cli import scheduler

    registered = []
    monkeypatch.setattr(
        CronScheduler,
        "register",
        lambda self, func, queue_name, **options: registered.append((func.__name__, queue_name)),
    )
    monkeypatch.setattr(CronScheduler, "start", lambda self: None)

    result = app.test_cli_runner().invoke(scheduler)

    assert result.exit_code == 0, result.output
    assert ("close_billing_periods", "billing") in registered
    assert ("suspend_overdue_tenants", "billing") in registered


# --- upgrades paid up front ------------------------------------------------------------


def _await_upgrade(app, tenant_id, plan_code) -> str:
    from billing.subscriptions import awaited_upgrade, update_subscription

    with app.app_context(), unit_of_work():
        update_subscription(tenant_id, actor_key_id=None, plan=plan_code)
        return awaited_upgrade(tenant_id).id


def _pay(app, invoice_id, amount, now) -> None:
    from billing.invoices import mark_invoice_paid

    with app.app_context():
        assert mark_invoice_paid(invoice_id, amount=amount, livemode=False, now=now)
        db.session.commit()


def test_a_paid_upgrade_bills_the_cut_period_pro_rata_and_its_fee_only_once(app, tenant):
    bill_on(app, tenant.id, "starter", used=1_200)
    upgrade_id = _await_upgrade(app, tenant.id, "growth")
    halfway = PERIOD_START + (PERIOD_END - PERIOD_START) / 2

    _pay(app, upgrade_id, 10_000, halfway)

    subscription = subscription_of(app, tenant.id)
    growth_end = add_months(halfway, 1)
    assert subscription.plan_code == "growth"
    assert (subscription.current_period_start, subscription.current_period_end) == (
        halfway,
        growth_end,
    )
    cut, upgrade = invoices_of(app, tenant.id)
    # The starter period ends when the upgrade was paid: half its fee, and its overage.
    assert (cut.kind.value, cut.plan_code, cut.period_start, cut.period_end) == (
        "period",
        "starter",
        PERIOD_START,
        halfway,
    )
    assert (cut.base_fee, cut.overage_amount, cut.total, cut.status.value) == (
        1_250,
        600,
        1_850,
        "open",
    )
    assert (upgrade.kind.value, upgrade.status.value, upgrade.total) == ("upgrade", "paid", 10_000)
    assert (upgrade.period_start, upgrade.period_end) == (halfway, growth_end)

    # The growth month closes: its fee was the upgrade invoice; only overage is billed.
    count_pushes(app, tenant.id, halfway, 10_500, live=True)
    prepaid_close = close(app, tenant.id, now=growth_end + timedelta(minutes=5))
    closed = next(i for i in invoices_of(app, tenant.id) if i.id == prepaid_close)
    assert (closed.base_fee, closed.overage_amount, closed.total) == (0, 1_000, 1_000)
    assert upgrade_id in closed.lines[0]["description"]
    growth_fees = [i.base_fee for i in invoices_of(app, tenant.id) if i.plan_code == "growth"]
    assert sum(growth_fees) == 10_000

    # The month after is billed in arrears as usual.
    next_close = close(app, tenant.id, now=add_months(halfway, 2) + timedelta(minutes=5))
    following = next(i for i in invoices_of(app, tenant.id) if i.id == next_close)
    assert (following.base_fee, following.total) == (10_000, 10_000)


def test_an_upgrade_paid_after_the_period_ended_closes_that_period_in_full_first(app, tenant):
    bill_on(app, tenant.id, "starter")
    upgrade_id = _await_upgrade(app, tenant.id, "scale")
    paid_at = PERIOD_END + timedelta(days=3)

    _pay(app, upgrade_id, 40_000, paid_at)

    period_invoices = [i for i in invoices_of(app, tenant.id) if i.kind.value == "period"]
    assert [(i.period_start, i.period_end, i.base_fee) for i in period_invoices] == [
        (PERIOD_START, PERIOD_END, 2_500),  # the whole starter period
        (PERIOD_END, paid_at, 2_500 * 3 // 28),  # 3 days of the next one, Feb 28 to Mar 28
    ]
    subscription = subscription_of(app, tenant.id)
    assert (subscription.plan_code, subscription.current_period_start) == ("scale", paid_at)


def test_an_unpaid_upgrade_invoice_never_suspends(app, tenant):
    from billing import dunning

    upgrade_id = _await_upgrade(app, tenant.id, "growth")

    with app.app_context():
        suspended = dunning.suspend_overdue_tenants(now=datetime.now(UTC) + timedelta(days=90))
        db.session.commit()

    assert tenant.id not in suspended
    with app.app_context():
        assert db.session.get(Invoice, upgrade_id).status.value == "open"
        db.session.rollback()
