"""Payments commands. `sandbox` is registered on Lango's CLI as `lango sandbox`."""

from __future__ import annotations

import os

import click

from core.logs import configure_logging
from payments.sandbox import create_sandbox_app
from payments.sandbox.config import SandboxConfigError, load_sandbox_config


@click.command("sandbox")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8001, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int, help="gunicorn processes.")
@click.option("--threads", default=8, show_default=True, type=int, help="Threads per process.")
def sandbox(host: str, port: int, workers: int, threads: int) -> None:
    """Serve the Daraja sandbox (gunicorn). Configured by SANDBOX_* environment variables:
    SANDBOX_REDIS_URL (required), SANDBOX_CONSUMER_KEY, SANDBOX_CONSUMER_SECRET,
    SANDBOX_SHORTCODE, SANDBOX_PASSKEY, SANDBOX_CALLBACK_DELAY_SECONDS,
    SANDBOX_LATE_CALLBACK_SECONDS, SANDBOX_EXPIRES_IN_AS_NUMBER, SANDBOX_SUBSCRIBER_LOCK."""
    from gunicorn.app.base import BaseApplication  # only this command serves with gunicorn

    try:
        # Checked once, here, so a bad setting is one clear message, not a crash per worker.
        load_sandbox_config()
    except SandboxConfigError as exc:
        raise click.ClickException(str(exc)) from None
    log_level = os.environ.get("LOG_LEVEL", "INFO")

    class SandboxServer(BaseApplication):
        def load_config(self) -> None:
            for name, value in {
                "bind": f"{host}:{port}",
                "workers": workers,
                "threads": threads,
                "worker_class": "gthread",
                "accesslog": "-",
                # Lango's log lines (short in development, JSON otherwise), redacted.
                "logger_class": "core.gunicorn_conf.RedactingLogger",
                "graceful_timeout": 10,
                "proc_name": "lango-sandbox",
                # gunicorn ≥ 25's control socket defaults to one path per user, which the
                # platform's own gunicorn (`lango up`) would also claim.
                "control_socket_disable": True,
            }.items():
                if name in self.cfg.settings:  # older gunicorn lacks some settings
                    self.cfg.set(name, value)

        def load(self):
            # Runs in each worker after the fork: its own Redis pool and callback thread,
            # started now so callbacks due from before a restart go out without a request.
            configure_logging(log_level)
            app = create_sandbox_app()
            app.extensions["lango.sandbox"].dispatcher.ensure_running()
            return app

    click.echo(f"Daraja sandbox on http://{host}:{port}")
    SandboxServer().run()
