"""The sandbox's state, all in Redis under one key prefix, so every worker process (and a
restarted one) sees the same tokens, pushes, subscriber locks and pending callbacks.

    <prefix>token:<access_token>            "1", expiring with the token
    <prefix>push:<CheckoutRequestID>        the push as JSON (request, outcome, due times)
    <prefix>push:<CheckoutRequestID>:attempts   list of callback attempts, as JSON
    <prefix>lock:<MSISDN>                   CheckoutRequestID holding the subscriber, until due
    <prefix>callbacks                       sorted set "<CheckoutRequestID> <copy>" by due time
"""

from __future__ import annotations

import json

from redis import Redis

TOKEN_TTL_SECONDS = 3600
# Long enough to query or inspect a push days later; short enough that a busy sandbox's
# Redis does not grow without bound.
PUSH_TTL_SECONDS = 7 * 24 * 3600


class SandboxStore:
    def __init__(self, redis: Redis, prefix: str = "sandbox:"):
        self.redis = redis
        self.prefix = prefix

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # Access tokens ---------------------------------------------------------------------

    def save_token(self, token: str) -> None:
        self.redis.set(self._key("token", token), "1", ex=TOKEN_TTL_SECONDS)

    def token_is_valid(self, token: str) -> bool:
        return bool(token) and self.redis.exists(self._key("token", token)) == 1

    # Subscriber locks -------------------------------------------------------------------

    def lock_subscriber(self, msisdn: str, holder: str, seconds: float) -> bool:
        """Atomically take `msisdn` for `seconds`; False when another push still holds it.
        The lock simply expires, so a crashed or restarted sandbox never leaves it stuck."""
        milliseconds = max(1, int(seconds * 1000))
        return bool(self.redis.set(self._key("lock", msisdn), holder, nx=True, px=milliseconds))

    # Pushes ----------------------------------------------------------------------------

    def save_push(self, push: dict) -> bool:
        """Store a new push; False (and nothing written) if its CheckoutRequestID exists."""
        key = self._key("push", push["checkout_request_id"])
        return bool(self.redis.set(key, json.dumps(push), nx=True, ex=PUSH_TTL_SECONDS))

    def load_push(self, checkout_request_id: str) -> dict | None:
        raw = self.redis.get(self._key("push", checkout_request_id))
        return json.loads(raw) if raw is not None else None

    # Callbacks -------------------------------------------------------------------------

    def schedule_callbacks(self, checkout_request_id: str, due_times: list[float]) -> None:
        if not due_times:
            return
        self.redis.zadd(
            self._key("callbacks"),
            {f"{checkout_request_id} {copy}": due for copy, due in enumerate(due_times, 1)},
        )

    def claim_due_callbacks(self, now: float) -> list[tuple[str, int]]:
        """Callbacks due by `now` that this caller won: ZREM succeeds for exactly one
        claimant, so with several processes polling each callback is sent once."""
        key = self._key("callbacks")
        claimed = []
        for member in self.redis.zrangebyscore(key, "-inf", now, start=0, num=100):
            if self.redis.zrem(key, member) == 1:
                checkout_request_id, copy = member.decode().rsplit(" ", 1)
                claimed.append((checkout_request_id, int(copy)))
        return claimed

    def next_callback_due(self) -> float | None:
        first = self.redis.zrange(self._key("callbacks"), 0, 0, withscores=True)
        return first[0][1] if first else None

    def record_attempt(self, checkout_request_id: str, attempt: dict) -> None:
        key = self._key("push", checkout_request_id, "attempts")
        with self.redis.pipeline() as pipeline:
            pipeline.rpush(key, json.dumps(attempt))
            pipeline.expire(key, PUSH_TTL_SECONDS)
            pipeline.execute()

    def attempts(self, checkout_request_id: str) -> list[dict]:
        key = self._key("push", checkout_request_id, "attempts")
        return [json.loads(raw) for raw in self.redis.lrange(key, 0, -1)]

    # Housekeeping ----------------------------------------------------------------------

    def clear(self) -> int:
        """Delete every key under the prefix (tests; a reset from the shell). Returns count."""
        deleted = 0
        for batch in _batched(self.redis.scan_iter(match=self.prefix + "*", count=500), 500):
            deleted += self.redis.delete(*batch)
        return deleted


def _batched(items, size: int):
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
