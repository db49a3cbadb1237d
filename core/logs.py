"""Logging: one line per event, JSON in production (one object per line, each carrying the
request id when there is a request, so one failing call can be followed through every line
it wrote) and a short human-readable line in development (LANGO_ENV=development).

Every line passes through `redact` on its way out, whoever wrote it (the request log, a
job, the error handler, a library's traceback, gunicorn's access and error logs): secrets
that travel in URLs — a callback's token, an invite's token, a secret query parameter, an
API key — never reach a log. The database keeps only hashes of those tokens; a log that
kept them would let its readers post callbacks for pending pushes.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from datetime import datetime
from typing import TextIO

from flask import g, has_app_context
from pythonjsonlogger.json import JsonFormatter

REDACTED = "[redacted]"

# Routes whose next path segment is a secret: Daraja's callback URL (/callbacks/mpesa/stk/
# <token>, bound to one push) and a dashboard invite link (/invite/<token>).
SECRET_PATH_PREFIXES = ("/callbacks/mpesa/stk/", "/invite/")
_SECRET_SEGMENT = re.compile(
    "(" + "|".join(re.escape(prefix) for prefix in SECRET_PATH_PREFIXES) + r")[^/?#&\s\"'<>\\]+"
)
# A query parameter whose name says it holds a secret (token=, api_key=, password=, sig= …).
_SECRET_QUERY_VALUE = re.compile(
    r"([?&;](?:[^=&#\s\"'<>]*(?:token|secret|passw|signature|key|otp)[^=&#\s\"'<>]*"
    r"|sig|code|auth)=)[^&#\s\"'<>\\]+",
    re.IGNORECASE,
)
# API keys themselves, wherever they appear (a header echoed into an error, a pasted URL).
_API_KEY = re.compile(r"\b(sk_(?:test|live)_)[A-Za-z0-9]+")


def redact(text: str) -> str:
    """`text` (a path, a URL, a request line or a whole log line) with every secret it
    carries replaced by `[redacted]`."""
    text = _SECRET_SEGMENT.sub(rf"\1{REDACTED}", text)
    text = _SECRET_QUERY_VALUE.sub(rf"\1{REDACTED}", text)
    return _API_KEY.sub(rf"\1{REDACTED}", text)


def human_readable(env: str | None = None) -> bool:
    """Short lines for a person at a terminal (LANGO_ENV=development, what `lango up` sets);
    JSON lines everywhere else, test runs included (tests read the fields)."""
    env = os.environ.get("LANGO_ENV", "production") if env is None else env
    return env == "development"


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = getattr(g, "request_id", None) if has_app_context() else None
        return True


class RedactingFormatter(logging.Formatter):
    """Wraps another formatter and redacts what it wrote (message, fields and traceback)."""

    def __init__(self, inner: logging.Formatter):
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        return redact(self.inner.format(record))


# LogRecord's own attributes: everything else on a record came from `extra=`.
_RECORD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "taskName",
}
# Shown in the human line's text already, so not repeated as key=value.
_IN_THE_LINE = frozenset({"method", "path", "status", "duration_ms", "job"})


class HumanFormatter(logging.Formatter):
    """`14:02:11 INFO  POST /v1/stk-pushes 202 41ms tenant_id=ten_…` — for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        extras = " ".join(
            f"{name}={value}"
            for name, value in record.__dict__.items()
            if name not in _RECORD_ATTRIBUTES
            and name not in _IN_THE_LINE
            and value is not None
            and not name.startswith("_")
        )
        line = f"{when} {record.levelname:<5} {record.getMessage()}"
        if not record.name.startswith("lango."):
            line += f" [{record.name}]"
        if extras:
            line += " " + extras
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def log_formatter(*, development: bool) -> logging.Formatter:
    """The formatter every Lango process writes its lines with (redacting)."""
    if development:
        return RedactingFormatter(HumanFormatter())
    return RedactingFormatter(
        JsonFormatter(
            "{asctime}{levelname}{name}{message}{request_id}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )
    )


def log_handler(stream: TextIO, *, development: bool) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(log_formatter(development=development))
    return handler


def configure_logging(level: str, env: str | None = None) -> None:
    """Route every logger to stderr in the format LANGO_ENV (or `env`) asks for."""
    root = logging.getLogger()
    root.handlers[:] = [log_handler(sys.stderr, development=human_readable(env))]
    root.setLevel(level.upper())
    # Alembic narrates every plugin and step at INFO; its warnings still come through.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # RQ writes three or four INFO lines per job (taken, result kept, done), ~90 a minute on
    # an idle platform from the periodic jobs alone; core.jobs writes one line per job itself.
    for name in ("rq.worker", "rq.job", "rq.queue", "rq.scheduler", "rq.cron"):
        logging.getLogger(name).setLevel(logging.WARNING)
