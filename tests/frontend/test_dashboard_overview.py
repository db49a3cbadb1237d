"""Dashboard overview: today's figures (East Africa Time), usage against the plan with its
chart, the latest payments, and the empty state of a new tenant."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from payments import reports
from tests.conftest import ApiClient
from tests.frontend.conftest import HTML, member_page, post_form
from tests.payments.test_reports import DAY, DAY_START, insert_push
from tests.served import wait_for_status

ACCESS = [("/dashboard", member_page())]


def test_access(check_access):
    check_access(ACCESS)


@pytest.fixture
def fixed_today(monkeypatch):
    """The overview's "today" is DAY (20 Nov 2026, EAT), whatever the clock says."""
    real = reports.eat_day
    monkeypatch.setattr(reports, "eat_day", lambda day=None: real(day or DAY))
    return DAY_START


def stat(page: str, name: str) -> str:
    match = re.search(rf'data-stat="{name}">(.*?)</small>', page, re.S)
    assert match, f"no {name} figure"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip()


def test_todays_volume_and_success_rate_are_exact(app, sign_in, fixed_today):
    owner = sign_in("owner")
    at = fixed_today + timedelta(hours=9)
    for status, amount in [("succeeded", 1200), ("succeeded", 34), ("failed", 500)]:
        insert_push(app, owner.tenant.id, status=status, amount=amount, created_at=at)
    insert_push(app, owner.tenant.id, status="pending", amount=80, created_at=at)
    # 23:30 EAT the evening before: yesterday's, not today's.
    insert_push(app, owner.tenant.id, amount=9000, created_at=fixed_today - timedelta(minutes=30))
    insert_push(app, owner.tenant.id, amount=7000, created_at=at, livemode=True)

    page = owner.client.get("/dashboard", headers=HTML).get_data(as_text=True)

    assert "KES 1,234" in stat(page, "volume")
    assert "2 successful payments" in stat(page, "volume")
    assert stat(page, "success-rate").startswith("Success rate 67%")
    assert "2 of 3 finished" in stat(page, "success-rate")
    assert stat(page, "pushes").startswith("Pushes sent today 4 ")
    assert "1 still pending" in stat(page, "pushes")
    assert "KES 10,234" not in page and "KES 8,234" not in page


def test_live_mode_shows_live_figures_only(app, sign_in, fixed_today):
    owner = sign_in("owner")
    at = fixed_today + timedelta(hours=9)
    insert_push(app, owner.tenant.id, amount=300, created_at=at)
    live = insert_push(app, owner.tenant.id, amount=7000, created_at=at, livemode=True)
    post_form(owner.client, "/dashboard/mode", {"livemode": "on"})

    page = owner.client.get("/dashboard", headers=HTML).get_data(as_text=True)

    assert "KES 7,000" in stat(page, "volume")
    assert f"/dashboard/payments/{live}" in page
    assert "KES 300" not in page


def test_recent_payments_are_the_last_ten_with_links(app, sign_in):
    owner = sign_in("owner")
    ids = [insert_push(app, owner.tenant.id, amount=n + 1) for n in range(12)]

    page = owner.client.get("/dashboard", headers=HTML).get_data(as_text=True)

    linked = re.findall(r'href="/dashboard/payments/(stk_[0-9a-z]+)"', page)
    assert linked == ids[::-1][:10]
    assert "No payments yet" not in page


def test_a_new_tenant_sees_where_to_start(sign_in):
    owner = sign_in("owner")
    page = owner.client.get("/dashboard", headers=HTML).get_data(as_text=True)
    assert "No payments yet" in page
    assert 'href="/dashboard/console"' in page
    assert 'href="/dashboard/keys"' in page
    assert "Nothing counted yet this period" in page


def test_viewers_are_not_pointed_at_keys(sign_in):
    owner = sign_in("owner")
    viewer = sign_in("viewer", tenant=owner.tenant)
    page = viewer.client.get("/dashboard", headers=HTML).get_data(as_text=True)
    assert 'href="/dashboard/console"' in page
    assert "Or go straight to" not in page


def test_usage_against_the_allowance_with_a_chart(platform, app, client, sign_in):
    owner = sign_in("owner")
    api = ApiClient(client, owner.tenant.secret)
    body = {"phone_number": "0711000001", "amount": 5, "account_reference": "A1"}
    push = api.post("/v1/stk-pushes", json=body).get_json()
    wait_for_status(api, push["id"])
    usage = api.get("/v1/usage").get_json()

    page = owner.client.get("/dashboard", headers=HTML).get_data(as_text=True)

    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))
    assert f"1 of {usage['test_allowance']:,} test pushes" in text
    assert '<svg class="chart"' in page
    bars = re.findall(r'<rect class="bar[^"]*"[^>]*height="([0-9.]+)"', page)
    assert len(bars) == len(usage["daily"])
    assert max(float(height) for height in bars) > 0
    assert "1 in all" in page


def test_the_chart_has_a_slot_for_every_day_of_the_period():
    """On the period's first day the one bar takes a 31st of the width, not all of it."""
    from datetime import UTC, datetime

    from billing.usage import DailyUsage, Usage
    from frontend.dashboard.overview import CHART_WIDTH, usage_chart

    start = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    usage = Usage(
        plan="starter",
        period_start=start,
        period_end=datetime(2027, 1, 1, 9, 30, tzinfo=UTC),
        used=0,
        included=1000,
        overage=0,
        projected_charge=0,
        test_mode_used=4,
        test_allowance=10_000,
        daily=[DailyUsage(start.date(), live=0, test=4)],
    )

    chart = usage_chart(usage, livemode=False, allowance=10_000)

    (bar,) = chart.bars
    assert bar.x < CHART_WIDTH / 32 and bar.width < CHART_WIDTH / 32
    assert (chart.first_label, chart.end_label) == ("01 Dec", "01 Jan")
