"""Slots for long-lived responses (Server-Sent Events): how many one holder (an API key, a
member) may keep open at once, counted in Redis across every web process.

A stream holds a web thread for minutes; without a cap one key could occupy every thread
and leave health checks unanswered. Each open stream is one member of a sorted set, scored
with the time its slot lapses: the stream renews it while it runs and removes it when it
ends, and a slot whose process was killed lapses by itself after `SLOT_TTL_SECONDS`.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

from flask import Response, current_app, stream_with_context
from redis import Redis

from core.errors import RateLimited

SLOT_TTL_SECONDS = 60

# KEYS[1] the holder's set; ARGV: now, lapse time, limit, slot id, ttl.
# Drops lapsed slots, then claims one if fewer than `limit` remain: atomic, so concurrent
# requests cannot both take the last slot.
_CLAIM = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""


@dataclass(frozen=True)
class StreamSlot:
    redis: Redis
    key: str
    slot_id: str

    def renew(self) -> None:
        """Keep the slot while the stream runs (call more often than SLOT_TTL_SECONDS)."""
        lapses = time.time() + SLOT_TTL_SECONDS
        pipeline = self.redis.pipeline(transaction=False)
        pipeline.zadd(self.key, {self.slot_id: lapses}, xx=True)
        pipeline.expire(self.key, SLOT_TTL_SECONDS)
        pipeline.execute()

    def release(self) -> None:
        self.redis.zrem(self.key, self.slot_id)


def claim_stream_slot(redis: Redis, holder: str, limit: int) -> StreamSlot | None:
    """A slot for one more open stream of `holder`, or None when it already has `limit`."""
    key = f"lango:streams:{holder}"
    slot_id = secrets.token_hex(8)
    now = time.time()
    claimed = redis.eval(
        _CLAIM, 1, key, now, now + SLOT_TTL_SECONDS, limit, slot_id, SLOT_TTL_SECONDS
    )
    return StreamSlot(redis, key, slot_id) if claimed else None


def capped_event_stream(holder: str, limit: int, events: Iterator[str]) -> Response:
    """A Server-Sent Events response of `events` that holds one of `holder`'s `limit` slots
    while it is open; RateLimited (429 `too_many_streams`) when they are all taken.

    `events` must yield at least every SLOT_TTL_SECONDS / 3 (a keep-alive comment will do):
    each yield renews the slot."""
    slot = claim_stream_slot(current_app.extensions["lango.redis"], holder, limit)
    if slot is None:
        raise RateLimited(
            f"At most {limit} live streams may be open at once; close one and retry.",
            code="too_many_streams",
            headers={"Retry-After": "5"},
        )

    def renewing() -> Iterator[str]:
        renewed = time.monotonic()
        for event in events:
            if time.monotonic() - renewed > SLOT_TTL_SECONDS / 3:
                renewed = time.monotonic()
                slot.renew()
            yield event

    response = Response(
        stream_with_context(renewing()),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    # Called by the server when the response ends, however it ends (the stream finished, the
    # client went away), even if the stream never started.
    response.call_on_close(slot.release)
    return response
