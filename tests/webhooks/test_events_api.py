"""The events API: the outbox of one mode, newest first, filtered by type and delivery
status; an event with its deliveries and every attempt; redelivery by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.events import Event
from core.extensions import db
from core.ids import new_id
from core.tenancy import tenant_scope
from core.unit_of_work import unit_of_work
from tests.conftest import ApiClient
from webhooks.models import DeliveryStatus, WebhookAttempt, WebhookDelivery, WebhookEndpoint

EVENTS = "/v1/events"
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


@pytest.fixture
def outbox(app, tenant):
    """Writes events, deliveries and attempts straight into the tenant's schema."""

    class Outbox:
        def endpoint(self, *, livemode: bool = False) -> str:
            with app.app_context(), tenant_scope(tenant.id):
                endpoint = WebhookEndpoint(
                    id=new_id("we"),
                    livemode=livemode,
                    url="https://hooks.example.com/lango",
                    enabled_events=["*"],
                    enabled=True,
                    secret_encrypted="unused",
                    created_at=NOW,
                    updated_at=NOW,
                )
                db.session.add(endpoint)
                db.session.commit()
                return endpoint.id

        def event(self, type_: str = "payment.succeeded", *, livemode: bool = False) -> str:
            with app.app_context(), tenant_scope(tenant.id):
                event = Event(
                    id=new_id("evt"),
                    type=type_,
                    livemode=livemode,
                    data={"object": {"id": "stk_1", "object": "stk_push", "amount": 100}},
                    created_at=NOW,
                )
                db.session.add(event)
                db.session.commit()
                return event.id

        def delivery(self, event_id: str, endpoint_id: str, status: DeliveryStatus, **kw) -> str:
            with app.app_context(), tenant_scope(tenant.id):
                delivery = WebhookDelivery(
                    id=new_id("whd"),
                    event_id=event_id,
                    endpoint_id=endpoint_id,
                    status=status,
                    created_at=NOW,
                    **{"attempts": 0, **kw},
                )
                db.session.add(delivery)
                db.session.commit()
                return delivery.id

        def attempt(self, delivery_id: str, at: datetime, **kw) -> None:
            with app.app_context(), tenant_scope(tenant.id):
                db.session.add(
                    WebhookAttempt(id=new_id("wha"), delivery_id=delivery_id, attempted_at=at, **kw)
                )
                db.session.commit()

    return Outbox()


def ids(response) -> list[str]:
    assert response.status_code == 200, response.get_json()
    return [item["id"] for item in response.get_json()["data"]]


def test_list_is_newest_first_with_cursor_pagination(api, outbox):
    first, second, third = (outbox.event() for _ in range(3))

    page = api.get(f"{EVENTS}?limit=2").get_json()
    rest = api.get(f"{EVENTS}?limit=2&starting_after={second}")
    newer = api.get(f"{EVENTS}?ending_before={first}&limit=1")

    assert [e["id"] for e in page["data"]] == [third, second]
    assert page["has_more"] is True and page["object"] == "list"
    assert ids(rest) == [first]
    assert ids(newer) == [second]
    assert page["data"][0] == {
        "id": third,
        "object": "event",
        "type": "payment.succeeded",
        "created": "2026-11-22T10:00:00Z",
        "livemode": False,
        "data": {"object": {"id": "stk_1", "object": "stk_push", "amount": 100}},
    }


def test_list_filters_by_type(api, outbox):
    succeeded = outbox.event("payment.succeeded")
    outbox.event("payment.failed")

    assert ids(api.get(f"{EVENTS}?type=payment.succeeded")) == [succeeded]
    assert api.get(f"{EVENTS}?type=payment.won").status_code == 400


def test_list_filters_by_delivery_status(api, outbox):
    endpoint, other = outbox.endpoint(), outbox.endpoint()
    delivered = outbox.event()
    mixed = outbox.event()
    undelivered = outbox.event()
    outbox.delivery(delivered, endpoint, DeliveryStatus.DELIVERED)
    outbox.delivery(mixed, endpoint, DeliveryStatus.FAILED)
    outbox.delivery(mixed, other, DeliveryStatus.DELIVERED)
    outbox.delivery(undelivered, endpoint, DeliveryStatus.PENDING)

    assert ids(api.get(f"{EVENTS}?delivery_status=delivered")) == [mixed, delivered]
    assert ids(api.get(f"{EVENTS}?delivery_status=failed")) == [mixed]
    assert ids(api.get(f"{EVENTS}?delivery_status=pending")) == [undelivered]
    assert api.get(f"{EVENTS}?delivery_status=lost").status_code == 400


def test_get_shows_deliveries_with_every_attempt(api, outbox):
    endpoint = outbox.endpoint()
    event = outbox.event()
    delivery = outbox.delivery(
        event,
        endpoint,
        DeliveryStatus.DELIVERED,
        attempts=2,
        next_attempt_at=None,
        delivered_at=NOW + timedelta(seconds=6),
    )
    outbox.attempt(
        delivery,
        NOW + timedelta(seconds=6),
        status_code=200,
        duration_ms=12,
        response_excerpt="ok",
    )
    outbox.attempt(
        delivery,
        NOW,
        status_code=None,
        duration_ms=15000,
        response_excerpt=None,
        error="timeout",
    )

    response = api.get(f"{EVENTS}/{event}")

    assert response.status_code == 200
    body = response.get_json()
    assert (body["id"], body["object"], body["type"]) == (event, "event", "payment.succeeded")
    assert body["deliveries"] == [
        {
            "id": delivery,
            "endpoint_id": endpoint,
            "status": "delivered",
            "attempts": 2,
            "next_attempt_at": None,
            "delivered_at": "2026-11-22T10:00:06Z",
            "attempts_log": [
                {
                    "attempted_at": "2026-11-22T10:00:00Z",
                    "status_code": None,
                    "duration_ms": 15000,
                    "response_excerpt": None,
                    "error": "timeout",
                },
                {
                    "attempted_at": "2026-11-22T10:00:06Z",
                    "status_code": 200,
                    "duration_ms": 12,
                    "response_excerpt": "ok",
                    "error": None,
                },
            ],
        }
    ]


def test_an_event_without_deliveries_has_an_empty_list(api, outbox):
    event = outbox.event()

    assert api.get(f"{EVENTS}/{event}").get_json()["deliveries"] == []


def test_test_key_never_sees_live_events(app, client, api, tenant, outbox):
    from tenants.service import create_api_key

    live_event = outbox.event(livemode=True)
    test_event = outbox.event()
    with app.app_context():
        with unit_of_work():
            live = ApiClient(client, create_api_key(tenant.id, livemode=True, name="l").secret)
        db.session.remove()

    assert ids(api.get(EVENTS)) == [test_event]
    assert ids(live.get(EVENTS)) == [live_event]
    assert api.get(f"{EVENTS}/{live_event}").status_code == 404
    assert api.post(f"{EVENTS}/{live_event}/redeliver", json={}).status_code == 404


def test_other_tenants_events_are_not_found(client, tenant_factory, outbox):
    event = outbox.event()
    other = ApiClient(client, tenant_factory("Other Ltd").secret)

    response = other.get(f"{EVENTS}/{event}")

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "resource_missing"
    assert ids(other.get(EVENTS)) == []


def test_redeliver_resets_every_delivery_of_the_event(app, api, tenant, outbox):
    endpoint, other = outbox.endpoint(), outbox.endpoint()
    event = outbox.event()
    failed = outbox.delivery(event, endpoint, DeliveryStatus.FAILED, attempts=8)
    outbox.attempt(failed, NOW, status_code=500, duration_ms=20, response_excerpt="boom")
    delivered = outbox.delivery(
        event, other, DeliveryStatus.DELIVERED, attempts=1, delivered_at=NOW
    )

    response = api.post(f"{EVENTS}/{event}/redeliver", json={})

    assert response.status_code == 202
    body = response.get_json()
    assert body["object"] == "list"
    assert sorted(d["id"] for d in body["data"]) == sorted([failed, delivered])
    for item in body["data"]:
        assert (item["status"], item["attempts"], item["delivered_at"]) == ("pending", 0, None)
        assert item["next_attempt_at"] is not None
    kept = next(d for d in body["data"] if d["id"] == failed)["attempts_log"]
    assert [a["status_code"] for a in kept] == [500]
    detail = api.get(f"{EVENTS}/{event}").get_json()
    assert {d["status"] for d in detail["deliveries"]} == {"pending"}


def test_redeliver_to_one_endpoint_leaves_the_others(api, outbox):
    endpoint, other = outbox.endpoint(), outbox.endpoint()
    event = outbox.event()
    failed = outbox.delivery(event, endpoint, DeliveryStatus.FAILED, attempts=8)
    outbox.delivery(event, other, DeliveryStatus.DELIVERED, attempts=1, delivered_at=NOW)

    response = api.post(f"{EVENTS}/{event}/redeliver", json={"endpoint_id": endpoint})

    assert response.status_code == 202
    assert [(d["id"], d["status"]) for d in response.get_json()["data"]] == [(failed, "pending")]
    statuses = {
        d["endpoint_id"]: d["status"] for d in api.get(f"{EVENTS}/{event}").get_json()["deliveries"]
    }
    assert statuses == {endpoint: "pending", other: "delivered"}


def test_redeliver_refuses_unknown_events_and_endpoints_of_another_mode(api, outbox):
    live_endpoint = outbox.endpoint(livemode=True)
    event = outbox.event()

    unknown_event = api.post(f"{EVENTS}/evt_missing/redeliver", json={})
    other_mode = api.post(f"{EVENTS}/{event}/redeliver", json={"endpoint_id": live_endpoint})

    assert unknown_event.status_code == 404
    assert other_mode.status_code == 404
    assert other_mode.get_json()["error"]["param"] == "endpoint_id"


def test_redeliver_replays_with_the_same_idempotency_key(api, outbox):
    endpoint = outbox.endpoint()
    event = outbox.event()
    outbox.delivery(event, endpoint, DeliveryStatus.FAILED, attempts=8)
    headers = {"Idempotency-Key": "redeliver-1"}

    first = api.post(f"{EVENTS}/{event}/redeliver", json={}, headers=headers)
    again = api.post(f"{EVENTS}/{event}/redeliver", json={}, headers=headers)

    assert first.status_code == again.status_code == 202
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()


def test_events_need_a_key(client):
    assert client.get(EVENTS).status_code == 401
