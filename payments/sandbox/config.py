"""The sandbox's settings: a dict passed to `create_sandbox_app`, else environment variables
of the same names, else the defaults below (the public Daraja sandbox values).

Every problem is reported at once, naming the variable, as Lango's own configuration does
(the sandbox is a Daraja, not a part of Lango: it imports nothing of Lango).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from urllib.parse import urlsplit


class SandboxConfigError(RuntimeError):
    """The sandbox's settings are missing or invalid; the message names every problem."""


# The public Daraja sandbox passkey for shortcode 174379 (daraja.md §5.5); not a secret.
PUBLIC_SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"


@dataclass(frozen=True)
class SandboxConfig:
    """What the sandbox needs. Field names are the environment variable names."""

    SANDBOX_REDIS_URL: str
    SANDBOX_CONSUMER_KEY: str = "lango_sandbox_key"
    SANDBOX_CONSUMER_SECRET: str = "lango_sandbox_secret"  # noqa: S105 (public test value)
    SANDBOX_SHORTCODE: str = "174379"
    SANDBOX_PASSKEY: str = PUBLIC_SANDBOX_PASSKEY
    # When the customer "acts" on the prompt: the outcome is final from then on.
    SANDBOX_CALLBACK_DELAY_SECONDS: float = 3.0
    # When the callback of the late-callback number (254700000097) is sent.
    SANDBOX_LATE_CALLBACK_SECONDS: float = 60.0
    # Real Daraja sends "3599" (a string); its docs show a number. Some clients need either.
    SANDBOX_EXPIRES_IN_AS_NUMBER: bool = False
    SANDBOX_SUBSCRIBER_LOCK: bool = True
    # Every Redis key starts with this; tests give each run its own so runs never collide.
    SANDBOX_KEY_PREFIX: str = "sandbox:"


def _flag(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def _seconds(value) -> float:
    number = float(value)
    if not number >= 0:  # also rejects NaN
        raise ValueError("must be a number of seconds, 0 or more")
    return number


def _redis_url(value) -> str:
    if urlsplit(str(value)).scheme not in {"redis", "rediss", "unix"}:
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return str(value)


def _shortcode(value) -> str:
    text = str(value).strip()
    if not (text.isdigit() and 5 <= len(text) <= 7):
        raise ValueError("must be 5 to 7 digits")
    return text


def _nonempty(value) -> str:
    text = str(value)
    if not text.strip():
        raise ValueError("must not be empty")
    return text


def _prefix(value) -> str:
    text = str(value)
    if not text.startswith("sandbox:"):
        raise ValueError("must start with 'sandbox:'")
    return text


_PARSERS = {
    "SANDBOX_REDIS_URL": _redis_url,
    "SANDBOX_CONSUMER_KEY": _nonempty,
    "SANDBOX_CONSUMER_SECRET": _nonempty,
    "SANDBOX_SHORTCODE": _shortcode,
    "SANDBOX_PASSKEY": _nonempty,
    "SANDBOX_CALLBACK_DELAY_SECONDS": _seconds,
    "SANDBOX_LATE_CALLBACK_SECONDS": _seconds,
    "SANDBOX_EXPIRES_IN_AS_NUMBER": _flag,
    "SANDBOX_SUBSCRIBER_LOCK": _flag,
    "SANDBOX_KEY_PREFIX": _prefix,
}


def load_sandbox_config(overrides: dict | None = None) -> SandboxConfig:
    """Settings from `overrides`, falling back per variable to the environment, then to the
    defaults. Raises SandboxConfigError listing every missing or invalid variable."""
    names = [f.name for f in fields(SandboxConfig)]
    source = {name: os.environ[name] for name in names if name in os.environ}
    source.update({k: v for k, v in (overrides or {}).items() if k in names and v is not None})

    problems: list[str] = []
    values: dict = {}
    if not str(source.get("SANDBOX_REDIS_URL", "")).strip():
        problems.append(
            "SANDBOX_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/0 or unix:///…/redis.sock)"
        )
    for name, raw in source.items():
        if name == "SANDBOX_REDIS_URL" and not str(raw).strip():
            continue  # already reported as not set
        try:
            values[name] = _PARSERS[name](raw)
        except (TypeError, ValueError) as exc:
            problems.append(f"{name} is invalid: {exc}")
    if problems:
        raise SandboxConfigError(
            "Sandbox configuration is invalid:\n  - " + "\n  - ".join(problems)
        )
    return SandboxConfig(**values)
