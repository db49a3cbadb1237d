"""A fraud rule's dry run: what an expression would have matched among the last 7 days of
pushes, across every tenant, before anyone saves it. Read-only; screening is untouched.

Each stored push is evaluated with the attributes `fraud.screen` would have built for it at
its `created_at` (`fraud.push_attributes`). The velocity counters live in Redis only at
screening time and expire, so they are rebuilt from the stored pushes themselves, per mode
(test and live counted apart, as in `compliance.velocity`):
- phone_pushes_10m / phone_pushes_1h: pushes to the same phone, every tenant, created in the
  window up to and including this one; phone_tenants_24h: the distinct tenants among them;
- phone_cancellations_1h: pushes to the phone that the customer cancelled (at `resolved_at`)
  in the hour before this one;
- tenant_volume_today: KES the tenant requested that EAT day, up to and including this push;
- tenant_avg_daily_7d: the tenant's KES over the 7 EAT days before that day, divided by 7.
Attempts that screening refused were never stored, so rebuilt counters can be lower than the
live ones were; `plan` is the tenant's current plan. Phone counters are only rebuilt when the
expression names one (they need every tenant's recent pushes in memory); otherwise they are 0.

The pushes come from payments, through compliance.ports (payments sits above compliance),
each tenant's read in that tenant's own scope.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import rule_engine
from sqlalchemy import select

from compliance import fraud
from compliance.ports import PushFacts, recent_pushes
from compliance.velocity import EAT
from core.errors import ValidationFailed
from core.extensions import db
from core.phone import mask_phone
from core.unit_of_work import Checkpoint, checkpoint
from tenants.models import Tenant

WINDOW = timedelta(days=7)
SAMPLE_SIZE = 20
_AVERAGE_DAYS = 7
_PHONE_COUNTERS = frozenset(
    {"phone_pushes_10m", "phone_pushes_1h", "phone_tenants_24h", "phone_cancellations_1h"}
)
_CANCELLED = "cancelled"


@dataclass(frozen=True)
class DryRunSample:
    tenant_id: str
    business_name: str
    stk_push_id: str
    phone: str  # masked
    amount: int
    livemode: bool
    status: str
    created_at: datetime


@dataclass
class DryRunTenant:
    tenant_id: str
    business_name: str
    pushes: int = 0
    matched: int = 0


@dataclass
class DryRunResult:
    expression: str
    since: datetime
    until: datetime
    pushes: int = 0  # pushes evaluated (created in the window)
    matched: int = 0
    errors: int = 0  # pushes the expression failed to evaluate on (counted as no match)
    by_status: dict[str, int] = field(default_factory=dict)  # matches per push status
    by_mode: dict[str, int] = field(default_factory=dict)  # matches per mode: test / live
    tenants: list[DryRunTenant] = field(default_factory=list)  # with pushes; most matched first
    samples: list[DryRunSample] = field(default_factory=list)  # newest matches first


def dry_run_rule(expression: str, now: datetime | None = None) -> DryRunResult:
    """Evaluate `expression` against every push created in the 7 days before `now`, in every
    tenant, without saving anything: counts of matches (by tenant, push status and mode) and
    up to SAMPLE_SIZE newest matching pushes with masked phones. Raises ValidationFailed
    (param `expression`) for an expression that does not compile. Reads each tenant's pushes
    in that tenant's scope, so it ends the caller's transaction first (a checkpoint)."""
    rule, named = _compile(expression)
    until = now or datetime.now(UTC)
    since = until - WINDOW
    tenants = _tenants()
    checkpoint(Checkpoint.TENANT_BY_TENANT)
    phones = _PhoneIndex(since, until, tenants) if named & _PHONE_COUNTERS else None
    # From the start of the first day's EAT day (its running volume), and 7 days before it
    # when the expression names the daily average.
    first_day = _day_start(since) - (
        timedelta(days=_AVERAGE_DAYS) if "tenant_avg_daily_7d" in named else timedelta(0)
    )
    result = DryRunResult(expression=expression, since=since, until=until)
    samples: list[tuple] = []
    for tenant_id, business_name, created_at, plan in tenants:
        summary = DryRunTenant(tenant_id, business_name)
        for push, counters in _with_tenant_counters(recent_pushes(tenant_id, first_day, until)):
            if push.created_at < since:
                continue
            summary.pushes += 1
            if phones is not None:
                counters.update(phones.counters(push, tenant_id))
            screened = fraud.ScreenedPush(push.phone_number, push.amount, push.livemode)
            attributes = fraud.push_attributes(
                screened,
                at=push.created_at,
                tenant_created_at=created_at,
                plan=plan,
                counters=counters,
            )
            try:
                matched = rule.matches(attributes)
            except rule_engine.EngineError:
                result.errors += 1
                continue
            if not matched:
                continue
            summary.matched += 1
            _count(result, push)
            sample = DryRunSample(
                tenant_id,
                business_name,
                push.id,
                mask_phone(push.phone_number),
                push.amount,
                push.livemode,
                push.status,
                push.created_at,
            )
            heapq.heappush(samples, (push.created_at, push.id, sample))
            if len(samples) > SAMPLE_SIZE:
                heapq.heappop(samples)
        result.pushes += summary.pushes
        result.matched += summary.matched
        if summary.pushes:
            result.tenants.append(summary)
    result.tenants.sort(key=lambda item: (-item.matched, -item.pushes, item.tenant_id))
    result.samples = [sample for _, _, sample in sorted(samples, reverse=True)]
    return result


def _compile(expression: str) -> tuple[rule_engine.Rule, set[str]]:
    """The rule (typed as screening types it) and the attribute names it uses."""
    named: set[str] = set()
    resolve = rule_engine.type_resolver_from_dict(fraud.ATTRIBUTE_TYPES)

    def recording(name: str):
        named.add(name)
        return resolve(name)

    try:
        rule = rule_engine.Rule(expression, context=rule_engine.Context(type_resolver=recording))
    except (rule_engine.EngineError, ValueError) as error:
        message = getattr(error, "message", None) or str(error)
        raise ValidationFailed(f"expression: {message}", param="expression") from None
    return rule, named


def _tenants() -> list[tuple]:
    # The plan as screening reads it (fraud.screen): tenants.plan, which billing keeps current.
    return db.session.execute(
        select(Tenant.id, Tenant.business_name, Tenant.created_at, Tenant.plan).order_by(Tenant.id)
    ).all()


def _eat_day(moment: datetime) -> date:
    return moment.astimezone(EAT).date()


def _day_start(moment: datetime) -> datetime:
    local = moment.astimezone(EAT)
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


def _with_tenant_counters(pushes: Iterator[PushFacts]) -> Iterator[tuple[PushFacts, dict]]:
    """Each of one tenant's pushes (oldest first) with its tenant counters, as screening
    counted them: the KES requested that EAT day up to and including it, and the mean over
    the 7 EAT days before that day (same mode). The phone counters start at 0."""
    daily: dict[tuple[bool, date], int] = defaultdict(int)
    for push in pushes:
        day = _eat_day(push.created_at)
        daily[(push.livemode, day)] += push.amount
        past = sum(
            daily.get((push.livemode, day - timedelta(days=back)), 0)
            for back in range(1, _AVERAGE_DAYS + 1)
        )
        yield (
            push,
            {
                "phone_pushes_10m": 0,
                "phone_pushes_1h": 0,
                "phone_tenants_24h": 0,
                "phone_cancellations_1h": 0,
                "tenant_volume_today": daily[(push.livemode, day)],
                "tenant_avg_daily_7d": past / _AVERAGE_DAYS,
            },
        )


def _count(result: DryRunResult, push: PushFacts) -> None:
    status = push.status
    mode = "live" if push.livemode else "test"
    result.by_status[status] = result.by_status.get(status, 0) + 1
    result.by_mode[mode] = result.by_mode.get(mode, 0) + 1


class _PhoneIndex:
    """Every tenant's pushes per (mode, phone) from a day before the window: enough to
    rebuild the phone counters of any push in it, as velocity.record_attempt counts them."""

    def __init__(self, since: datetime, until: datetime, tenants: list[tuple]):
        self.pushes: dict[tuple, list[tuple]] = defaultdict(list)  # (ts, push id, tenant)
        self.cancels: dict[tuple, list[float]] = defaultdict(list)  # cancellation ts
        for tenant_id, *_ in tenants:
            for push in recent_pushes(tenant_id, since - timedelta(days=1), until):
                key = (push.livemode, push.phone_number)
                self.pushes[key].append((push.created_at.timestamp(), push.id, tenant_id))
                if push.status == _CANCELLED:
                    cancelled_at = push.resolved_at or push.updated_at
                    self.cancels[key].append(cancelled_at.timestamp())
        for entries in self.pushes.values():
            entries.sort()
        for times in self.cancels.values():
            times.sort()

    def counters(self, push: PushFacts, tenant_id: str) -> dict:
        key = (push.livemode, push.phone_number)
        entries = self.pushes.get(key, [])
        moment = push.created_at.timestamp()
        # This push and every earlier one (ties broken by id, as the sort orders them).
        end = bisect_right(entries, (moment, push.id, tenant_id))
        # Redis keeps [now-10m, now] for the 10-minute count, (now-1h, now] for the hour
        # and (now-24h, now] for tenants (compliance.velocity).
        start_10m = bisect_left(entries, (moment - 600,))
        start_1h = bisect_right(entries, (moment - 3600, "\uffff"))
        start_24h = bisect_right(entries, (moment - 86400, "\uffff"))
        cancels = self.cancels.get(key, [])
        return {
            "phone_pushes_10m": max(end - start_10m, 0),
            "phone_pushes_1h": max(end - start_1h, 0),
            "phone_tenants_24h": len({entry[2] for entry in entries[start_24h:end]}),
            "phone_cancellations_1h": bisect_right(cancels, moment)
            - bisect_left(cancels, moment - 3600),
        }
