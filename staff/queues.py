"""Queue and worker health, as the admin console and `lango queues` show it: RQ's queues and
registries, the workers and schedulers registered in Redis, the oldest webhook delivery that
is due but not sent, and what each outbox subscriber still owes (both read from every
tenant's schema, the source of truth).

Read-only: nothing here changes a queue, a job, a registry, a delivery or an event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from redis import Redis
from rq import Queue, Worker
from rq.cron import CronScheduler
from rq.scheduler import RQScheduler

from core.outbox import SubscriberLag, subscriber_lag
from core.tenancy import registered_tenant_ids, tenant_scope
from webhooks.service import oldest_due

# Every queue Lango's jobs use (webhooks.service, payments and billing jobs, `lango worker`).
QUEUE_NAMES = ("webhooks", "default", "billing")
# A `lango scheduler` silent this long is gone (RQ's own threshold for its registry).
CRON_STALE_SECONDS = 120


@dataclass(frozen=True)
class QueueStats:
    name: str
    queued: int
    started: int
    scheduled: int
    failed: int
    # Who moves this queue's scheduled jobs (webhook retries) onto it when due: the name of
    # the worker-run RQ scheduler holding the queue's lock, None when nobody does.
    scheduler: str | None


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    queues: list[str]
    state: str
    current_job: str | None
    last_heartbeat: datetime | None
    birth: datetime | None
    hostname: str | None
    pid: int | None
    seconds_since_heartbeat: int | None


@dataclass(frozen=True)
class CronInfo:
    """A `lango scheduler` process (RQ's CronScheduler) and the periodic jobs it runs."""

    name: str
    hostname: str
    pid: int
    started: datetime | None
    last_heartbeat: datetime | None
    seconds_since_heartbeat: int | None
    jobs: list[str] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return (
            self.seconds_since_heartbeat is not None
            and self.seconds_since_heartbeat <= CRON_STALE_SECONDS
        )


@dataclass(frozen=True)
class DueDelivery:
    due_since: datetime
    tenant_id: str


@dataclass(frozen=True)
class QueueHealth:
    queues: list[QueueStats]
    workers: list[WorkerInfo]
    cron_schedulers: list[CronInfo]
    oldest_due: DueDelivery | None
    subscribers: list[SubscriberLag]


def queue_health(connection: Redis, now: datetime | None = None) -> QueueHealth:
    """Everything at once, for a page."""
    now = now or datetime.now(UTC)
    return QueueHealth(
        queues=queue_stats(connection),
        workers=list_workers(connection, now),
        cron_schedulers=list_cron_schedulers(connection, now),
        oldest_due=oldest_due_delivery(now),
        subscribers=subscriber_lag(now),
    )


def queue_stats(connection: Redis) -> list[QueueStats]:
    """Per queue: jobs waiting, running, scheduled for later and failed."""
    stats = []
    for name in QUEUE_NAMES:
        queue = Queue(name, connection=connection)
        holder = connection.get(RQScheduler.get_locking_key(name))
        stats.append(
            QueueStats(
                name=name,
                queued=queue.count,
                started=queue.started_job_registry.count,
                scheduled=queue.scheduled_job_registry.count,
                failed=queue.failed_job_registry.count,
                scheduler=holder.decode() if isinstance(holder, bytes) else holder,
            )
        )
    return stats


def list_workers(connection: Redis, now: datetime | None = None) -> list[WorkerInfo]:
    """The RQ workers registered in Redis (a worker that died without saying so stays
    listed until its key expires: see how long ago its last heartbeat was)."""
    now = now or datetime.now(UTC)
    workers = []
    for worker in sorted(Worker.all(connection=connection), key=lambda w: w.name):
        workers.append(
            WorkerInfo(
                name=worker.name,
                queues=worker.queue_names(),
                state=str(worker.get_state()),
                current_job=worker.get_current_job_id(),
                last_heartbeat=worker.last_heartbeat,
                birth=worker.birth_date,
                hostname=worker.hostname,
                pid=worker.pid,
                seconds_since_heartbeat=_age(worker.last_heartbeat, now),
            )
        )
    return workers


def list_cron_schedulers(connection: Redis, now: datetime | None = None) -> list[CronInfo]:
    """The `lango scheduler` processes registered in Redis (RQ's CronScheduler registry;
    one silent for over two minutes is not `alive`)."""
    now = now or datetime.now(UTC)
    schedulers = []
    for cron in CronScheduler.all(connection, cleanup=False):
        heartbeat = cron.last_heartbeat
        schedulers.append(
            CronInfo(
                name=cron.name,
                hostname=cron.hostname,
                pid=cron.pid,
                started=cron.created_at,
                last_heartbeat=heartbeat,
                seconds_since_heartbeat=_age(heartbeat, now),
                jobs=[job.func_name for job in cron.get_jobs()],
            )
        )
    return schedulers


def oldest_due_delivery(now: datetime | None = None) -> DueDelivery | None:
    """The webhook delivery due the longest but still pending, across every tenant (one
    short read per tenant schema, each in its own transaction, which the scope ends)."""
    now = now or datetime.now(UTC)
    oldest: DueDelivery | None = None
    for tenant_id in registered_tenant_ids():
        with tenant_scope(tenant_id):
            due = oldest_due(now)
        if due is not None and (oldest is None or due < oldest.due_since):
            oldest = DueDelivery(due, tenant_id)
    return oldest


def _age(moment: datetime | None, now: datetime) -> int | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0, int((now - moment).total_seconds()))
