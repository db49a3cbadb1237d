"""Running RQ jobs inside the application.

`lango worker` and `lango scheduler` run inside an app context; a job may also run where
there is none (a test calling it directly with an app pushed). `app_job` makes sure each job
runs in an app context as one unit of work (committed when it returns, rolled back when it
raises: core.unit_of_work), writes one log line about it (RQ's own per-job lines are
silenced in core.logs), and leaves no session or transaction behind for the next job.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps

from flask import Flask, has_app_context

from core.extensions import db
from core.unit_of_work import unit_of_work

logger = logging.getLogger("lango.jobs")

_PERIODIC = "lango.periodic"


@dataclass(frozen=True)
class PeriodicJob:
    func: Callable
    queue: str
    interval: int
    timeout: int


def register_periodic(app: Flask, func: Callable, *, queue: str, interval: int, timeout: int):
    """A job `lango scheduler` runs every `interval` seconds (packages register theirs in
    `init_app`). It must be safe to run twice or concurrently."""
    app.extensions.setdefault(_PERIODIC, []).append(PeriodicJob(func, queue, interval, timeout))


def periodic_jobs(app: Flask) -> list[PeriodicJob]:
    return list(app.extensions.get(_PERIODIC, []))


def app_job(func):
    @wraps(func)
    def run(*args, **kwargs):
        if not has_app_context():
            # The app factory imports this module (core.outbox's jobs): only a job run
            # outside any app, by a bare RQ worker, needs it, and then once.
            from core import create_app

            with create_app().app_context():
                return run(*args, **kwargs)
        started = time.perf_counter()
        try:
            with unit_of_work():
                result = func(*args, **kwargs)
        except Exception as error:
            _log_job(logging.WARNING, func, "failed", started, error=type(error).__name__)
            raise
        else:
            _log_job(logging.INFO, func, "ok", started, result=result)
            return result
        finally:
            db.session.remove()

    return run


def _log_job(level: int, func, outcome: str, started: float, **details) -> None:
    duration_ms = round((time.perf_counter() - started) * 1000)
    logger.log(
        level,
        "job %s %s %sms",
        func.__name__,
        outcome,
        duration_ms,
        extra={"job": func.__qualname__, "duration_ms": duration_ms, **details},
    )
