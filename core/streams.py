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
from dataclasses import dataclass

from redis import Redis

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
