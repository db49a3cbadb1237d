"""Slots for long-lived responses (core/streams.py) and the status stream's cap per key."""

from __future__ import annotations

import time

from core import streams
from payments.api import STREAMS_PER_KEY
from tests.payments.test_reports import insert_push


def test_a_holder_gets_at_most_limit_slots_and_an_ended_one_frees_its_place(app):
    redis = app.extensions["lango.redis"]
    held = [streams.claim_stream_slot(redis, "key:a", 2) for _ in range(2)]
    assert all(held)
    assert streams.claim_stream_slot(redis, "key:a", 2) is None
    assert streams.claim_stream_slot(redis, "key:b", 2) is not None  # per holder
    held[0].release()
    assert streams.claim_stream_slot(redis, "key:a", 2) is not None


def test_slots_of_a_killed_process_lapse_unless_renewed(app, monkeypatch):
    redis = app.extensions["lango.redis"]
    now = time.time()
    monkeypatch.setattr(streams.time, "time", lambda: now)
    killed = streams.claim_stream_slot(redis, "key:a", 2)
    alive = streams.claim_stream_slot(redis, "key:a", 2)
    assert killed and alive
    later = now + streams.SLOT_TTL_SECONDS * 2 / 3
    monkeypatch.setattr(streams.time, "time", lambda: later)
    alive.renew()  # the running stream renews its slot; the killed one cannot
    monkeypatch.setattr(streams.time, "time", lambda: now + streams.SLOT_TTL_SECONDS + 1)
    assert streams.claim_stream_slot(redis, "key:a", 2) is not None
    assert streams.claim_stream_slot(redis, "key:a", 2) is None


def test_status_streams_over_the_cap_are_429_until_one_ends(app, api, tenant):
    push_id = insert_push(app, tenant.id, status="pending")
    path = f"/v1/stk-pushes/{push_id}/stream"
    opened = [api.get(path, buffered=False) for _ in range(STREAMS_PER_KEY)]
    assert [response.status_code for response in opened] == [200] * STREAMS_PER_KEY
    refused = api.get(path)
    assert refused.status_code == 429
    error = refused.get_json()["error"]
    assert (error["type"], error["code"]) == ("rate_limit_error", "too_many_streams")
    assert error["request_id"].startswith("req_")
    assert int(refused.headers["Retry-After"]) > 0  # kept on a refusal, unlike on a success
    # The client went away: the server closes the response. (Closed newest first: each open
    # stream holds a request context of the test client's.)
    opened.pop().close()
    opened.append(api.get(path, buffered=False))
    assert opened[-1].status_code == 200
    for response in reversed(opened):
        response.close()
