"""core.signin_throttle: failures throttled per account and client address with a growing
wait, and a per-account ceiling that only slows addresses the account never signed in from."""

from __future__ import annotations

import pytest

from core import signin_throttle
from core.signin_throttle import SignInThrottled

ACCOUNT = signin_throttle.account_key("staff", "Owner@Example.co.ke")
NOW = 1_800_000_000.0


def wait_for(address: str, now: float, account: str = ACCOUNT) -> int | None:
    """The Retry-After `address` gets right now, or None when it may try."""
    try:
        signin_throttle.refuse_if_throttled(account, address, now)
    except SignInThrottled as error:
        assert error.status == 429 and error.code == "sign_in_throttled"
        return int(error.headers["Retry-After"])
    return None


def test_the_account_key_hides_the_email_and_ignores_case():
    assert signin_throttle.account_key("staff", " owner@example.co.ke") == ACCOUNT
    assert "example" not in ACCOUNT
    assert signin_throttle.account_key("member", "owner@example.co.ke") != ACCOUNT


def test_an_address_waits_after_five_failures_doubling_up_to_an_hour(app_context):
    now = NOW
    waits = []
    for _ in range(12):
        signin_throttle.record_failure(ACCOUNT, "192.0.2.1", now)
        wait = wait_for("192.0.2.1", now)
        waits.append(wait)
        now += wait or 1
    assert waits == [None] * 4 + [60, 120, 240, 480, 960, 1920, 3600, 3600]
    # Another address of the same account is not held back at all.
    assert wait_for("192.0.2.2", now - 1) is None


def test_a_completed_sign_in_clears_the_address_count(app_context):
    for _ in range(5):
        signin_throttle.record_failure(ACCOUNT, "192.0.2.1", NOW)
    assert wait_for("192.0.2.1", NOW) == 60
    signin_throttle.record_success(ACCOUNT, "192.0.2.1")
    assert wait_for("192.0.2.1", NOW) is None
    assert signin_throttle.record_failure(ACCOUNT, "192.0.2.1", NOW)[0] == 1


def test_failures_are_forgotten_a_day_after_the_last(app_context):
    for _ in range(4):
        signin_throttle.record_failure(ACCOUNT, "192.0.2.1", NOW)
    later = NOW + signin_throttle.ADDRESS_FORGET_SECONDS + 1
    assert signin_throttle.record_failure(ACCOUNT, "192.0.2.1", later) == (1, 1)


def test_many_addresses_only_slow_the_account_for_at_most_a_minute(app_context):
    now = NOW
    signin_throttle.record_success(ACCOUNT, "192.0.2.99")  # the owner's usual address
    for n in range(signin_throttle.ACCOUNT_FREE_FAILURES - 1):
        signin_throttle.record_failure(ACCOUNT, f"203.0.113.{n}", now)
    assert wait_for("198.51.100.1", now) is None
    signin_throttle.record_failure(ACCOUNT, "203.0.113.200", now)
    assert wait_for("198.51.100.1", now) == 1

    waits = []
    for n in range(10):
        now += 61
        signin_throttle.record_failure(ACCOUNT, f"203.0.114.{n}", now)
        waits.append(wait_for("198.51.100.1", now))
    assert waits == [2, 4, 8, 16, 32, 60, 60, 60, 60, 60]
    assert signin_throttle.account_pressure(ACCOUNT, now).failures == 30
    # Slowed, never locked: the wait passes; the owner's known address never waits.
    assert wait_for("198.51.100.1", now + 60) is None
    assert wait_for("192.0.2.99", now) is None
    # An hour without failures forgets them.
    quiet = now + signin_throttle.ACCOUNT_FORGET_SECONDS + 1
    assert signin_throttle.account_pressure(ACCOUNT, quiet).failures == 0


def test_a_redis_flush_forgives_and_forget_clears_an_account(app, app_context):
    for _ in range(5):
        signin_throttle.record_failure(ACCOUNT, "192.0.2.1", NOW)
    signin_throttle.forget(ACCOUNT)
    assert wait_for("192.0.2.1", NOW) is None
    for _ in range(5):
        signin_throttle.record_failure(ACCOUNT, "192.0.2.1", NOW)
    app.extensions["lango.redis"].flushdb()
    assert wait_for("192.0.2.1", NOW) is None


def test_the_message_says_how_long_to_wait(app_context):
    def message() -> str:
        with pytest.raises(SignInThrottled) as throttled:
            signin_throttle.refuse_if_throttled(ACCOUNT, "192.0.2.1", NOW)
        return throttled.value.message

    for _ in range(5):
        signin_throttle.record_failure(ACCOUNT, "192.0.2.1", NOW)
    assert message().endswith("from your network. Try again in 60 seconds.")
    for _ in range(6):
        signin_throttle.record_failure(ACCOUNT, "192.0.2.1", NOW)
    assert message().endswith("Try again in 60 minutes.")
