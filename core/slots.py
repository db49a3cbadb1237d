"""Slots: how many of something one holder may have going at once (open streams per API key,
requests in flight per webhook endpoint), counted in Redis across every process.

Each slot is one member of a sorted set, scored with the time it lapses: its owner removes it
when done (and may renew it while it runs), and a slot whose process was killed lapses by
itself after its time to live, so a crash never holds a place for good.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass

from redis import Redis

# KEYS[1] the holder's set; ARGV: now, lapse time, limit, slot id, the set's ttl.
# Drops lapsed slots, then claims one if fewer than `limit` remain: atomic, so concurrent
# claims cannot both take the last slot.
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
class Slot:
    redis: Redis
    key: str
    slot_id: str
    ttl: float

    def renew(self) -> None:
        """Keep the slot while its work runs (call more often than every `ttl` seconds)."""
        pipeline = self.redis.pipeline(transaction=False)
        pipeline.zadd(self.key, {self.slot_id: time.time() + self.ttl}, xx=True)
        pipeline.expire(self.key, math.ceil(self.ttl))
        pipeline.execute()

    def release(self) -> None:
        self.redis.zrem(self.key, self.slot_id)


def claim_slot(redis: Redis, key: str, limit: int, ttl: float) -> Slot | None:
    """One of the `limit` slots counted under `key`, lapsing after `ttl` seconds unless
    renewed, or None when all are taken. Raises redis.RedisError when Redis is unreachable."""
    slot_id = secrets.token_hex(8)
    now = time.time()
    claimed = redis.eval(_CLAIM, 1, key, now, now + ttl, limit, slot_id, math.ceil(ttl))
    return Slot(redis, key, slot_id, ttl) if claimed else None
