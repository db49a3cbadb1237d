"""Lango's Daraja sandbox: a separate Flask app that answers like Safaricom's Daraja, so
Lango's test mode and any third-party Daraja client work against it unchanged.

    GET  /oauth/v1/generate?grant_type=client_credentials   (HTTP Basic)
    POST /mpesa/stkpush/v1/processrequest                   (Bearer)
    POST /mpesa/stkpushquery/v1/query                       (Bearer)
    GET  /sandbox/stk-pushes/<CheckoutRequestID>            (Bearer; debugging, not Daraja)

The phone number of a push picks its outcome (outcomes.py: the magic test numbers). All
state is in Redis under the `sandbox:` prefix, so any number of worker processes share it
and a restart loses nothing. Run it with `lango sandbox` (payments/cli.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask
from redis import Redis

from payments.sandbox.callbacks import CallbackDispatcher
from payments.sandbox.config import SandboxConfig, SandboxConfigError, load_sandbox_config
from payments.sandbox.routes import blp, register_error_handlers
from payments.sandbox.store import SandboxStore

__all__ = ["Sandbox", "SandboxConfig", "SandboxConfigError", "create_sandbox_app"]


@dataclass(frozen=True)
class Sandbox:
    """What a sandbox app holds, as `app.extensions["lango.sandbox"]`."""

    config: SandboxConfig
    store: SandboxStore
    dispatcher: CallbackDispatcher


def create_sandbox_app(config: dict | None = None) -> Flask:
    """Build the sandbox app. `config` overrides the environment variable of the same name,
    per variable (tests pass a dict). Raises SandboxConfigError when invalid.

    Callback delivery starts with the first request in each process; call
    `app.extensions["lango.sandbox"].dispatcher.ensure_running()` to start it sooner and
    `.stop()` to end it."""
    settings = load_sandbox_config(config)
    store = SandboxStore(Redis.from_url(settings.SANDBOX_REDIS_URL), settings.SANDBOX_KEY_PREFIX)

    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024  # Daraja bodies are a few hundred bytes
    # Keys in Daraja's order, as in its samples; humans compare the two side by side.
    app.json.sort_keys = False
    app.extensions["lango.sandbox"] = Sandbox(settings, store, CallbackDispatcher(store))
    app.register_blueprint(blp)
    register_error_handlers(app)
    return app
