"""Dashboard: overview — today's figures (East Africa Time), usage against the plan with a
chart drawn on the server (inline SVG, no script), and the latest payments."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, timedelta

from flask import g, render_template

from billing.usage import DailyUsage, Usage, current_usage
from frontend.auth import can_edit
from frontend.dashboard import bp
from payments import reports

RECENT_PAYMENTS = 10
# The chart's drawing box (SVG user units; it scales to the page's width).
CHART_WIDTH, CHART_HEIGHT, CHART_BOTTOM = 600, 160, 20


@bp.get("")
def overview():
    start, end = reports.eat_day()
    today = reports.day_summary(livemode=g.livemode, start=start, end=end)
    recent = reports.recent_pushes(livemode=g.livemode, limit=RECENT_PAYMENTS)
    usage = current_usage(g.tenant.id)
    used, allowance = usage_in_mode(usage, g.livemode)
    return render_template(
        "dashboard/overview.html",
        today=today,
        day_start=start,
        recent=recent,
        usage=usage,
        used=used,
        allowance=allowance,
        chart=usage_chart(usage, g.livemode, allowance),
        can_edit=can_edit(),
    )


def usage_in_mode(usage: Usage, livemode: bool) -> tuple[int, int]:
    """(pushes counted this period, the plan's allowance) for the mode on screen."""
    if livemode:
        return usage.used, usage.included
    return usage.test_mode_used, usage.test_allowance


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    count: int
    label: str
    over: bool  # the period's running total had passed the allowance by that day


@dataclass(frozen=True)
class Chart:
    bars: list[Bar]
    peak: int
    total: int
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT
    baseline: int = CHART_HEIGHT - CHART_BOTTOM
    end_label: str = ""  # the period's last day, under the chart's right edge

    @property
    def first_label(self) -> str:
        return self.bars[0].label if self.bars else ""

    @property
    def last_label(self) -> str:
        return self.bars[-1].label if self.bars else ""


def period_days(usage: Usage) -> int:
    """How many (UTC) days the billing period spans, as usage.daily counts them."""
    first = usage.period_start.astimezone(UTC).date()
    last = (usage.period_end - timedelta(microseconds=1)).astimezone(UTC).date()
    return (last - first).days + 1


def usage_chart(usage: Usage, livemode: bool, allowance: int) -> Chart:
    """Bars of pushes counted per day of the billing period, scaled to the busiest day. Every
    day of the period has its slot, so early in a period the days so far fill the left of
    the chart (one day is one narrow bar, not the whole width)."""
    daily: list[DailyUsage] = usage.daily
    counts = [day.live if livemode else day.test for day in daily]
    peak = max(counts, default=0)
    slot = CHART_WIDTH / max(period_days(usage), len(counts), 1)
    drawable = CHART_HEIGHT - CHART_BOTTOM - 10
    bars, running = [], 0
    for day, count in zip(daily, counts, strict=True):
        running += count
        height = drawable * count / peak if peak else 0
        bars.append(
            Bar(
                x=round(len(bars) * slot + slot * 0.15, 2),
                y=round(CHART_HEIGHT - CHART_BOTTOM - height, 2),
                width=round(slot * 0.7, 2),
                height=round(height, 2),
                count=count,
                label=day.date.strftime("%d %b"),
                over=bool(allowance) and running > allowance,
            )
        )
    end = (usage.period_end - timedelta(microseconds=1)).astimezone(UTC)
    return Chart(bars=bars, peak=peak, total=running, end_label=end.strftime("%d %b"))
