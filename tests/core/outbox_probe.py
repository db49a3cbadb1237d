"""A package for the outbox tests, listed after the real ones in LANGO_PACKAGES: its
subscribers' work is a row in the tenant's `probe_effects` table (the tests create it), so
"handled exactly once" is counted in the database, where it commits with the handling.

- `probe.counter` records one row per event; it sleeps `event.data["sleep"]` seconds first,
  so a test can kill a dispatcher in the middle of a batch.
- `probe.flaky` records one row too, but raises while Redis holds `probe:broken`.
"""

from __future__ import annotations

import time

from flask import Flask, current_app
from sqlalchemy import text

from core.events import Event, subscribe
from core.extensions import db

BROKEN_FLAG = "probe:broken"
PROBE_TABLE = "CREATE TABLE IF NOT EXISTS probe_effects (event_id text, subscriber text)"


def init_app(app: Flask) -> None:
    subscribe(app, "probe.counter", count)
    subscribe(app, "probe.flaky", flaky)


def count(event: Event) -> None:
    time.sleep(float(event.data.get("sleep", 0)))
    _effect(event, "probe.counter")


def flaky(event: Event) -> None:
    _effect(event, "probe.flaky")
    if current_app.extensions["lango.redis"].exists(BROKEN_FLAG):
        raise RuntimeError("the probe is broken")


def _effect(event: Event, subscriber: str) -> None:
    db.session.execute(
        text("INSERT INTO probe_effects (event_id, subscriber) VALUES (:event, :subscriber)"),
        {"event": event.id, "subscriber": subscriber},
    )
