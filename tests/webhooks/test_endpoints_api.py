"""The webhook endpoints API: per mode and per tenant, secrets shown once and kept encrypted,
URLs checked, the plan's limit, secret rotation with a grace period, test pings."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text

from core.events import Event
from core.extensions import db
from core.tenancy import tenant_scope
from core.unit_of_work import unit_of_work
from tests.conftest import ApiClient
from webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from webhooks.signing import signing_secrets

ENDPOINTS = "/v1/webhook-endpoints"
URL = "https://hooks.example.com/lango"


def patch(api: ApiClient, path: str, **kwargs):
    return api.client.patch(path, headers={"Authorization": f"Bearer {api.secret}"}, **kwargs)


def live_api(app, client, tenant) -> ApiClient:
    from tenants.service import create_api_key

    with app.app_context():
        with unit_of_work():
            secret = create_api_key(tenant.id, livemode=True, name="live").secret
        db.session.remove()
    return ApiClient(client, secret)


def create(api: ApiClient, **body):
    response = api.post(ENDPOINTS, json={"url": URL, **body})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def raw_endpoint(app, tenant_id: str, endpoint_id: str) -> dict:
    with app.app_context(), tenant_scope(tenant_id):
        row = db.session.execute(
            text("SELECT * FROM webhook_endpoints WHERE id = :id"), {"id": endpoint_id}
        ).mappings()
        return dict(row.one())


@pytest.fixture
def private_targets_allowed(app, monkeypatch):
    settings = app.extensions["lango.settings"]
    monkeypatch.setitem(
        app.extensions,
        "lango.settings",
        dataclasses.replace(settings, WEBHOOK_ALLOW_PRIVATE_TARGETS=True),
    )


def test_create_returns_the_endpoint_with_its_secret_and_defaults(api):
    response = api.post(ENDPOINTS, json={"url": URL, "description": "orders"})

    assert response.status_code == 201
    body = response.get_json()
    assert body["id"].startswith("we_")
    assert body["secret"].startswith("whsec_")
    assert body | {"id": None, "secret": None, "created": None, "updated": None} == {
        "id": None,
        "object": "webhook_endpoint",
        "url": URL,
        "enabled_events": ["*"],
        "description": "orders",
        "enabled": True,
        "disabled_reason": None,
        "livemode": False,
        "secret": None,
        "created": None,
        "updated": None,
    }
    assert body["created"].endswith("Z")


def test_secret_is_shown_once_and_stored_encrypted(app, api, tenant):
    created = create(api)

    fetched = api.get(f"{ENDPOINTS}/{created['id']}").get_json()
    listed = api.get(ENDPOINTS).get_json()["data"]
    row = raw_endpoint(app, tenant.id, created["id"])

    assert "secret" not in fetched
    assert all("secret" not in item for item in listed)
    assert created["secret"] not in str(row)
    assert created["secret"].removeprefix("whsec_") not in str(row)
    with app.app_context(), tenant_scope(tenant.id):
        endpoint = db.session.get(WebhookEndpoint, created["id"])
        assert signing_secrets(endpoint, datetime.now(UTC)) == [created["secret"]]


def test_unknown_event_types_and_bad_urls_are_field_errors(api):
    response = api.post(ENDPOINTS, json={"url": "not a url", "enabled_events": ["payment.won"]})

    assert response.status_code == 400
    error = response.get_json()["error"]
    assert set(error["errors"]) == {"url", "enabled_events.0"}


def test_enabled_events_naming_all_collapse_to_star(api):
    body = create(api, enabled_events=["payment.failed", "*"])
    only = create(api, enabled_events=["payment.failed", "payment.failed", "ping"])

    assert body["enabled_events"] == ["*"]
    assert only["enabled_events"] == ["payment.failed", "ping"]


def test_list_is_newest_first_with_cursor_pagination(api, tenant):
    first = create(api, description="first")
    second = create(api, description="second")

    page = api.get(f"{ENDPOINTS}?limit=1").get_json()
    rest = api.get(f"{ENDPOINTS}?limit=1&starting_after={page['data'][0]['id']}").get_json()

    assert page["object"] == "list" and page["has_more"] is True
    assert [item["id"] for item in page["data"]] == [second["id"]]
    assert [item["id"] for item in rest["data"]] == [first["id"]]
    assert rest["has_more"] is False


def test_patch_changes_fields_and_disabling_records_manual(api):
    created = create(api)

    response = patch(
        api,
        f"{ENDPOINTS}/{created['id']}",
        json={
            "url": "https://hooks.example.com/v2",
            "enabled_events": ["payment.succeeded"],
            "description": None,
            "enabled": False,
        },
    )

    assert response.status_code == 200
    body = response.get_json()
    assert body["url"] == "https://hooks.example.com/v2"
    assert body["enabled_events"] == ["payment.succeeded"]
    assert body["description"] is None
    assert (body["enabled"], body["disabled_reason"]) == (False, "manual")
    assert "secret" not in body
    assert api.get(f"{ENDPOINTS}/{created['id']}").get_json() == body


def test_reenabling_clears_the_failure_run_and_redelivers_what_was_missed(app, api, tenant):
    created = create(api)
    failing_since = datetime.now(UTC) - timedelta(days=5)
    with app.app_context(), tenant_scope(tenant.id):
        endpoint = db.session.get(WebhookEndpoint, created["id"])
        endpoint.enabled = False
        endpoint.disabled_reason = "failing"
        endpoint.failing_since = failing_since
        db.session.add(
            Event(
                id="evt_missed",
                type="payment.succeeded",
                livemode=False,
                data={"object": {}},
                created_at=failing_since + timedelta(hours=1),
            )
        )
        db.session.add(
            WebhookDelivery(
                id="whd_missed",
                event_id="evt_missed",
                endpoint_id=created["id"],
                status=DeliveryStatus.FAILED,
                attempts=8,
                next_attempt_at=None,
                created_at=failing_since + timedelta(hours=1),
            )
        )
        db.session.commit()

    unchanged = patch(api, f"{ENDPOINTS}/{created['id']}", json={"description": "x"})
    response = patch(api, f"{ENDPOINTS}/{created['id']}", json={"enabled": True})

    assert unchanged.get_json()["disabled_reason"] == "failing"
    assert response.status_code == 200
    assert (response.get_json()["enabled"], response.get_json()["disabled_reason"]) == (True, None)
    assert raw_endpoint(app, tenant.id, created["id"])["failing_since"] is None
    with app.app_context(), tenant_scope(tenant.id):
        delivery = db.session.get(WebhookDelivery, "whd_missed")
        assert (delivery.status, delivery.attempts) == (DeliveryStatus.PENDING, 0)


def test_delete_answers_a_deleted_object_and_fails_pending_deliveries(app, api, tenant):
    created = create(api)
    with app.app_context(), tenant_scope(tenant.id):
        db.session.add(
            WebhookDelivery(
                id="whd_pending",
                event_id="evt_x",
                endpoint_id=created["id"],
                status=DeliveryStatus.PENDING,
                attempts=1,
                next_attempt_at=datetime.now(UTC),
                created_at=datetime.now(UTC),
            )
        )
        db.session.commit()

    response = api.delete(f"{ENDPOINTS}/{created['id']}")

    assert response.status_code == 200
    assert response.get_json() == {
        "id": created["id"],
        "object": "webhook_endpoint",
        "deleted": True,
    }
    assert api.get(f"{ENDPOINTS}/{created['id']}").status_code == 404
    assert api.delete(f"{ENDPOINTS}/{created['id']}").status_code == 404
    with app.app_context(), tenant_scope(tenant.id):
        delivery = db.session.get(WebhookDelivery, "whd_pending")
        assert (delivery.status, delivery.next_attempt_at) == (DeliveryStatus.FAILED, None)


def test_test_key_never_sees_live_endpoints(app, client, api, tenant):
    live = live_api(app, client, tenant)
    live_endpoint = create(live)
    test_endpoint = create(api)

    assert live_endpoint["livemode"] is True and test_endpoint["livemode"] is False
    assert [e["id"] for e in api.get(ENDPOINTS).get_json()["data"]] == [test_endpoint["id"]]
    assert [e["id"] for e in live.get(ENDPOINTS).get_json()["data"]] == [live_endpoint["id"]]
    path = f"{ENDPOINTS}/{live_endpoint['id']}"
    assert api.get(path).status_code == 404
    assert patch(api, path, json={"enabled": False}).status_code == 404
    assert api.post(f"{path}/rotate-secret", json={}).status_code == 404
    assert api.delete(path).status_code == 404
    assert live.get(path).status_code == 200


def test_other_tenants_endpoints_are_not_found(client, api, tenant_factory):
    other = ApiClient(client, tenant_factory("Other Ltd").secret)
    theirs = create(other)

    response = api.get(f"{ENDPOINTS}/{theirs['id']}")

    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "resource_missing"
    assert api.delete(f"{ENDPOINTS}/{theirs['id']}").status_code == 404
    assert api.get(ENDPOINTS).get_json()["data"] == []


def test_live_endpoint_needs_https(app, client, tenant):
    live = live_api(app, client, tenant)

    response = live.post(ENDPOINTS, json={"url": "http://hooks.example.com/lango"})

    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "url"


def test_test_endpoint_may_use_http(api):
    assert create(api, url="http://hooks.example.com/lango")["url"].startswith("http://")


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://10.0.0.1/hook",
        "http://169.254.169.254/",
        "http://[::1]/",
    ],
)
def test_private_targets_are_refused_unless_allowed(api, url):
    response = api.post(ENDPOINTS, json={"url": url})

    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "url"


def test_private_targets_are_accepted_when_the_deployment_allows_them(api, private_targets_allowed):
    assert create(api, url="http://127.0.0.1:8080/hook")["url"] == "http://127.0.0.1:8080/hook"


def test_patch_checks_the_new_url_too(api):
    created = create(api)

    response = patch(api, f"{ENDPOINTS}/{created['id']}", json={"url": "http://10.1.2.3/"})

    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "url"
    assert api.get(f"{ENDPOINTS}/{created['id']}").get_json()["url"] == URL


def test_sandbox_plan_allows_two_endpoints(app, api, tenant):
    create(api)
    create(api)

    refused = api.post(ENDPOINTS, json={"url": URL})

    assert refused.status_code == 403
    error = refused.get_json()["error"]
    assert (error["code"], error["limit"]) == ("endpoint_limit_reached", 2)
    with app.app_context():
        db.session.execute(
            text("UPDATE public.subscriptions SET plan_code = 'starter' WHERE tenant_id = :t"),
            {"t": tenant.id},
        )
        db.session.commit()
    assert api.post(ENDPOINTS, json={"url": URL}).status_code == 201


def test_deleting_an_endpoint_frees_its_place_under_the_limit(api):
    create(api)
    second = create(api)
    api.delete(f"{ENDPOINTS}/{second['id']}")

    assert api.post(ENDPOINTS, json={"url": URL}).status_code == 201


def test_rotation_returns_a_new_secret_and_both_sign_during_the_grace_period(app, api, tenant):
    created = create(api)

    response = api.post(
        f"{ENDPOINTS}/{created['id']}/rotate-secret", json={"grace_period_seconds": 3600}
    )

    assert response.status_code == 200
    rotated = response.get_json()
    assert rotated["id"] == created["id"]
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != created["secret"]
    now = datetime.now(UTC)
    with app.app_context(), tenant_scope(tenant.id):
        endpoint = db.session.get(WebhookEndpoint, created["id"])
        assert signing_secrets(endpoint, now) == [rotated["secret"], created["secret"]]
        assert signing_secrets(endpoint, now + timedelta(seconds=3601)) == [rotated["secret"]]
    row = str(raw_endpoint(app, tenant.id, created["id"]))
    assert created["secret"] not in row and rotated["secret"] not in row


def test_rotation_defaults_to_a_day_of_grace_and_zero_ends_the_old_secret_now(app, api, tenant):
    created = create(api)
    path = f"{ENDPOINTS}/{created['id']}/rotate-secret"

    first = api.post(path, json={}).get_json()
    expires = raw_endpoint(app, tenant.id, created["id"])["previous_secret_expires_at"]
    second = api.post(path, json={"grace_period_seconds": 0}).get_json()

    assert timedelta(hours=23, minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=24)
    with app.app_context(), tenant_scope(tenant.id):
        endpoint = db.session.get(WebhookEndpoint, created["id"])
        assert signing_secrets(endpoint, datetime.now(UTC)) == [second["secret"]]
    assert first["secret"] != second["secret"]


@pytest.mark.parametrize("grace", [-1, 86401, "soon"])
def test_rotation_grace_is_bounded(api, grace):
    created = create(api)

    response = api.post(
        f"{ENDPOINTS}/{created['id']}/rotate-secret", json={"grace_period_seconds": grace}
    )

    assert response.status_code == 400
    assert response.get_json()["error"]["param"] == "grace_period_seconds"


def test_create_replays_with_the_same_idempotency_key(api):
    headers = {"Idempotency-Key": "endpoint-1"}

    first = api.post(ENDPOINTS, json={"url": URL}, headers=headers)
    again = api.post(ENDPOINTS, json={"url": URL}, headers=headers)

    assert first.status_code == again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.get_json() == first.get_json()
    assert len(api.get(ENDPOINTS).get_json()["data"]) == 1


def test_stored_idempotent_answers_never_hold_the_secret_in_plain_text(app, api, tenant):
    first = api.post(ENDPOINTS, json={"url": URL}, headers={"Idempotency-Key": "endpoint-2"})

    with app.app_context(), tenant_scope(tenant.id):
        stored = db.session.execute(
            text("SELECT response_body::text FROM idempotency_keys WHERE key = 'endpoint-2'")
        ).scalar()
    assert first.get_json()["secret"] not in stored


def test_test_sends_a_ping_event(app, api, tenant):
    created = create(api)

    response = api.post(f"{ENDPOINTS}/{created['id']}/test")

    assert response.status_code == 202
    event = response.get_json()
    assert (event["object"], event["type"], event["livemode"]) == ("event", "ping", False)
    assert event["id"].startswith("evt_")
    with app.app_context(), tenant_scope(tenant.id):
        deliveries = db.session.scalars(
            select(WebhookDelivery).where(WebhookDelivery.event_id == event["id"])
        ).all()
        assert [d.endpoint_id for d in deliveries] == [created["id"]]


def test_test_of_an_unknown_endpoint_is_not_found(api):
    assert api.post(f"{ENDPOINTS}/we_missing/test").status_code == 404


def test_every_route_needs_a_key(client):
    assert client.get(ENDPOINTS).status_code == 401
    assert client.post(ENDPOINTS, json={"url": URL}).status_code == 401
