"""A circuit breaker whose state lives in Redis, so every worker process and thread that
talks to one upstream (a Daraja base URL) opens, half-opens and closes it together.

    closed ──(N consecutive failures)──▶ open ──(cool-off elapsed)──▶ half-open
       ▲                                   ▲                              │
       └──────────(trial succeeds)─────────┼──────────────────────────────┤
                                           └────────(trial fails)─────────┘

While open, `before_call` raises CircuitOpen without touching the network. After the
cool-off exactly one caller, across all processes, gets the trial call (a Redis SET NX with
an expiry, so a trial whose process died frees the slot by itself); everyone else keeps
failing fast until the trial's outcome is recorded.

Why not pybreaker (1.4.1, which has a Redis storage): its `CircuitBreaker.call` holds a
process-wide `threading.RLock` around the guarded call, which would serialise every Daraja
request of a threaded worker behind one breaker; its half-open state lets every concurrent
caller through instead of one trial; and its clock is `datetime.now()` with whole-second
`opened_at`, so the cool-off cannot be tested without patching the library. What we need is
about a hundred lines, below.

If Redis itself fails, the breaker fails open (calls are allowed, nothing is recorded): a
breaker must never be the cause of an outage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis
from redis.exceptions import RedisError

logger = logging.getLogger("lango.payments.circuit")


class CircuitOpen(Exception):
    """The upstream is considered down; the call was not attempted."""

    def __init__(self, name: str, retry_after: float):
        super().__init__(f"circuit {name} is open; retry in {retry_after:.0f} s")
        self.name = name
        self.retry_after = retry_after


@dataclass(frozen=True)
class Ticket:
    """What `before_call` decided; hand it back to `record_success`/`record_failure`."""

    trial: bool = False


class RedisCircuitBreaker:
    """Counts consecutive failures of calls to one upstream, shared through Redis.

    `failure_threshold` consecutive failures open the circuit for `cool_off` seconds; then a
    single trial call is let through, which closes it on success or opens it for another
    cool-off on failure. A trial that never reports back frees its slot after
    `trial_timeout` seconds (set it above the longest the guarded operation can take).
    `clock` is wall-clock seconds (shared across machines), injectable for tests.
    """

    def __init__(
        self,
        redis: Redis,
        name: str,
        *,
        failure_threshold: int = 5,
        cool_off: float = 30.0,
        trial_timeout: float = 60.0,
        clock: Callable[[], float] = time.time,
        key_prefix: str = "lango:circuit",
    ):
        if failure_threshold < 1 or cool_off <= 0 or trial_timeout <= 0:
            raise ValueError("failure_threshold, cool_off and trial_timeout must be positive")
        self.name = name
        self.failure_threshold = failure_threshold
        self.cool_off = cool_off
        self.trial_timeout = trial_timeout
        self._redis = redis
        self._clock = clock
        self._key = f"{key_prefix}:{name}"
        self._trial_key = f"{self._key}:trial"
        # Failures older than this (with none since) are forgotten, so a handful of blips
        # spread over a week never add up to "consecutive".
        self._memory_seconds = int(max(600.0, 10 * cool_off))

    def before_call(self) -> Ticket:
        """Allow the call (returning its ticket) or raise CircuitOpen."""
        try:
            opened_at = self._redis.hget(self._key, "opened_at")
            if opened_at is None:
                return Ticket()
            remaining = float(opened_at) + self.cool_off - self._clock()
            if remaining > 0:
                raise CircuitOpen(self.name, remaining)
            trial_ms = int(self.trial_timeout * 1000)
            if self._redis.set(self._trial_key, "1", nx=True, px=trial_ms):
                logger.info("circuit half-open: trial call", extra={"circuit": self.name})
                return Ticket(trial=True)
        except RedisError:
            logger.warning("circuit state unavailable; allowing the call", exc_info=True)
            return Ticket()
        raise CircuitOpen(self.name, 0.0)  # another caller's trial is in flight

    def record_success(self, ticket: Ticket) -> None:
        """The upstream answered: reset the failure count and close the circuit."""
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.delete(self._key, self._trial_key)
                pipe.execute()
        except RedisError:
            logger.warning("circuit state unavailable; success not recorded", exc_info=True)
            return
        if ticket.trial:
            logger.info("circuit closed: trial call succeeded", extra={"circuit": self.name})

    def record_failure(self, ticket: Ticket) -> None:
        """The upstream failed: count it, and open the circuit at the threshold (or re-open
        it when this was the half-open trial)."""
        now = self._clock()
        try:
            if ticket.trial:
                self._reopen(now)
                return
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.hincrby(self._key, "failures", 1)
                pipe.expire(self._key, self._memory_seconds)
                failures, _ = pipe.execute()
            # HSETNX: failures of calls already in flight when the circuit opened must not
            # push the end of the cool-off further out.
            if failures >= self.failure_threshold and self._redis.hsetnx(
                self._key, "opened_at", repr(now)
            ):
                logger.warning(
                    "circuit opened",
                    extra={"circuit": self.name, "failures": failures, "cool_off": self.cool_off},
                )
        except RedisError:
            logger.warning("circuit state unavailable; failure not recorded", exc_info=True)

    def _reopen(self, now: float) -> None:
        with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key, mapping={"opened_at": repr(now), "failures": 0})
            pipe.expire(self._key, self._memory_seconds)
            pipe.delete(self._trial_key)
            pipe.execute()
        logger.warning(
            "circuit re-opened: trial call failed",
            extra={"circuit": self.name, "cool_off": self.cool_off},
        )

    def state(self) -> str:
        """The state as seen now, for health checks and tests: closed, open, or half-open
        (cool-off over, a trial due or running)."""
        opened_at = self._redis.hget(self._key, "opened_at")
        if opened_at is None:
            return "closed"
        return "open" if float(opened_at) + self.cool_off > self._clock() else "half-open"
