"""Start-up configuration: every problem named at once, URLs normalised to one driver."""

import dataclasses
import os

import pytest
from cryptography.fernet import Fernet

from core.config import ConfigError, Settings, load_settings

SETTING_NAMES = [f.name for f in dataclasses.fields(Settings) if f.name != "extra"]
VALID_SECRET = "s" * 32
VALID_ENCRYPTION_KEY = Fernet.generate_key().decode()


@pytest.fixture
def bare_env(monkeypatch, tmp_path):
    """No Lango variable in the environment and a working directory without a .env."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    # A .env a test wrote was loaded into os.environ; monkeypatch then restores the originals.
    for name in SETTING_NAMES:
        os.environ.pop(name, None)


def _problems(**env) -> str:
    with pytest.raises(ConfigError) as raised:
        load_settings(env)
    return str(raised.value)


def test_every_missing_required_variable_is_named_in_one_error(bare_env):
    message = _problems()

    for name in ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ENCRYPTION_KEYS"):
        assert f"{name} is not set" in message


def test_blank_required_variable_is_reported_once_as_not_set(bare_env):
    message = _problems(DATABASE_URL=" ", REDIS_URL="redis://h:6379/0", SECRET_KEY=VALID_SECRET)

    assert message.count("DATABASE_URL") == 1
    assert "DATABASE_URL is not set" in message


def test_every_invalid_variable_is_named_in_one_error(bare_env):
    short_secret = "too-short-secret"
    bad_key = "not-a-fernet-key"
    message = _problems(
        DATABASE_URL="mysql://root@db/lango",
        REDIS_URL="http://cache:6379",
        SECRET_KEY=short_secret,
        DB_POOL_SIZE="abc",
        ENCRYPTION_KEYS=f"{Fernet.generate_key().decode()},{bad_key}",
    )

    assert "DATABASE_URL is invalid: must be a postgresql:// URL" in message
    assert "REDIS_URL is invalid" in message
    assert "SECRET_KEY is invalid: must be at least 32 characters" in message
    assert "DB_POOL_SIZE is invalid: must be a positive integer" in message
    assert "ENCRYPTION_KEYS is invalid" in message
    # The message is logged at start-up: secrets are named, never echoed.
    assert short_secret not in message and bad_key not in message


def test_missing_and_invalid_variables_are_reported_together(bare_env):
    message = _problems(REDIS_URL="http://cache:6379", DB_POOL_SIZE="0")

    assert "DATABASE_URL is not set" in message
    assert "SECRET_KEY is not set" in message
    assert "REDIS_URL is invalid" in message
    assert "DB_POOL_SIZE is invalid: must be a positive integer" in message


@pytest.mark.parametrize(
    "given",
    [
        "postgres://lango:pw@db:5432/lango",
        "postgresql://lango:pw@db:5432/lango",
        "postgresql+psycopg://lango:pw@db:5432/lango",
    ],
)
def test_postgres_urls_are_normalised_to_psycopg3(bare_env, given):
    settings = load_settings(
        {
            "DATABASE_URL": given,
            "REDIS_URL": "redis://cache:6379/0",
            "SECRET_KEY": VALID_SECRET,
            "ENCRYPTION_KEYS": VALID_ENCRYPTION_KEY,
        }
    )

    assert settings.DATABASE_URL == "postgresql+psycopg://lango:pw@db:5432/lango"


def test_settings_come_from_the_environment_with_typed_values(bare_env, monkeypatch):
    key = Fernet.generate_key().decode()
    monkeypatch.setenv("DATABASE_URL", "postgres://lango@db/lango")
    monkeypatch.setenv("REDIS_URL", "rediss://cache:6380/1")
    monkeypatch.setenv("SECRET_KEY", VALID_SECRET)
    monkeypatch.setenv("DB_POOL_SIZE", "12")
    monkeypatch.setenv("RATELIMIT_ENABLED", "false")
    monkeypatch.setenv("ENCRYPTION_KEYS", f" {key} ,")

    settings = load_settings()

    assert settings.DATABASE_URL == "postgresql+psycopg://lango@db/lango"
    assert settings.REDIS_URL == "rediss://cache:6380/1"
    assert settings.DB_POOL_SIZE == 12
    assert settings.RATELIMIT_ENABLED is False
    assert settings.ENCRYPTION_KEYS == (key,)  # noqa: SIM300 (a field, not a constant)


def test_overrides_win_over_the_environment(bare_env, monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "mysql://ignored")
    monkeypatch.setenv("REDIS_URL", "redis://cache:6379/0")
    monkeypatch.setenv("SECRET_KEY", VALID_SECRET)
    monkeypatch.setenv("ENCRYPTION_KEYS", VALID_ENCRYPTION_KEY)

    settings = load_settings({"DATABASE_URL": "postgresql://lango@db/lango"})

    assert settings.DATABASE_URL == "postgresql+psycopg://lango@db/lango"


def test_dotenv_in_the_working_directory_is_read_and_the_environment_wins(bare_env, monkeypatch):
    (bare_env / ".env").write_text(
        "DATABASE_URL=postgres://lango@from-dotenv/lango\n"
        "REDIS_URL=redis://from-dotenv:6379/0\n"
        f"SECRET_KEY={VALID_SECRET}\n"
        f"ENCRYPTION_KEYS={VALID_ENCRYPTION_KEY}\n"
    )
    monkeypatch.setenv("REDIS_URL", "redis://from-env:6379/0")

    settings = load_settings()

    assert settings.DATABASE_URL == "postgresql+psycopg://lango@from-dotenv/lango"
    assert settings.REDIS_URL == "redis://from-env:6379/0"


def test_dotenv_outside_the_working_directory_is_not_read(bare_env, monkeypatch):
    project = bare_env / "project"
    (project / "elsewhere").mkdir(parents=True)
    (project / ".env").write_text(
        f"DATABASE_URL=postgres://lango@db/lango\nREDIS_URL=redis://h/0\nSECRET_KEY={VALID_SECRET}\n"
    )
    monkeypatch.chdir(project / "elsewhere")

    message = _problems()

    assert "DATABASE_URL is not set" in message


def _required(**extra) -> dict:
    return {
        "DATABASE_URL": "postgresql://lango@db/lango",
        "REDIS_URL": "redis://cache:6379/0",
        "SECRET_KEY": VALID_SECRET,
        "ENCRYPTION_KEYS": VALID_ENCRYPTION_KEY,
        **extra,
    }


@pytest.mark.parametrize("given", [None, "", " , "])
def test_start_up_refuses_a_platform_without_encryption_keys(bare_env, given):
    # Webhook signing secrets are stored encrypted: without a key, creating a webhook
    # endpoint would answer 500 long after start-up.
    env = _required()
    if given is None:
        del env["ENCRYPTION_KEYS"]
    else:
        env["ENCRYPTION_KEYS"] = given

    message = _problems(**env)

    assert "ENCRYPTION_KEYS" in message
    assert "Fernet.generate_key()" in message or "at least one Fernet key" in message


@pytest.mark.parametrize(
    ("switched_on", "needed"),
    [
        ({"STRIPE_API_KEY": "sk_test_x"}, "STRIPE_WEBHOOK_SECRET"),
        ({"STRIPE_PUBLISHABLE_KEY": "pk_test_x"}, "STRIPE_API_KEY"),
    ],
)
def test_an_optional_feature_switched_on_names_the_variable_it_still_needs(
    bare_env, switched_on, needed
):
    message = _problems(**_required(**switched_on))

    assert f"{needed} is not set" in message


def test_stripe_fully_configured_starts(bare_env):
    settings = load_settings(
        _required(
            STRIPE_API_KEY="sk_test_x", STRIPE_WEBHOOK_SECRET="whsec_x", STRIPE_PUBLISHABLE_KEY="pk"
        )
    )

    assert settings.STRIPE_WEBHOOK_SECRET == "whsec_x"
