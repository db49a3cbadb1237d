"""Dashboard webhooks: endpoints through the forms (secret shown once, never again and never in
the session cookie; unsafe URLs as field errors), events with every delivery attempt, and
who may change what."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from core.extensions import db
from core.tenancy import tenant_scope
from core.unit_of_work import tenant_unit_of_work
from tests.frontend.conftest import HTML, member_page, post_form
from tests.webhooks.test_delivery import Receiver, webhook_settings
from webhooks import service
from webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from webhooks.signing import signing_secrets

ACCESS = [
    ("/dashboard/webhooks", member_page()),
    ("/dashboard/webhooks/events", member_page()),
    ("/dashboard/webhooks/events?type=ping&delivery_status=failed", member_page()),
]

URL = "https://hooks.example.com/lango"
SECRET = re.compile(r"whsec_[A-Za-z0-9+/=]+")


def test_access(check_access):
    check_access(ACCESS)


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def deliveries_run_here(monkeypatch) -> None:
    """Deliveries run synchronously in these tests (deliver_pending); nothing is put on the
    RQ queue, so no worker elsewhere in the run can make an attempt first."""
    monkeypatch.setattr(service, "enqueue", lambda items, delay=None: 0)


@pytest.fixture
def private_targets(app) -> Iterator[None]:
    """Loopback receivers allowed (as the webhooks tests do), for deliveries that resolve."""
    with webhook_settings(app, WEBHOOK_ALLOW_PRIVATE_TARGETS=True):
        yield


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    made = Receiver()
    yield made
    made.stop()


def create(client, url=URL, events=("*",), description="Orders", expect=200):
    response = post_form(
        client,
        "/dashboard/webhooks",
        {"url": url, "description": description, "enabled_events": list(events)},
    )
    assert response.status_code == expect, response.get_data(as_text=True)[:2000]
    return response


def created_endpoint(client, **kwargs) -> tuple[str, str]:
    """Create an endpoint through the form; returns (endpoint id, the secret shown)."""
    page = create(client, **kwargs).get_data(as_text=True)
    (secret,) = set(SECRET.findall(page))
    endpoint_id = re.search(r"/dashboard/webhooks/(we_[0-9a-z]+)", page).group(1)
    return endpoint_id, secret


def endpoint_row(app, tenant_id, endpoint_id) -> WebhookEndpoint | None:
    with app.app_context(), tenant_scope(tenant_id):
        row = db.session.get(WebhookEndpoint, endpoint_id)
        db.session.expunge_all()
        return row


def stored_secrets(app, tenant_id, endpoint_id) -> list[str]:
    with app.app_context(), tenant_scope(tenant_id):
        row = db.session.get(WebhookEndpoint, endpoint_id)
        return signing_secrets(row, datetime.now(UTC))


def deliver_pending(app, tenant_id) -> list[str]:
    """Make the next attempt of every pending delivery now, synchronously (the job's work)."""
    with app.app_context():
        with tenant_scope(tenant_id):
            ids = db.session.scalars(
                select(WebhookDelivery.id).where(WebhookDelivery.status == DeliveryStatus.PENDING)
            ).all()
        with tenant_unit_of_work(tenant_id):
            return [service.deliver(tenant_id, delivery_id) for delivery_id in ids]


def session_cookie(client) -> str:
    cookie = client.get_cookie("session")
    return cookie.value if cookie else ""


def page(client, path, status=200) -> str:
    response = client.get(path, headers=HTML)
    assert response.status_code == status, response.get_data(as_text=True)[:2000]
    return response.get_data(as_text=True)


# --- endpoints -------------------------------------------------------------------------------


def test_creating_an_endpoint_shows_its_secret_once(app, sign_in):
    owner = sign_in("owner")
    client = owner.client

    response = create(client, events=["payment.succeeded", "payment.failed"])

    shown = response.get_data(as_text=True)
    assert response.headers["Cache-Control"] == "no-store"
    (secret,) = set(SECRET.findall(shown))
    endpoint_id = re.search(r"/dashboard/webhooks/(we_[0-9a-z]+)", shown).group(1)
    assert "data-copy" in shown and "will not be shown again" in shown
    # It is the real signing secret …
    assert stored_secrets(app, owner.tenant.id, endpoint_id) == [secret]
    row = endpoint_row(app, owner.tenant.id, endpoint_id)
    assert (row.url, row.description, row.livemode) == (URL, "Orders", False)
    assert row.enabled_events == ["payment.succeeded", "payment.failed"]
    # … and no later page, nor the session cookie, ever shows it again.
    listing = page(client, "/dashboard/webhooks")
    detail = page(client, f"/dashboard/webhooks/{endpoint_id}")
    assert URL in listing and URL in detail
    for later in (listing, detail, page(client, "/dashboard/webhooks/events")):
        assert secret not in later and not SECRET.search(later)
    assert secret not in session_cookie(client)
    with client.session_transaction() as session:
        assert secret not in repr(dict(session))


def test_all_events_wins_over_single_types(app, sign_in):
    owner = sign_in("owner")
    endpoint_id, _ = created_endpoint(owner.client, events=["*", "ping"])
    assert endpoint_row(app, owner.tenant.id, endpoint_id).enabled_events == ["*"]


def test_an_unsafe_url_is_a_field_error(app, sign_in):
    owner = sign_in("owner")
    client = owner.client

    private = create(client, url="http://127.0.0.1/hooks", expect=400).get_data(as_text=True)
    assert re.search(
        r'class="error"[^>]*>Endpoint URL: [^<]*not a public internet address', private
    )
    assert 'value="http://127.0.0.1/hooks"' in private  # the form keeps what was typed
    not_a_url = create(client, url="hooks", expect=400).get_data(as_text=True)
    assert "Endpoint URL: Enter a full URL" in not_a_url
    no_events = create(client, events=[], expect=400).get_data(as_text=True)
    assert "Choose at least one event type." in no_events

    post_form(client, "/dashboard/mode", {"livemode": "on"})
    live = create(client, url="http://hooks.example.com/lango", expect=400)
    assert "Endpoint URL: Live mode endpoints must use https://." in live.get_data(as_text=True)
    with app.app_context(), tenant_scope(owner.tenant.id):
        assert db.session.scalars(select(WebhookEndpoint)).all() == []


def test_the_page_states_the_delivery_rules_the_settings_enforce(app, sign_in):
    client = sign_in("owner").client

    page = client.get("/dashboard/webhooks").get_data(as_text=True)
    # The defaults: 7 retries spanning 99,305 s, disabled after 5 days, private refused.
    assert "retried 7 times with backoff, over about 28 hours" in page
    assert "fail for 5 days without a success is disabled" in page
    assert "Private and loopback addresses are refused." in page
    assert "three days" not in page

    with webhook_settings(
        app,
        WEBHOOK_RETRY_SCHEDULE=(60, 600),
        WEBHOOK_DISABLE_AFTER_SECONDS=2 * 86400,
        WEBHOOK_ALLOW_PRIVATE_TARGETS=True,
    ):
        page = client.get("/dashboard/webhooks").get_data(as_text=True)
    assert "retried 2 times with backoff, over 11 minutes" in page
    assert "fail for 2 days without a success is disabled" in page
    assert "Private and loopback addresses are allowed on this server" in page
    assert "are refused" not in page
    # The landing page promises no retry period of its own (it said "for days").
    assert "retried with backoff," in client.get("/").get_data(as_text=True)


def test_an_endpoint_disabled_for_failing_says_for_how_long_the_settings_say(app, sign_in):
    owner = sign_in("owner")
    endpoint_id, _ = created_endpoint(owner.client)
    with app.app_context(), tenant_scope(owner.tenant.id):
        endpoint = db.session.get(WebhookEndpoint, endpoint_id)
        endpoint.enabled, endpoint.disabled_reason = False, "failing"
        db.session.commit()

    with webhook_settings(app, WEBHOOK_DISABLE_AFTER_SECONDS=3 * 3600):
        detail = owner.client.get(f"/dashboard/webhooks/{endpoint_id}").get_data(as_text=True)
        listing = owner.client.get("/dashboard/webhooks").get_data(as_text=True)
    for page in (detail, listing):
        assert "deliveries failed for 3 hours without a success" in page


def test_the_plans_endpoint_limit_is_a_flash(sign_in):
    client = sign_in("owner").client
    created_endpoint(client)
    created_endpoint(client, url="https://hooks.example.com/two")

    refused = create(client, url="https://hooks.example.com/three", expect=403)

    assert "Your plan allows 2 webhook endpoints" in refused.get_data(as_text=True)


def test_editing_an_endpoint(app, sign_in):
    owner = sign_in("developer")
    client = owner.client
    endpoint_id, _ = created_endpoint(client)
    form = page(client, f"/dashboard/webhooks/{endpoint_id}")
    assert f'value="{URL}"' in form and 'value="Orders"' in form

    response = post_form(
        client,
        f"/dashboard/webhooks/{endpoint_id}",
        {"url": "https://hooks.example.com/v2", "description": "", "enabled_events": ["ping"]},
    )

    assert response.status_code == 302
    assert response.headers["Location"] == f"/dashboard/webhooks/{endpoint_id}"
    row = endpoint_row(app, owner.tenant.id, endpoint_id)
    assert (row.url, row.description, row.enabled_events) == (
        "https://hooks.example.com/v2",
        None,
        ["ping"],
    )
    assert "Endpoint saved." in page(client, f"/dashboard/webhooks/{endpoint_id}")
    unsafe = post_form(
        client,
        f"/dashboard/webhooks/{endpoint_id}",
        {"url": "http://10.0.0.8/hooks", "enabled_events": ["*"]},
    )
    assert unsafe.status_code == 400
    assert "not a public internet address" in unsafe.get_data(as_text=True)
    assert endpoint_row(app, owner.tenant.id, endpoint_id).url == "https://hooks.example.com/v2"


def test_disabling_and_enabling(app, sign_in):
    owner = sign_in("owner")
    client = owner.client
    endpoint_id, _ = created_endpoint(client)
    path = f"/dashboard/webhooks/{endpoint_id}"
    assert 'data-confirm="Disable this endpoint?' in page(client, path)

    post_form(client, f"{path}/enabled", {"enabled": "false"})
    disabled = page(client, path)
    row = endpoint_row(app, owner.tenant.id, endpoint_id)
    assert (row.enabled, row.disabled_reason) == (False, "manual")
    assert "Endpoint disabled" in disabled and "disabled by a member of your team" in disabled

    post_form(client, f"{path}/enabled", {"enabled": "true"})
    assert endpoint_row(app, owner.tenant.id, endpoint_id).enabled is True
    assert "Endpoint enabled" in page(client, path)


def test_rotating_the_secret_shows_the_new_one_once(app, sign_in):
    owner = sign_in("owner")
    client = owner.client
    endpoint_id, old = created_endpoint(client)

    response = post_form(client, f"/dashboard/webhooks/{endpoint_id}/rotate", {"grace": "3600"})

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    (new,) = set(SECRET.findall(response.get_data(as_text=True)))
    assert new != old
    assert "keeps signing alongside it until" in response.get_data(as_text=True)
    assert stored_secrets(app, owner.tenant.id, endpoint_id) == [new, old]
    later = page(client, f"/dashboard/webhooks/{endpoint_id}")
    assert new not in later and old not in later and "still signing until" in later
    assert new not in session_cookie(client)

    post_form(client, f"/dashboard/webhooks/{endpoint_id}/rotate", {"grace": "0"})
    assert len(stored_secrets(app, owner.tenant.id, endpoint_id)) == 1
    refused = post_form(client, f"/dashboard/webhooks/{endpoint_id}/rotate", {"grace": "99"})
    assert refused.status_code == 302  # back to the page with a flash


def test_deleting_an_endpoint(app, sign_in):
    owner = sign_in("owner")
    client = owner.client
    endpoint_id, _ = created_endpoint(client)
    assert 'data-confirm="Delete this endpoint?' in page(
        client, f"/dashboard/webhooks/{endpoint_id}"
    )

    response = post_form(client, f"/dashboard/webhooks/{endpoint_id}/delete")

    assert response.headers["Location"] == "/dashboard/webhooks"
    assert endpoint_row(app, owner.tenant.id, endpoint_id) is None
    listing = page(client, "/dashboard/webhooks")
    assert "deleted." in listing and "No test endpoints yet" in listing
    page(client, f"/dashboard/webhooks/{endpoint_id}", status=404)


def test_endpoints_follow_the_mode(app, sign_in):
    owner = sign_in("owner")
    client = owner.client
    test_id, _ = created_endpoint(client)

    post_form(client, "/dashboard/mode", {"livemode": "on"})
    live_id, _ = created_endpoint(client, url="https://hooks.example.com/live")

    assert endpoint_row(app, owner.tenant.id, live_id).livemode is True
    live_list = page(client, "/dashboard/webhooks")
    assert "https://hooks.example.com/live" in live_list and URL not in live_list
    page(client, f"/dashboard/webhooks/{test_id}", status=404)


# --- events and deliveries -------------------------------------------------------------------


def test_a_test_ping_shows_every_attempt_and_can_be_redelivered(
    app, sign_in, private_targets, receiver
):
    owner = sign_in("owner")
    client = owner.client
    endpoint_id, _ = created_endpoint(client, url=receiver.url)

    sent = post_form(client, f"/dashboard/webhooks/{endpoint_id}/test")

    assert sent.status_code == 302
    event_path = sent.headers["Location"]
    event_id = event_path.rsplit("/", 1)[1]
    assert event_id.startswith("evt_")
    waiting = page(client, event_path)
    assert "Test ping sent." in waiting and "No attempt made yet." in waiting
    assert deliver_pending(app, owner.tenant.id) == ["delivered"]

    detail = page(client, event_path)
    assert receiver.url in detail
    assert 'data-status="delivered"' in detail
    assert re.search(r'<td class="num">200</td>\s*<td class="num">\d+ ms</td>', detail)
    assert '<code class="excerpt">ok</code>' in detail
    assert " EAT</td>" in detail
    assert "&#34;type&#34;: &#34;ping&#34;" in detail  # the payload, pretty-printed
    listed = page(client, "/dashboard/webhooks/events")
    assert event_id in listed and 'data-status="delivered"' in listed

    again = post_form(client, f"{event_path}/redeliver", {"endpoint_id": endpoint_id})
    assert again.headers["Location"] == event_path
    assert "Sending again to 1 endpoint(s)." in page(client, event_path)
    receiver.respond = lambda n: 500
    assert deliver_pending(app, owner.tenant.id) == ["retrying"]
    retried = page(client, event_path)
    assert len(re.findall(r'<td class="num">(?:200|500)</td>', retried)) == 2
    assert '<code class="excerpt">nope</code>' in retried
    assert 'data-status="pending"' in retried and "next attempt" in retried
    assert len(receiver.requests) == 2


def test_a_failed_connection_shows_its_error(app, sign_in, private_targets):
    owner = sign_in("owner")
    client = owner.client
    endpoint_id, _ = created_endpoint(client, url="http://127.0.0.1:9/nothing-listens")
    event_path = post_form(client, f"/dashboard/webhooks/{endpoint_id}/test").headers["Location"]

    deliver_pending(app, owner.tenant.id)

    detail = page(client, event_path)
    assert "connection error" in detail
    assert '<td class="num">—</td>' in detail


def test_events_filter_by_type_and_delivery_status(app, sign_in, private_targets, receiver):
    owner = sign_in("owner")
    client = owner.client
    assert "No test events yet" in page(client, "/dashboard/webhooks/events")
    endpoint_id, _ = created_endpoint(client, url=receiver.url)
    event_id = (
        post_form(client, f"/dashboard/webhooks/{endpoint_id}/test")
        .headers["Location"]
        .rsplit("/", 1)[1]
    )
    deliver_pending(app, owner.tenant.id)

    assert event_id in page(client, "/dashboard/webhooks/events?type=ping")
    assert event_id in page(client, "/dashboard/webhooks/events?delivery_status=delivered")
    none = page(client, "/dashboard/webhooks/events?delivery_status=failed")
    assert event_id not in none and "No events match" in none
    assert event_id not in page(client, "/dashboard/webhooks/events?type=payment.failed")
    page(client, "/dashboard/webhooks/events?type=payment.won", status=400)
    # Events follow the mode too.
    post_form(client, "/dashboard/mode", {"livemode": "on"})
    assert event_id not in page(client, "/dashboard/webhooks/events")
    page(client, f"/dashboard/webhooks/events/{event_id}", status=404)


def test_events_paginate(app, sign_in):
    from core.events import record_event

    owner = sign_in("owner")
    with app.app_context(), tenant_scope(owner.tenant.id):
        ids = [
            record_event("payment.failed", {"object": {"n": n}}, livemode=False).id
            for n in range(27)
        ]
        db.session.commit()

    first = page(owner.client, "/dashboard/webhooks/events")
    assert ids[-1] in first and ids[1] not in first and "Older →" in first
    older = page(owner.client, f"/dashboard/webhooks/events?starting_after={ids[2]}")
    assert ids[1] in older and ids[0] in older and ids[-1] not in older


# --- who may do what -------------------------------------------------------------------------


def test_viewers_read_but_cannot_change(app, sign_in):
    owner = sign_in("owner")
    viewer = sign_in("viewer", tenant=owner.tenant)
    endpoint_id, _ = created_endpoint(owner.client)
    event_path = post_form(owner.client, f"/dashboard/webhooks/{endpoint_id}/test").headers[
        "Location"
    ]

    listing = page(viewer.client, "/dashboard/webhooks")
    detail = page(viewer.client, f"/dashboard/webhooks/{endpoint_id}")
    event = page(viewer.client, event_path)
    assert URL in listing and "Add an endpoint" not in listing
    assert "Rotate secret" not in detail and "Delete endpoint" not in detail
    assert "Redeliver" not in event
    path = f"/dashboard/webhooks/{endpoint_id}"
    for target, data in [
        ("/dashboard/webhooks", {"url": URL, "enabled_events": ["*"]}),
        (path, {"url": URL, "enabled_events": ["*"]}),
        (f"{path}/enabled", {"enabled": "false"}),
        (f"{path}/rotate", {"grace": "0"}),
        (f"{path}/test", {}),
        (f"{path}/delete", {}),
        (f"{event_path}/redeliver", {}),
    ]:
        assert post_form(viewer.client, target, data).status_code == 403, target
    assert endpoint_row(app, owner.tenant.id, endpoint_id).enabled is True


def test_another_tenants_endpoints_and_events_are_not_found(app, sign_in):
    theirs = sign_in("owner")
    endpoint_id, _ = created_endpoint(theirs.client)
    event_path = post_form(theirs.client, f"/dashboard/webhooks/{endpoint_id}/test").headers[
        "Location"
    ]
    mine = sign_in("owner")
    path = f"/dashboard/webhooks/{endpoint_id}"

    assert URL not in page(mine.client, "/dashboard/webhooks")
    page(mine.client, path, status=404)
    page(mine.client, event_path, status=404)
    for target, data in [
        (path, {"url": "https://evil.example.com/x", "enabled_events": ["*"]}),
        (f"{path}/enabled", {"enabled": "false"}),
        (f"{path}/rotate", {"grace": "0"}),
        (f"{path}/test", {}),
        (f"{path}/delete", {}),
        (f"{event_path}/redeliver", {}),
    ]:
        assert post_form(mine.client, target, data).status_code == 404, target
    row = endpoint_row(app, theirs.tenant.id, endpoint_id)
    assert (row.url, row.enabled) == (URL, True)
    # Redelivering my own event to their endpoint is refused too.
    my_endpoint, _ = created_endpoint(mine.client, url="https://hooks.example.com/mine")
    my_event = post_form(mine.client, f"/dashboard/webhooks/{my_endpoint}/test").headers["Location"]
    refused = post_form(mine.client, f"{my_event}/redeliver", {"endpoint_id": endpoint_id})
    assert refused.status_code == 302
    assert "No such webhook endpoint." in page(mine.client, my_event)
