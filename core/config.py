"""Typed configuration read from the environment (twelve-factor), validated at start-up.

A `.env` file in the working directory is read in development; real environment variables
win over it. Every problem is reported at once, naming the variable, so an operator fixes a
bad deployment in one pass instead of one crash at a time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
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
    number = int(value)
    if number <= 0:
        raise ValueError("must be a positive integer")
    return number


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


def _encryption_keys(value: str) -> tuple[str, ...]:
    keys = tuple(key.strip() for key in value.split(",") if key.strip())
    for key in keys:
        Fernet(key)  # raises ValueError on a malformed key
    return keys


@dataclass(frozen=True)
class Settings:
    """What the platform needs to run. Field names are the environment variable names."""

    DATABASE_URL: str
    REDIS_URL: str
    SECRET_KEY: str
    # Fernet keys, newest first; older keys stay to decrypt until rotated out.
    ENCRYPTION_KEYS: tuple[str, ...] = ()
    LANGO_ENV: str = "production"
    LOG_LEVEL: str = "INFO"
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
    extra: dict = field(default_factory=dict)

    @property
    def is_development(self) -> bool:
        return self.LANGO_ENV in {"development", "test"}


_PARSERS = {
    "DATABASE_URL": _database_url,
    "REDIS_URL": _redis_url,
    "ENCRYPTION_KEYS": _encryption_keys,
    "DB_POOL_SIZE": _positive_int,
    "DB_POOL_RECYCLE_SECONDS": _positive_int,
    "MIGRATION_WORKERS": _positive_int,
    "MIGRATION_LOCK_TIMEOUT_MS": _positive_int,
    "MIGRATION_STATEMENT_TIMEOUT_MS": _positive_int,
    "RATELIMIT_ENABLED": _flag,
}

_REQUIRED = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY")

_HINT = (
    "Set it in the environment or in .env; `./dev.sh up` starts embedded PostgreSQL and "
    "Redis and sets these for you."
)


def load_settings(overrides: dict | None = None) -> Settings:
    """Build Settings from the environment (plus `.env`) and `overrides`; raise ConfigError
    listing every missing or invalid variable."""
    load_dotenv(override=False)
    source = {name: os.environ[name] for name in _field_names() if name in os.environ}
    source.update({k: v for k, v in (overrides or {}).items() if k in _field_names()})

    problems: list[str] = []
    values: dict = {}
    for name in _REQUIRED:
        if not str(source.get(name, "")).strip():
            problems.append(f"{name} is not set. {_HINT}")
    for name, raw in source.items():
        parser = _PARSERS.get(name)
        if parser is None or not isinstance(raw, str):
            values[name] = raw
            continue
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
