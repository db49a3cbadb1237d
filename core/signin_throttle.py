"""Brute-force protection for every sign-in (tenant members, staff), without handing anyone a
way to lock someone else out.

Two counters per account, each failure (a wrong password or a wrong second-factor code)
counting in both:
- per account *and client address*: five failures are free, then that address waits a
  minute, doubling with each further failure up to an hour. Only that address waits: a
  stranger failing the owner's password elsewhere never locks the owner out. A completed
  sign-in from the address clears its count; failures are forgotten a day after the last.
- per account, from anywhere: a ceiling on guessing from many addresses that only slows.
  After 20 failures (forgotten an hour after the last), each further attempt waits for
  1 s, 2 s, 4 s … at most 60 s after the previous failure. Addresses the account completed
  a sign-in from within 90 days are exempt, so its owner is not slowed by a stranger's
  guessing either.

Unknown emails are counted like accounts (by the email), so throttling does not tell which
emails have accounts.

Why Redis and not PostgreSQL: the counters are short-lived and expire on their own (an
attacker spraying addresses or emails leaves no rows behind to purge, and no failed guess
writes to the platform database); they hold no fact the platform needs. A Redis flush only
forgives attempts — it never grants access: the password and the second factor are still
checked. Updates are Lua scripts (atomic); callers serialise attempts on one account with a
row lock, so a burst of parallel guesses cannot all pass the check before one is counted.
Times are passed in (the services' clocks), so tests walk through the delays without waiting.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from flask import current_app
from redis import Redis

from core.errors import RateLimited

ADDRESS_FREE_FAILURES = 5
ADDRESS_FIRST_WAIT_SECONDS = 60
ADDRESS_MAX_WAIT_SECONDS = 3600
ADDRESS_FORGET_SECONDS = 24 * 3600
ACCOUNT_FREE_FAILURES = 20
ACCOUNT_MAX_WAIT_SECONDS = 60
ACCOUNT_FORGET_SECONDS = 3600
KNOWN_ADDRESS_SECONDS = 90 * 24 * 3600

# KEYS: the address counter, the account counter. ARGV: now (ms), then the settings above.
# Returns the address's and the account's failure counts, this failure included.
_RECORD_FAILURE = """
local now = tonumber(ARGV[1])
local function count(key, forget_ms)
  local last = tonumber(redis.call('HGET', key, 'last') or '0')
  local failures = tonumber(redis.call('HGET', key, 'failures') or '0')
  if now - last > forget_ms then failures = 0 end
  failures = failures + 1
  redis.call('HSET', key, 'failures', failures, 'last', now)
  return failures
end
local at_address = count(KEYS[1], tonumber(ARGV[4]))
local free = tonumber(ARGV[2])
if at_address >= free then
  local wait = math.min(tonumber(ARGV[3]) * 2 ^ (at_address - free), tonumber(ARGV[5]))
  redis.call('HSET', KEYS[1], 'until', now + math.floor(wait))
end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) + tonumber(ARGV[5]))
local on_account = count(KEYS[2], tonumber(ARGV[6]))
redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[6]))
return {at_address, on_account}
"""


class SignInThrottled(RateLimited):
    code = "sign_in_throttled"
    message = "Too many failed sign-in attempts; try again later."


@dataclass(frozen=True)
class AccountPressure:
    """What staff see about an account being guessed at: recent failures from anywhere, and
    until when unknown addresses are slowed down (None: they are not)."""

    failures: int
    slowed_until: float | None


def account_key(kind: str, email: str) -> str:
    """The throttle's name for the account of `kind` ("member", "staff") with `email`
    (hashed: no email address is kept in Redis)."""
    digest = hashlib.sha256(email.strip().lower().encode()).hexdigest()[:32]
    return f"{kind}:{digest}"


def refuse_if_throttled(account: str, address: str, now: float) -> None:
    """Raise SignInThrottled (with Retry-After) when `address` must wait before trying
    `account` again; check before the password, so a waiting address cannot probe it."""
    redis = _redis()
    blocked_until = _number(redis.hget(_address_key(account, address), "until")) / 1000
    if blocked_until > now:
        raise _throttled(blocked_until - now, "Too many failed sign-in attempts from your network.")
    if redis.sismember(_known_key(account), _digest(address)):
        return
    slowed_until = account_pressure(account, now).slowed_until
    if slowed_until is not None and slowed_until > now:
        raise _throttled(
            slowed_until - now, "This account has had many failed sign-in attempts lately."
        )


def record_failure(account: str, address: str, now: float) -> tuple[int, int]:
    """Count a failed password or code; returns the failures from this address and on the
    account (this one included), for the sign-in log."""
    redis = _redis()
    at_address, on_account = redis.eval(
        _RECORD_FAILURE,
        2,
        _address_key(account, address),
        _account_key(account),
        _ms(now),
        ADDRESS_FREE_FAILURES,
        ADDRESS_FIRST_WAIT_SECONDS * 1000,
        ADDRESS_FORGET_SECONDS * 1000,
        ADDRESS_MAX_WAIT_SECONDS * 1000,
        ACCOUNT_FORGET_SECONDS * 1000,
    )
    return int(at_address), int(on_account)


def record_success(account: str, address: str) -> None:
    """A sign-in completed (every factor passed) from `address`: its failures are forgiven
    and it becomes a known address of the account, exempt from the account's slowdown."""
    redis = _redis()
    known = _known_key(account)
    with redis.pipeline() as pipe:
        pipe.delete(_address_key(account, address))
        pipe.sadd(known, _digest(address))
        pipe.expire(known, KNOWN_ADDRESS_SECONDS)
        pipe.execute()


def account_pressure(account: str, now: float) -> AccountPressure:
    """Recent failures on `account` from anywhere and until when it slows unknown addresses."""
    stored = _redis().hgetall(_account_key(account))
    failures, last = int(_number(stored.get(b"failures"))), _number(stored.get(b"last")) / 1000
    if not failures or now - last > ACCOUNT_FORGET_SECONDS:
        return AccountPressure(0, None)
    if failures < ACCOUNT_FREE_FAILURES:
        return AccountPressure(failures, None)
    wait = min(2 ** (failures - ACCOUNT_FREE_FAILURES), ACCOUNT_MAX_WAIT_SECONDS)
    return AccountPressure(failures, last + wait)


def forget(account: str) -> None:
    """Forgive every failure on `account` (an operator resetting the account)."""
    redis = _redis()
    keys = [_account_key(account), *redis.scan_iter(match=f"signin:{account}:address:*")]
    redis.delete(*keys)


def _throttled(seconds: float, reason: str) -> SignInThrottled:
    retry_after = max(1, math.ceil(seconds))
    return SignInThrottled(
        f"{reason} Try again in {_duration(retry_after)}.",
        headers={"Retry-After": str(retry_after)},
    )


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} seconds"
    return f"{math.ceil(seconds / 60)} minutes"


def _redis() -> Redis:
    return current_app.extensions["lango.redis"]


def _address_key(account: str, address: str) -> str:
    return f"signin:{account}:address:{_digest(address)}"


def _account_key(account: str) -> str:
    return f"signin:{account}:all"


def _known_key(account: str) -> str:
    return f"signin:{account}:known"


def _digest(address: str) -> str:
    return hashlib.sha256(address.encode()).hexdigest()[:24]


def _ms(now: float) -> int:
    return int(now * 1000)


def _number(value: bytes | None) -> float:
    return float(value) if value else 0.0
