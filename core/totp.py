"""TOTP codes (RFC 6238, 30-second steps) for both sign-ins that take one: staff and tenant
members. Which step a code belongs to, so callers can accept each step once (the replay
check lives with the account, which stores its last accepted step)."""

from __future__ import annotations

import hmac

import pyotp

INTERVAL = 30
# Codes from one step before or after now pass: phone clocks drift, people type slowly.
DRIFT_STEPS = 1


def normalised(code: str | None) -> str | None:
    """The code without spaces, or None when it is not six digits."""
    code = (code or "").strip().replace(" ", "")
    return code if len(code) == 6 and code.isdigit() else None


def matching_step(secret: str, code: str, now: float, window: int = DRIFT_STEPS) -> int | None:
    """The time step within `window` steps of `now` whose code is `code` (nearest first,
    compared in constant time), or None."""
    totp = pyotp.TOTP(secret, interval=INTERVAL)
    current = int(now // INTERVAL)
    for offset in sorted(range(-window, window + 1), key=abs):
        if hmac.compare_digest(totp.generate_otp(current + offset), code):
            return current + offset
    return None


def provisioning_uri(secret: str, email: str, issuer: str) -> str:
    """What an authenticator app scans (as a QR code) to hold `secret`."""
    return pyotp.TOTP(secret, interval=INTERVAL).provisioning_uri(name=email, issuer_name=issuer)
