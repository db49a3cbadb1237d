"""Typed configuration read from the environment (twelve-factor), validated at start-up.

A `.env` file in the working directory is read in development; real environment variables
win over it. Every problem is reported at once, naming the variable, so an operator fixes a
bad deployment in one pass instead of one crash at a time.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from dotenv import load_dotenv


class ConfigError(RuntimeError):
    """Raised when the environment does not describe a runnable platform."""


def _flag(value: str) -> bool:
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError("must be true or false")


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError("must be a positive integer") from None
    if number <= 0:
        raise ValueError("must be a positive integer")
    return number


def _proxy_count(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ValueError("must be a whole number of proxies (0 or more)") from None
    if number < 0:
        raise ValueError("must be a whole number of proxies (0 or more)")
    return number


def _package_list(value: str) -> tuple[str, ...]:
    names = tuple(name.strip() for name in value.split(",") if name.strip())
    if not names or not all(part.isidentifier() for name in names for part in name.split(".")):
        raise ValueError("must be package names separated by commas, lowest layer first")
    return names


def _database_url(value: str) -> str:
    scheme = urlsplit(value).scheme
    if scheme in {"postgres", "postgresql", "postgresql+psycopg"}:
        # One driver everywhere: psycopg 3.
        return "postgresql+psycopg://" + value.split("://", 1)[1]
    raise ValueError("must be a postgresql:// URL")


def _redis_url(value: str) -> str:
    if urlsplit(value).scheme not in {"redis", "rediss", "unix"}:
        raise ValueError("must be a redis://, rediss:// or unix:// URL")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value.rstrip("/")


def _networks(value: str) -> tuple[str, ...]:
    networks = tuple(item.strip() for item in value.split(",") if item.strip())
    for network in networks:
        ipaddress.ip_network(network, strict=False)  # raises ValueError when malformed
    return networks


def _schedule(value: str) -> tuple[int, ...]:
    delays = tuple(int(item) for item in value.split(",") if item.strip())
    if not delays or any(delay < 0 for delay in delays):
        raise ValueError("must be comma-separated non-negative seconds, e.g. 5,300,1800")
    return delays


def _encryption_keys(value: str) -> tuple[str, ...]:
    keys = tuple(key.strip() for key in value.split(",") if key.strip())
    if not keys:
        raise ValueError("must list at least one Fernet key")
    for key in keys:
        Fernet(key)  # raises ValueError on a malformed key
    return keys


def _audit_keys(value: str) -> tuple[str, ...]:
    keys = tuple(key.strip() for key in value.split(",") if key.strip())
    if any(len(key) < 32 for key in keys):
        raise ValueError("each key must be at least 32 characters")
    return keys


@dataclass(frozen=True)
class Settings:
    """What the platform needs to run. Field names are the environment variable names."""

    DATABASE_URL: str
    REDIS_URL: str
    SECRET_KEY: str
    # Fernet keys, newest first; older keys stay to decrypt until rotated out. Required:
    # webhook signing secrets (a core feature) and live Daraja credentials are stored with it.
    ENCRYPTION_KEYS: tuple[str, ...] = ()
    LANGO_ENV: str = "production"
    LOG_LEVEL: str = "INFO"
    # The domain packages the app is built from, lowest layer first: each one's `init_app`
    # registers what it brings (blueprints, commands, subscribers, hooks, periodic jobs) and
    # may rely on what the packages before it registered. A deployment may leave out the top
    # ones (e.g. `frontend` for an API-only web tier), never one that others build on.
    LANGO_PACKAGES: tuple[str, ...] = (
        "tenants",
        "billing",
        "compliance",
        "webhooks",
        "payments",
        "staff",
        "frontend",
    )
    # Reverse proxies in front of the web process that append to X-Forwarded-For and
    # X-Forwarded-Proto. 0: the connection's address is the client's (a forged header is
    # ignored); N: the address the Nth proxy from the app saw, as werkzeug's ProxyFix reads it.
    TRUSTED_PROXIES: int = 0
    DB_POOL_SIZE: int = 5
    # Pooled connections are recycled so each backend's catalog cache (which grows with
    # every tenant schema it touches) stays bounded.
    DB_POOL_RECYCLE_SECONDS: int = 1800
    MIGRATION_WORKERS: int = 4
    MIGRATION_LOCK_TIMEOUT_MS: int = 5000
    MIGRATION_STATEMENT_TIMEOUT_MS: int = 60000
    RATELIMIT_SIGNUP: str = "20 per hour"
    RATELIMIT_API_KEY: str = "100 per second"
    RATELIMIT_ENABLED: bool = True
    # Where Daraja reaches this deployment (the STK callback URL is built from it).
    PUBLIC_BASE_URL: str = "http://127.0.0.1:8000"
    # Live mode talks to Safaricom; test mode to Lango's own Daraja sandbox.
    DARAJA_BASE_URL: str = "https://api.safaricom.co.ke"
    SANDBOX_BASE_URL: str = "http://127.0.0.1:8001"
    SANDBOX_CONSUMER_KEY: str = "lango_sandbox_key"
    SANDBOX_CONSUMER_SECRET: str = "lango_sandbox_secret"  # noqa: S105 (public test value)
    SANDBOX_SHORTCODE: str = "174379"
    SANDBOX_PASSKEY: str = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
    # Pending pushes are queried after this long, re-queried at most this often, and
    # expired when still without an outcome after PUSH_EXPIRY_SECONDS.
    RECONCILE_AFTER_SECONDS: int = 60
    RECONCILE_INTERVAL_SECONDS: int = 30
    PUSH_EXPIRY_SECONDS: int = 300
    # A push Lango expired after Daraja acknowledged it may still have been paid (the callback
    # lost, the query still "being processed" at the deadline): it is asked about again this
    # often, for this long after it expired, until M-Pesa gives a final answer.
    RECONCILE_EXPIRED_INTERVAL_SECONDS: int = 300
    RECONCILE_EXPIRED_FOR_SECONDS: int = 86400
    # How long an Idempotency-Key claim is held for its request: a retry takes over a claim
    # still without an answer after this long (its request died), so a crash blocks the key
    # this long at most. Longer than the work before a request's object is committed.
    IDEMPOTENCY_LEASE_SECONDS: int = 30
    # Comma-separated IPs/CIDRs allowed to post live-mode callbacks; empty = no check.
    MPESA_CALLBACK_ALLOWED_IPS: tuple[str, ...] = ()
    # Stripe is optional: without STRIPE_API_KEY, Lango bills with its own invoices only.
    STRIPE_API_KEY: str = ""
    STRIPE_API_BASE: str = ""  # e.g. a localstripe server in tests; empty = Stripe itself
    STRIPE_WEBHOOK_SECRET: str = ""
    # The sign-up page collects cards with Stripe.js (loaded from STRIPE_JS_URL: localstripe
    # serves a stand-in at <localstripe>/js.stripe.com/v3/) and this pk_… key; without a
    # publishable key, paid plans are paid by M-Pesa from the billing page.
    STRIPE_PUBLISHABLE_KEY: str = ""
    STRIPE_JS_URL: str = "https://js.stripe.com/v3/"
    # An unpaid invoice suspends its tenant this many days after it falls due.
    INVOICE_GRACE_DAYS: int = 7
    # The tenant whose STK pushes collect Lango's own invoices (dogfooding); empty = off.
    BILLING_TENANT_ID: str = ""
    # Webhook delivery. Private/loopback targets are refused unless explicitly allowed
    # (development and tests only).
    WEBHOOK_ALLOW_PRIVATE_TARGETS: bool = False
    WEBHOOK_TIMEOUT_SECONDS: int = 15
    # Seconds after the first attempt (conventions.md): 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    WEBHOOK_RETRY_SCHEDULE: tuple[int, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
    # Deliveries in flight to one endpoint at once: a slow endpoint can't take every worker.
    WEBHOOK_ENDPOINT_CONCURRENCY: int = 2
    # An endpoint failing without a success for this long is disabled.
    WEBHOOK_DISABLE_AFTER_SECONDS: int = 5 * 24 * 3600
    # The audit chain's HMAC keys, newest first (older ones still verify what they signed);
    # empty = one key derived from SECRET_KEY. Never stored in the database.
    AUDIT_KEYS: tuple[str, ...] = ()
    # Signed checkpoints of the audit chain's head, kept outside the database.
    AUDIT_CHECKPOINT_DIR: str = ".lango/audit-checkpoints"
    extra: dict = field(default_factory=dict)

    @property
    def is_development(self) -> bool:
        return self.LANGO_ENV in {"development", "test"}


_PARSERS = {
    "LANGO_PACKAGES": _package_list,
    "DATABASE_URL": _database_url,
    "REDIS_URL": _redis_url,
    "ENCRYPTION_KEYS": _encryption_keys,
    "TRUSTED_PROXIES": _proxy_count,
    "DB_POOL_SIZE": _positive_int,
    "DB_POOL_RECYCLE_SECONDS": _positive_int,
    "MIGRATION_WORKERS": _positive_int,
    "MIGRATION_LOCK_TIMEOUT_MS": _positive_int,
    "MIGRATION_STATEMENT_TIMEOUT_MS": _positive_int,
    "RATELIMIT_ENABLED": _flag,
    "PUBLIC_BASE_URL": _http_url,
    "DARAJA_BASE_URL": _http_url,
    "SANDBOX_BASE_URL": _http_url,
    "RECONCILE_AFTER_SECONDS": _positive_int,
    "RECONCILE_INTERVAL_SECONDS": _positive_int,
    "PUSH_EXPIRY_SECONDS": _positive_int,
    "RECONCILE_EXPIRED_INTERVAL_SECONDS": _positive_int,
    "RECONCILE_EXPIRED_FOR_SECONDS": _positive_int,
    "IDEMPOTENCY_LEASE_SECONDS": _positive_int,
    "MPESA_CALLBACK_ALLOWED_IPS": _networks,
    "INVOICE_GRACE_DAYS": _positive_int,
    "WEBHOOK_ALLOW_PRIVATE_TARGETS": _flag,
    "WEBHOOK_TIMEOUT_SECONDS": _positive_int,
    "WEBHOOK_RETRY_SCHEDULE": _schedule,
    "WEBHOOK_ENDPOINT_CONCURRENCY": _positive_int,
    "WEBHOOK_DISABLE_AFTER_SECONDS": _positive_int,
    "AUDIT_KEYS": _audit_keys,
}

_REQUIRED = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ENCRYPTION_KEYS")

# Optional features and the variables each needs once it is switched on: (feature switched on
# by, needs, what breaks without it).
_FEATURE_NEEDS = (
    (
        "STRIPE_API_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "Stripe billing is on (STRIPE_API_KEY) but its events could not be verified, so paid "
        "and failed card payments would never reach Lango",
    ),
    (
        "STRIPE_PUBLISHABLE_KEY",
        "STRIPE_API_KEY",
        "the sign-up page would collect cards for a Stripe account Lango cannot charge",
    ),
)

_HINT = (
    "Set it in the environment or in .env; `./dev.sh up` starts embedded PostgreSQL and "
    "Redis and sets these for you."
)
_HOW_TO_SET = {
    "ENCRYPTION_KEYS": "Generate a key with `python -c 'from cryptography.fernet import "
    "Fernet; print(Fernet.generate_key().decode())'` and set it in the environment or in .env."
}


def load_settings(overrides: dict | None = None) -> Settings:
    """Build Settings from the environment (plus `.env`) and `overrides`; raise ConfigError
    listing every missing or invalid variable."""
    # Only the working directory's .env: python-dotenv's default search starts from this
    # file's folder and climbs to the root, reading whatever .env it meets on the way.
    load_dotenv(Path.cwd() / ".env", override=False)
    source = {name: os.environ[name] for name in _field_names() if name in os.environ}
    source.update({k: v for k, v in (overrides or {}).items() if k in _field_names()})

    problems: list[str] = []
    values: dict = {}
    for name in _REQUIRED:
        if not str(source.get(name, "")).strip():
            problems.append(f"{name} is not set. {_HOW_TO_SET.get(name, _HINT)}")
    for switch, needed, consequence in _FEATURE_NEEDS:
        if str(source.get(switch, "")).strip() and not str(source.get(needed, "")).strip():
            problems.append(f"{needed} is not set: {consequence}.")
    for name, raw in source.items():
        parser = _PARSERS.get(name)
        if parser is None or not isinstance(raw, str):
            values[name] = raw
            continue
        if name in _REQUIRED and not raw.strip():
            continue  # reported once, as not set
        try:
            values[name] = parser(raw)
        except ValueError as exc:
            problems.append(f"{name} is invalid: {exc}")
    if str(source.get("SECRET_KEY", "")).strip() and len(source["SECRET_KEY"]) < 32:
        problems.append("SECRET_KEY is invalid: must be at least 32 characters")
    if problems:
        raise ConfigError("Lango configuration is invalid:\n  - " + "\n  - ".join(problems))

    values["extra"] = {k: v for k, v in (overrides or {}).items() if k not in _field_names()}
    return Settings(**values)


def _field_names() -> set[str]:
    return {f.name for f in fields(Settings) if f.name != "extra"}
