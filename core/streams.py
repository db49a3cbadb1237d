"""Long-lived responses (Server-Sent Events) capped per holder (an API key, a member): how
many it may keep open at once, counted in Redis across every web process (core.slots).

A stream holds a web thread for minutes; without a cap one key could occupy every thread
and leave health checks unanswered. The stream renews its slot while it runs and frees it
when it ends; a slot whose process was killed lapses by itself after `SLOT_TTL_SECONDS`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from flask import Response, current_app, stream_with_context
from redis import Redis

from core.errors import RateLimited
from core.slots import Slot, claim_slot

SLOT_TTL_SECONDS = 60


def claim_stream_slot(redis: Redis, holder: str, limit: int) -> Slot | None:
    """A slot for one more open stream of `holder`, or None when it already has `limit`."""
    return claim_slot(redis, f"lango:streams:{holder}", limit, SLOT_TTL_SECONDS)


def capped_event_stream(holder: str, limit: int, events: Iterator[str]) -> Response:
    """A Server-Sent Events response of `events` that holds one of `holder`'s `limit` slots
    while it is open; RateLimited (429 `too_many_streams`) when they are all taken.

    `events` must yield at least every SLOT_TTL_SECONDS / 3 (a keep-alive comment will do):
    each yield renews the slot."""
    slot = claim_stream_slot(current_app.extensions["lango.redis"], holder, limit)
    if slot is None:
        raise RateLimited(
            f"At most {limit} live streams may be open at once; close one and retry.",
            code="too_many_streams",
            headers={"Retry-After": "5"},
        )

    def renewing() -> Iterator[str]:
        renewed = time.monotonic()
        for event in events:
            if time.monotonic() - renewed > SLOT_TTL_SECONDS / 3:
                renewed = time.monotonic()
                slot.renew()
            yield event

    response = Response(
        stream_with_context(renewing()),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    # Called by the server when the response ends, however it ends (the stream finished, the
    # client went away), even if the stream never started.
    response.call_on_close(slot.release)
    return response
