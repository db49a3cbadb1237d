"""gunicorn settings for Lango's web process, used by `lango up`, the Docker image and
docker-compose alike:

    gunicorn -c python:core.gunicorn_conf wsgi:app

Command-line flags and GUNICORN_CMD_ARGS still override any of these. WEB_CONCURRENCY
(processes) and WEB_THREADS (threads per process) size the server.
"""

from __future__ import annotations

import logging
import os

from gunicorn.glogging import Logger

from core.logs import RedactingFormatter, human_readable, log_formatter, redact

bind = os.environ.get("BIND", "0.0.0.0:8000")
# Threads, not sync workers: a live status stream (Server-Sent Events) holds its thread for
# minutes, and with one thread per process three streams left /healthz unanswered. Each API
# key may hold only a few streams at once (payments.api.STREAMS_PER_KEY), so the other
# threads keep answering requests and health checks.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
threads = int(os.environ.get("WEB_THREADS", "16"))
graceful_timeout = 10
# gunicorn's default (4094) answers a longer request line with its own HTML 414 before the
# app sees it; this raises gunicorn's limit so the app answers a JSON 414 itself.
limit_request_line = 8190
# gunicorn ≥ 25 opens a control socket at one path per user; a second server on the same
# machine (the sandbox, another `lango up`) would fight over it.
control_socket_disable = True
# The app logs one line per request (core/__init__.py); gunicorn's access line would repeat
# it. `--access-logfile -` turns it back on, redacted like every other line.
accesslog = None
logger_class = "core.gunicorn_conf.RedactingLogger"


class RedactingLogger(Logger):
    """gunicorn's logger with Lango's format (JSON in production, a short line in
    development) and every secret in a URL redacted: in the access line (request line,
    path, query, referer, any header) and in error lines (which quote the request URI)."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        development = human_readable()
        for handler in self.error_log.handlers:
            handler.setFormatter(log_formatter(development=development))
        for handler in self.access_log.handlers:
            handler.setFormatter(RedactingFormatter(handler.formatter or logging.Formatter()))

    def atoms(self, resp, req, environ, request_time) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        return {
            name: redact(value) if isinstance(value, str) else value
            for name, value in atoms.items()
        }
