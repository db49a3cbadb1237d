"""Fan-out as an outbox subscriber: each event's deliveries are made once, by the dispatcher,
in its own transaction; pings go to their one endpoint."""

from __future__ import annotations

from core.events import Event
from core.extensions import db
from core.outbox import dispatch
from core.unit_of_work import tenant_unit_of_work
from tests.webhooks.test_delivery import deliveries, make_endpoint, record
from webhooks import service
from webhooks.models import WebhookEndpoint

UNUSED = "http://127.0.0.1:9/unused"


def test_an_event_fans_out_once_however_often_it_is_dispatched(app, app_context, tenant):
    first, _ = make_endpoint(tenant.id, UNUSED)
    second, _ = make_endpoint(tenant.id, UNUSED)
    (event_id,) = record(tenant.id)  # dispatched once already

    assert dispatch(tenant.id) == 0
    assert dispatch(tenant.id) == 0

    made = deliveries(tenant.id)
    assert sorted((d.event_id, d.endpoint_id) for d in made) == sorted(
        [(event_id, first), (event_id, second)]
    )


def test_only_endpoints_of_the_events_mode_that_want_its_type_get_it(app, app_context, tenant):
    wants_all, _ = make_endpoint(tenant.id, UNUSED)
    wants_it, _ = make_endpoint(tenant.id, UNUSED, events=["payment.succeeded"])
    make_endpoint(tenant.id, UNUSED, events=["payment.failed"])
    make_endpoint(tenant.id, UNUSED, livemode=True)

    record(tenant.id)

    assert sorted(d.endpoint_id for d in deliveries(tenant.id)) == sorted([wants_all, wants_it])


def test_a_ping_goes_to_its_endpoint_only(app, app_context, tenant):
    pinged, _ = make_endpoint(tenant.id, UNUSED)
    make_endpoint(tenant.id, UNUSED)
    with tenant_unit_of_work(tenant.id):
        ping_id = service.send_ping(db.session.get(WebhookEndpoint, pinged)).id
    dispatch(tenant.id)

    assert [(d.event_id, d.endpoint_id) for d in deliveries(tenant.id)] == [(ping_id, pinged)]
    with tenant_unit_of_work(tenant.id):
        assert db.session.get(Event, ping_id).type == "ping"
