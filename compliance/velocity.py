"""Velocity counters for fraud screening, kept in Redis.

One Lua script records a push attempt and reads every counter back in a single round trip;
Redis runs a script atomically, so twenty parallel pushes to one phone see the counts 1..20,
each exactly once. Counters count every screened attempt *including the one being screened*
(blocked or not: a phone being hammered stays blocked while the hammering goes on). Test and
live mode keep separate counters, so sandbox traffic never trips a live rule.

Keys (all expire on their own):
- `fraud:{mode}:phone:{phone}:pushes`   sorted set of attempts (score = ms), 1 h window
- `fraud:{mode}:phone:{phone}:tenants`  sorted set of tenant ids (score = last ms), 24 h
- `fraud:{mode}:phone:{phone}:cancels`  sorted set of cancelled push ids (score = ms), 1 h
- `fraud:{mode}:tenant:{id}:volume:{YYYYMMDD}`  KES requested that EAT day, kept 8 days
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from redis import Redis
from redis.commands.core import Script

EAT = ZoneInfo("Africa/Nairobi")
_MINUTE_MS = 60_000
_HOUR_MS = 60 * _MINUTE_MS
_DAY_MS = 24 * _HOUR_MS
_VOLUME_TTL_SECONDS = 8 * 24 * 3600
_AVERAGE_DAYS = 7

_RECORD_ATTEMPT = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 3600000)
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], 3600000)
local pushes_10m = redis.call('ZCOUNT', KEYS[1], now - 600000, '+inf')
local pushes_1h = redis.call('ZCARD', KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - 86400000)
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('PEXPIRE', KEYS[2], 86400000)
local tenants_24h = redis.call('ZCARD', KEYS[2])
local cancels_1h = redis.call('ZCOUNT', KEYS[3], now - 3600000, '+inf')
local volume_today = redis.call('INCRBY', KEYS[4], ARGV[4])
redis.call('EXPIRE', KEYS[4], tonumber(ARGV[5]))
local past = 0
for i = 5, #KEYS do
  past = past + tonumber(redis.call('GET', KEYS[i]) or '0')
end
return {pushes_10m, pushes_1h, tenants_24h, cancels_1h, volume_today, past}
"""
_script: Script | None = None


@dataclass(frozen=True)
class Velocity:
    phone_pushes_10m: int
    phone_pushes_1h: int
    phone_tenants_24h: int
    phone_cancellations_1h: int
    tenant_volume_today: int
    tenant_avg_daily_7d: float


def _mode(livemode: bool) -> str:
    return "live" if livemode else "test"


def _phone_key(livemode: bool, phone: str, kind: str) -> str:
    return f"fraud:{_mode(livemode)}:phone:{phone}:{kind}"


def _volume_key(livemode: bool, tenant_id: str, day: datetime) -> str:
    return f"fraud:{_mode(livemode)}:tenant:{tenant_id}:volume:{day:%Y%m%d}"


def record_attempt(
    redis: Redis,
    *,
    attempt_id: str,
    tenant_id: str,
    phone: str,
    amount: int,
    livemode: bool,
    now: datetime,
) -> Velocity:
    """Count one push attempt and return every counter including it. Atomic, one round
    trip (EVALSHA). `attempt_id` must be unique per attempt."""
    global _script
    if _script is None:
        _script = Script(redis, _RECORD_ATTEMPT)
    today = now.astimezone(EAT)
    keys = [
        _phone_key(livemode, phone, "pushes"),
        _phone_key(livemode, phone, "tenants"),
        _phone_key(livemode, phone, "cancels"),
        _volume_key(livemode, tenant_id, today),
        *(
            _volume_key(livemode, tenant_id, today - timedelta(days=back))
            for back in range(1, _AVERAGE_DAYS + 1)
        ),
    ]
    now_ms = int(now.timestamp() * 1000)
    counts = _script(
        keys=keys,
        args=[now_ms, attempt_id, tenant_id, int(amount), _VOLUME_TTL_SECONDS],
        client=redis,
    )
    pushes_10m, pushes_1h, tenants_24h, cancels_1h, volume_today, past = (int(c) for c in counts)
    return Velocity(
        phone_pushes_10m=pushes_10m,
        phone_pushes_1h=pushes_1h,
        phone_tenants_24h=tenants_24h,
        phone_cancellations_1h=cancels_1h,
        tenant_volume_today=volume_today,
        tenant_avg_daily_7d=past / _AVERAGE_DAYS,
    )


def record_cancellation(
    redis: Redis, *, push_id: str, phone: str, livemode: bool, now: datetime
) -> None:
    """Count a push the customer cancelled. Idempotent per push (a sorted-set member)."""
    key = _phone_key(livemode, phone, "cancels")
    now_ms = int(now.timestamp() * 1000)
    with redis.pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(key, "-inf", now_ms - _HOUR_MS)
        pipe.zadd(key, {push_id: now_ms})
        pipe.pexpire(key, _HOUR_MS)
        pipe.execute()
