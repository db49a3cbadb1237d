"""The platform: application factory, configuration, tenancy, errors, API set-up and CLI."""

from __future__ import annotations

import logging
import secrets
import time
from importlib import import_module

from flask import Flask, g, request
from redis import Redis
from werkzeug.middleware.proxy_fix import ProxyFix

from core import outbox, unit_of_work
from core.api import NUL_MESSAGE, docs_assets, field_with_nul, validation_error
from core.auth import authenticate_if_needed
from core.config import Settings, load_settings
from core.errors import NotFound, register_error_handlers
from core.extensions import api, db, limiter, login_manager, migrate
from core.health import blp as health
from core.logs import configure_logging, redact
from core.migrations import PUBLIC_MIGRATIONS
from core.ratelimit import api_key_limit
from core.tenancy import clear_stale_binding, leave_tenant

logger = logging.getLogger("lango.requests")


def create_app(config: dict | Settings | None = None) -> Flask:
    """Build the web application. `config` overrides the environment (tests pass a dict)."""
    settings = config if isinstance(config, Settings) else load_settings(config)
    configure_logging(settings.LOG_LEVEL, settings.LANGO_ENV)

    app = Flask(__name__)
    if settings.TRUSTED_PROXIES:
        # The client address that callback allow-lists, sign-in throttling and the audit
        # trail see is the one the trusted proxies report, never a header a client forged.
        app.wsgi_app = ProxyFix(
            app.wsgi_app, x_for=settings.TRUSTED_PROXIES, x_proto=settings.TRUSTED_PROXIES
        )
    app.config.update(_flask_config(settings))
    app.extensions["lango.settings"] = settings
    # Timeouts everywhere: a server that drops packets must give errors (and /readyz 503),
    # not hung workers.
    app.extensions["lango.redis"] = Redis.from_url(
        settings.REDIS_URL, socket_connect_timeout=5, socket_timeout=10
    )

    # Request hooks first: authentication must run before Flask-Limiter's before_request
    # hook, so that limits are counted per tenant (core.ratelimit).
    _register_request_hooks(app)
    _init_extensions(app, settings)
    unit_of_work.init_app(app)
    outbox.init_app(app)
    app.register_blueprint(docs_assets)
    api.register_blueprint(health)
    # The composition: each package registers what it brings, lowest layer first, so a
    # package's init_app may use what those below it registered. Core names no package.
    for name in settings.LANGO_PACKAGES:
        import_module(name).init_app(app)
    register_error_handlers(app)
    return app


def _flask_config(settings: Settings) -> dict:
    return {
        "SECRET_KEY": settings.SECRET_KEY,
        "SQLALCHEMY_DATABASE_URI": settings.DATABASE_URL,
        "SQLALCHEMY_ENGINE_OPTIONS": {
            "pool_size": settings.DB_POOL_SIZE,
            "pool_pre_ping": True,
            "pool_recycle": settings.DB_POOL_RECYCLE_SECONDS,
            # The fail-closed default: no tenant schema is ever on the connection's path.
            "connect_args": {"options": "-c search_path=public", "connect_timeout": 5},
        },
        "MAX_CONTENT_LENGTH": 1024 * 1024,
        # Session cookies (staff sign-in): never sent over plain HTTP in production, never
        # readable by scripts, not sent on cross-site subrequests or POSTs.
        "SESSION_COOKIE_SECURE": not settings.is_development,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "API_TITLE": "Lango API",
        "API_VERSION": "v1",
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/",
        "OPENAPI_JSON_PATH": "openapi.json",
        "OPENAPI_SWAGGER_UI_PATH": "/docs",
        "OPENAPI_SWAGGER_UI_URL": "/docs/assets/",
        "API_SPEC_OPTIONS": {
            "info": {
                "description": "Collect money with M-Pesa STK push through one REST API. "
                "Authenticate with `Authorization: Bearer sk_test_…`."
            },
            "components": {
                "securitySchemes": {
                    "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "sk_…"},
                    # /v1/admin: a staff session cookie after password + TOTP (staff.api).
                    "staffSession": {"type": "apiKey", "in": "cookie", "name": "session"},
                }
            },
            "security": [{"bearerAuth": []}],
        },
        "RATELIMIT_ENABLED": settings.RATELIMIT_ENABLED,
        "RATELIMIT_STORAGE_URI": _limits_storage_uri(settings.REDIS_URL),
        "RATELIMIT_HEADERS_ENABLED": True,
        "RATELIMIT_STRATEGY": "moving-window",
        # A callable: each key gets its plan's limit (core.ratelimit.api_key_limit).
        "RATELIMIT_APPLICATION": api_key_limit,
    }


def _limits_storage_uri(redis_url: str) -> str:
    # The `limits` library names a Redis unix socket `redis+unix://`.
    if redis_url.startswith("unix://"):
        return "redis+unix://" + redis_url.removeprefix("unix://")
    return redis_url


def _init_extensions(app: Flask, settings: Settings) -> None:
    db.init_app(app)
    # Flask-Migrate drives the public tree (`lango alembic …` for revisions);
    # core.migrations drives the per-tenant tree.
    migrate.init_app(app, db, directory=str(PUBLIC_MIGRATIONS), command="alembic")
    login_manager.init_app(app)
    api.init_app(app)
    limiter.init_app(app)

    @app.after_request
    def remember_own_retry_after(response):
        # Runs before Flask-Limiter's header hook (see retry_after_only_when_asked).
        g.own_retry_after = response.headers.get("Retry-After")
        return response


def _register_request_hooks(app: Flask) -> None:
    @app.before_request
    def assign_request_id() -> None:
        g.request_id = "req_" + secrets.token_hex(12)
        g.request_started = time.perf_counter()
        if clear_stale_binding():
            # A binding left over from an earlier request on this thread would be a leak.
            logger.error("tenant binding found at request start; cleared")

    @app.before_request
    def refuse_nul_in_the_url() -> None:
        # PostgreSQL can neither store nor compare text holding NUL, and no id or filter
        # needs one: refused before any query runs. (Bodies are checked where they are
        # parsed: JSON in core.api.LangoParser, the pages' forms in frontend.auth.)
        if field_with_nul(request.view_args or {}) is not None:
            raise NotFound()
        name = field_with_nul(request.args)
        if name is not None:
            raise validation_error({name: [NUL_MESSAGE]})

    # The authentication a package provided (tenants: API keys), before Flask-Limiter counts.
    app.before_request(authenticate_if_needed)

    @app.after_request
    def retry_after_only_when_asked(response):
        # Flask-Limiter adds Retry-After to every response it counts (with X-RateLimit-*):
        # on a success it read as "retry in 1 s". Outside 429 and 503, only a Retry-After
        # the view set itself (remembered before Flask-Limiter's hook, `_init_extensions`)
        # is kept. This hook runs after Flask-Limiter's: after_request hooks run in reverse
        # order of registration, and these are registered before the extensions.
        own = g.pop("own_retry_after", None)
        if response.status_code not in (429, 503):
            if own is None:
                response.headers.pop("Retry-After", None)
            else:
                response.headers["Retry-After"] = own
        return response

    @app.after_request
    def expose_request_id(response):
        response.headers["Request-Id"] = g.get("request_id", "")
        return response

    @app.teardown_request
    def leave_tenant_scope(error=None) -> None:
        token = g.pop("tenant_token", None)
        if token is not None:
            leave_tenant(token)

    @app.after_request
    def log_request(response):
        # One line per request (gunicorn's own access line is off: core.gunicorn_conf). The
        # path is redacted: callback and invite URLs carry their secret token.
        path = redact(request.path)
        started = g.get("request_started")
        duration_ms = round((time.perf_counter() - started) * 1000) if started else None
        logger.info(
            "%s %s %s %sms",
            request.method,
            path,
            response.status_code,
            duration_ms,
            extra={
                "method": request.method,
                "path": path,
                "status": response.status_code,
                "duration_ms": duration_ms,
                "tenant_id": getattr(g.get("caller"), "tenant_id", None),
            },
        )
        return response
